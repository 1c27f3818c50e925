//! Streaming calls (`register_stream`, `request_stream`): each kind, order, backpressure,
//! cancellation both ways, errors, deadlines; local (in memory, never encoded) and over QUIC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fixture::{FAIL_CODE, FAIL_MESSAGE, PATH};
use common::{WAIT, serving_fixture, wait_for};
use futures::StreamExt as _;
use runar::{
    AbstractService, CallKind, Code, LifecycleContext, Node, NodeConfig, RequestOptions, Streaming,
    stream_once,
};

fn path(action: &str) -> String {
    format!("{PATH}/{action}")
}

/// Every message of `stream`, failing the test on an error or after [`WAIT`].
async fn collect<T: runar::Payload>(stream: Streaming<T>) -> Vec<T> {
    tokio::time::timeout(WAIT, stream.map(|m| m.unwrap()).collect::<Vec<_>>())
        .await
        .expect("timed out collecting a stream")
}

/// The error that ends `stream`, after any messages.
async fn error_of<T: runar::Payload>(mut stream: Streaming<T>) -> runar::Error {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("timed out waiting for the stream's error")
}

async fn local() -> (Node, common::fixture::Probe) {
    serving_fixture(NodeConfig::new("local", "test")).await
}

#[tokio::test]
async fn each_kind_works_locally() {
    let (node, _probe) = local().await;
    let count: Streaming<u64> = node
        .request_stream(path("stream/count"), stream_once(5u64))
        .await
        .unwrap();
    assert_eq!(collect(count).await, [0, 1, 2, 3, 4]);

    let mut sum: Streaming<u64> = node
        .request_stream(path("stream/sum"), futures::stream::iter(1..=100u64))
        .await
        .unwrap();
    assert_eq!(sum.message().await.unwrap(), Some(5050));
    assert_eq!(sum.message().await.unwrap(), None);

    let echo: Streaming<u64> = node
        .request_stream(path("stream/echo"), futures::stream::iter(0..1000u64))
        .await
        .unwrap();
    assert_eq!(collect(echo).await, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bidi_call_is_not_lock_step() {
    // The call returns before any reply, and a reply comes before the requests end.
    let (node, _probe) = local().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) });
    let mut echo: Streaming<u64> = node
        .request_stream(path("stream/echo"), requests)
        .await
        .unwrap();
    for n in 0..10 {
        tx.send(n).await.unwrap();
        assert_eq!(echo.message().await.unwrap(), Some(n));
    }
    drop(tx);
    assert_eq!(echo.message().await.unwrap(), None);
}

#[tokio::test]
async fn a_server_error_mid_stream_reaches_the_caller_locally() {
    let (node, _probe) = local().await;
    let mut failing: Streaming<u64> = node
        .request_stream(path("stream/fail"), stream_once(3u64))
        .await
        .unwrap();
    for n in 0..3 {
        assert_eq!(failing.message().await.unwrap(), Some(n));
    }
    let e = failing.message().await.unwrap_err();
    assert_eq!((e.code(), e.message()), (FAIL_CODE, FAIL_MESSAGE));
    assert_eq!(
        failing.message().await.unwrap(),
        None,
        "an error ends the stream"
    );
}

#[tokio::test]
async fn a_stalled_consumer_stops_a_local_producer() {
    let buffer = 8;
    let (node, probe) =
        serving_fixture(NodeConfig::new("local", "test").with_stream_buffer(buffer)).await;
    let mut endless: Streaming<u64> = node
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    // The producer fills the buffer, then waits for room.
    wait_for("the buffer to fill", || {
        probe.pulled.load(Ordering::SeqCst) >= buffer
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pulled = probe.pulled.load(Ordering::SeqCst);
    assert!(
        pulled <= buffer + 2,
        "pulled {pulled} with a buffer of {buffer}"
    );
    println!("local: {pulled} messages pulled with a buffer of {buffer} and a stalled consumer");
}

#[tokio::test]
async fn dropping_a_local_stream_drops_the_handlers_stream() {
    let (node, mut probe) = local().await;
    let mut endless: Streaming<u64> = node
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    drop(endless);
    assert_eq!(common::next_dropped(&mut probe).await, "stream dropped");
}

#[tokio::test]
async fn streaming_calls_have_no_default_deadline_but_honour_a_timeout() {
    let config = NodeConfig::new("local", "test").with_request_timeout(Duration::from_millis(50));
    let (node, _probe) = serving_fixture(config).await;
    // Longer than the node's request timeout: a stream is not bound by it.
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) });
    let mut echo: Streaming<u64> = node
        .request_stream(path("stream/echo"), requests)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    tx.send(1).await.unwrap();
    assert_eq!(echo.message().await.unwrap(), Some(1));

    // A caller's timeout bounds the whole call.
    let options = RequestOptions::timeout(Duration::from_millis(100));
    let endless = node
        .request_stream_with::<(), u64>(path("stream/endless"), stream_once(()), options)
        .await
        .unwrap();
    let e = error_of(endless).await;
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
}

#[tokio::test]
async fn unary_and_streaming_calls_are_told_apart() {
    let (node, _probe) = local().await;
    assert_eq!(
        node.call_kind(path("stream/count")),
        Some(CallKind::ServerStreaming)
    );
    assert_eq!(
        node.call_kind(path("stream/sum")),
        Some(CallKind::ClientStreaming)
    );
    assert_eq!(node.call_kind(path("stream/echo")), Some(CallKind::Bidi));
    assert_eq!(node.call_kind(path("double")), Some(CallKind::Unary));
    assert_eq!(node.call_kind(path("no-such")), None);
    let e = node
        .request::<u64, u64>(path("stream/count"), 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = node
        .request_stream::<u64, u64>(path("double"), stream_once(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = node
        .request_stream::<u64, u64>(path("no-such"), stream_once(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

static ENCODES: AtomicUsize = AtomicUsize::new(0);

/// A message that counts its encodes (and decodes, as encodes too: any is a failure here).
#[derive(Clone, Debug, Default, PartialEq)]
struct Counted {
    n: i64,
}

impl prost::Message for Counted {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        if self.n != 0 {
            prost::encoding::int64::encode(1, &self.n, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        if tag == 1 {
            prost::encoding::int64::merge(wire_type, &mut self.n, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }
    fn encoded_len(&self) -> usize {
        if self.n != 0 {
            prost::encoding::int64::encoded_len(1, &self.n)
        } else {
            0
        }
    }
    fn clear(&mut self) {
        self.n = 0;
    }
}

struct Doubler;

impl AbstractService for Doubler {
    fn name(&self) -> &str {
        "Doubler"
    }
    fn path(&self) -> &str {
        "doubler"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_stream(
            "double",
            CallKind::Bidi,
            |items: Streaming<Counted>, _| async move {
                Ok(items.map(|c| c.map(|c| Counted { n: c.n * 2 })))
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_local_stream_performs_zero_encodes() {
    let node = Node::new(NodeConfig::new("local", "test")).await.unwrap();
    node.add_service(Doubler).await.unwrap();
    node.start().await.unwrap();
    let before = ENCODES.load(Ordering::SeqCst);
    let requests = futures::stream::iter((1..=1000).map(|n| Counted { n }));
    let doubled: Streaming<Counted> = node
        .request_stream("doubler/double", requests)
        .await
        .unwrap();
    let got = collect(doubled).await;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().zip(1..).all(|(c, n)| c.n == 2 * n));
    assert_eq!(
        ENCODES.load(Ordering::SeqCst) - before,
        0,
        "no encode or decode locally"
    );
}

#[tokio::test]
async fn order_is_kept_over_100_000_local_messages() {
    let (node, _probe) = local().await;
    let echo: Streaming<u64> = node
        .request_stream(path("stream/echo"), futures::stream::iter(0..100_000u64))
        .await
        .unwrap();
    let mut expected = 0u64;
    let mut echo = echo;
    while let Some(n) = tokio::time::timeout(WAIT, echo.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(n, expected);
        expected += 1;
    }
    assert_eq!(expected, 100_000);
}

#[test]
fn streaming_is_send_and_unpin() {
    fn check<T: Send + Unpin>() {}
    check::<Streaming<u64>>();
}
