//! Streaming calls (`register_stream`, `request_stream`): each kind, order, backpressure,
//! cancellation both ways, errors, deadlines; local (in memory, never encoded) and over QUIC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::counted::{Counted, DECODES, ENCODES};
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

/// `count` once it has held still for 300 ms (a stalled producer), failing the test if it
/// still moves after [`WAIT`].
async fn until_still<N: PartialEq>(count: impl Fn() -> N) -> N {
    let mut last = count();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count();
        if now == last {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never stopped"
        );
        last = now;
    }
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
    let counts = || ENCODES.load(Ordering::SeqCst) + DECODES.load(Ordering::SeqCst);
    let before = counts();
    let requests = futures::stream::iter((1..=1000).map(|n| Counted { n }));
    let doubled: Streaming<Counted> = node
        .request_stream("doubler/double", requests)
        .await
        .unwrap();
    let got = collect(doubled).await;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().zip(1..).all(|(c, n)| c.n == 2 * n));
    assert_eq!(counts() - before, 0, "no encode or decode locally");
}

/// A streaming action whose handler makes a downstream request to the fixture's `hang`.
struct Relay;

impl AbstractService for Relay {
    fn name(&self) -> &str {
        "Relay"
    }
    fn path(&self) -> &str {
        "relay"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_stream(
            "hang",
            CallKind::ServerStreaming,
            |_: Streaming<()>, ctx| async move {
                let outcome = ctx.request::<(), ()>(path("hang"), ()).await;
                let code = outcome.err().map(|e| e.code().as_str().to_owned());
                Ok(stream_once(Ok(code.unwrap_or_default())))
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_stream_handler_without_deadline_gives_its_requests_the_node_timeout() {
    let config = NodeConfig::new("local", "test").with_request_timeout(Duration::from_millis(100));
    let (node, _probe) = serving_fixture(config).await;
    node.add_service(Relay).await.unwrap();
    let relay: Streaming<String> = node
        .request_stream("relay/hang", stream_once(()))
        .await
        .unwrap();
    assert_eq!(collect(relay).await, [Code::DeadlineExceeded.as_str()]);
}

#[test]
fn streaming_is_send_and_unpin() {
    fn check<T: Send + Unpin>() {}
    check::<Streaming<u64>>();
}

// ---- over QUIC ------------------------------------------------------------------------------

/// Server `a` (a fixture) and client `b`, `b` routing the fixture's stream actions to `a`.
async fn remote_pair() -> (Node, Node, common::fixture::Probe) {
    let (a, b, probe) = common::pair().await;
    common::wait_for_action(&b, &path("stream/endless")).await;
    (a, b, probe)
}

// ---- the same checks, local and over QUIC ----------------------------------------------------

/// Each kind through `caller`: a server stream, a client stream, a bidirectional one, and one
/// with no requests at all (the handler sees the end at once).
async fn each_kind(caller: &Node) {
    let count: Streaming<u64> = caller
        .request_stream(path("stream/count"), stream_once(5u64))
        .await
        .unwrap();
    assert_eq!(collect(count).await, [0, 1, 2, 3, 4]);

    let mut sum: Streaming<u64> = caller
        .request_stream(path("stream/sum"), futures::stream::iter(1..=100u64))
        .await
        .unwrap();
    assert_eq!(sum.message().await.unwrap(), Some(5050));
    assert_eq!(sum.message().await.unwrap(), None);

    let echo: Streaming<u64> = caller
        .request_stream(path("stream/echo"), futures::stream::iter(0..1000u64))
        .await
        .unwrap();
    assert_eq!(collect(echo).await, (0..1000).collect::<Vec<_>>());

    let empty: Streaming<u64> = caller
        .request_stream(path("stream/echo"), futures::stream::empty::<u64>())
        .await
        .unwrap();
    assert!(collect(empty).await.is_empty());
}

/// The call returns before any reply, and a reply comes before the requests end.
async fn bidi_is_not_lock_step(caller: &Node) {
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) });
    let mut echo: Streaming<u64> = caller
        .request_stream(path("stream/echo"), requests)
        .await
        .unwrap();
    for n in 0..10 {
        tx.send(n).await.unwrap();
        let got = tokio::time::timeout(WAIT, echo.message()).await.unwrap();
        assert_eq!(got.unwrap(), Some(n));
    }
    drop(tx);
    assert_eq!(echo.message().await.unwrap(), None);
}

/// 100,000 messages each way through a bidirectional echo, in order.
async fn order_is_kept(caller: &Node) {
    let started = std::time::Instant::now();
    let mut echo: Streaming<u64> = caller
        .request_stream(path("stream/echo"), futures::stream::iter(0..100_000u64))
        .await
        .unwrap();
    let mut expected = 0u64;
    while let Some(n) = tokio::time::timeout(WAIT, echo.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(n, expected);
        expected += 1;
    }
    assert_eq!(expected, 100_000);
    println!(
        "bidi echo: 100,000 messages each way in {:?}",
        started.elapsed()
    );
}

/// A server error mid-stream reaches the caller with its code and message and ends the
/// stream; refusals travel the same way (a unary action called as a stream).
async fn server_error_mid_stream(caller: &Node) {
    let mut failing: Streaming<u64> = caller
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
    let e = match caller
        .request_stream::<u64, u64>(path("double"), stream_once(1))
        .await
    {
        Ok(stream) => error_of(stream).await,
        Err(e) => e,
    };
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

/// A reply stream that panics ends the caller's stream with `Internal` after the messages before
/// it; a client-streaming handler that returns two replies sends only the first.
async fn a_panic_mid_stream_and_one_reply(caller: &Node) {
    let mut panicking: Streaming<u64> = caller
        .request_stream(path("stream/panic"), stream_once(3u64))
        .await
        .unwrap();
    for n in 0..3 {
        assert_eq!(panicking.message().await.unwrap(), Some(n));
    }
    let e = error_of(panicking).await;
    assert_eq!(e.code(), Code::Internal, "{e}");
    assert!(e.message().contains("panicked"), "{e}");
    let replies: Streaming<u64> = caller
        .request_stream(path("stream/twice"), futures::stream::iter(1..=4u64))
        .await
        .unwrap();
    assert_eq!(
        collect(replies).await,
        [4],
        "client streaming sends one reply"
    );
}

#[tokio::test]
async fn a_panic_mid_stream_reaches_the_caller_locally() {
    a_panic_mid_stream_and_one_reply(&local().await.0).await;
}

#[tokio::test]
async fn a_panic_mid_stream_reaches_the_remote_caller() {
    a_panic_mid_stream_and_one_reply(&remote_pair().await.1).await;
}

#[tokio::test]
async fn each_kind_works_locally() {
    each_kind(&local().await.0).await;
}

#[tokio::test]
async fn each_kind_works_over_quic() {
    each_kind(&remote_pair().await.1).await;
}

#[tokio::test]
async fn a_bidi_call_is_not_lock_step() {
    bidi_is_not_lock_step(&local().await.0).await;
}

#[tokio::test]
async fn a_remote_bidi_call_is_not_lock_step() {
    bidi_is_not_lock_step(&remote_pair().await.1).await;
}

#[tokio::test]
async fn order_is_kept_over_100_000_local_messages() {
    order_is_kept(&local().await.0).await;
}

#[tokio::test]
async fn order_is_kept_over_100_000_remote_messages() {
    order_is_kept(&remote_pair().await.1).await;
}

#[tokio::test]
async fn a_server_error_mid_stream_reaches_the_caller_locally() {
    server_error_mid_stream(&local().await.0).await;
}

#[tokio::test]
async fn a_server_error_mid_stream_reaches_the_remote_caller() {
    server_error_mid_stream(&remote_pair().await.1).await;
}

#[tokio::test]
async fn dropping_a_remote_stream_drops_the_servers_stream() {
    let (_a, b, mut probe) = remote_pair().await;
    let mut endless: Streaming<u64> = b
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    let dropped_at = std::time::Instant::now();
    drop(endless);
    assert_eq!(common::next_dropped(&mut probe).await, "stream dropped");
    println!(
        "the server dropped its stream {:?} after the client",
        dropped_at.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_remote_consumer_stops_the_producer() {
    let (_a, b, probe) = remote_pair().await;
    let mut endless: Streaming<u64> = b
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    // Stalled: the producer fills the QUIC windows, then waits.
    let last = until_still(|| probe.pulled.load(Ordering::SeqCst)).await;
    // The producer is polled only with a credit in hand: the client grants its stream buffer
    // (1024 messages by default) and more only as its consumer takes them, in halves.
    let buffer = b.config().stream_buffer;
    assert!(
        last <= buffer + buffer / 2,
        "{last} messages pulled, buffer {buffer}"
    );
    println!("remote: {last} messages pulled from a producer whose consumer stalled");
    // It resumes where it stopped, in order.
    for n in 1..1000 {
        assert_eq!(endless.message().await.unwrap(), Some(n));
    }
}

/// A consumer that takes messages as fast as they come grows its credit from `stream_buffer`
/// towards `stream_buffer_max` (its producer gets further ahead than the first credit allows),
/// and stalled afterwards it still holds no more than the maximum.
#[tokio::test]
async fn a_remote_consumer_that_keeps_up_grows_its_credit_within_the_maximum() {
    let (first, max) = (16usize, 256usize);
    let key = common::key();
    let buffers = |config: NodeConfig| config.with_stream_buffer(first).with_stream_buffer_max(max);
    let a = Node::new(buffers(common::config("a", "test", &key, &[])))
        .await
        .unwrap();
    let (fixture, probe) = common::fixture::Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let b = Node::new(buffers(common::config("b", "test", &key, &[&a])))
        .await
        .unwrap();
    b.start().await.unwrap();
    common::wait_for_action(&b, &path("stream/endless")).await;
    let mut endless: Streaming<u64> = b
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    let ahead = |taken: u64| probe.pulled.load(Ordering::SeqCst) as u64 - taken;
    let mut most_ahead = 0;
    for n in 0..20_000u64 {
        assert_eq!(endless.message().await.unwrap(), Some(n));
        most_ahead = most_ahead.max(ahead(n + 1));
    }
    // Without growth the producer is never more than the first credit (and the half taken
    // and not yet granted back) ahead.
    assert!(
        most_ahead > (first + first / 2) as u64,
        "the producer was at most {most_ahead} messages ahead: the credit never grew"
    );
    // Stalled: the producer stops once the grown credit is spent.
    let taken = 20_000;
    let last = until_still(|| ahead(taken)).await;
    assert!(
        last <= (max + max / 2) as u64,
        "{last} messages ahead of a stalled consumer, maximum {max}"
    );
    println!("grown credit: at most {most_ahead} ahead while keeping up, {last} once stalled");
    for n in taken..taken + 1000 {
        assert_eq!(endless.message().await.unwrap(), Some(n));
    }
}

#[tokio::test]
async fn stream_buffer_settings_are_checked() {
    let too_large = NodeConfig::new("n", "test").with_stream_buffer_max(1 << 25);
    let e = Node::new(too_large).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("stream_buffer_max"), "{e}");
    // A maximum under the buffer is the buffer (no growth): accepted, and streams work.
    let (node, _probe) = serving_fixture(
        NodeConfig::new("n", "test")
            .with_stream_buffer(64)
            .with_stream_buffer_max(8),
    )
    .await;
    let count: Streaming<u64> = node
        .request_stream(path("stream/count"), stream_once(100u64))
        .await
        .unwrap();
    assert_eq!(collect(count).await, (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_remote_timeout_bounds_the_whole_call() {
    let (_a, b, mut probe) = remote_pair().await;
    let options = RequestOptions::timeout(Duration::from_millis(200));
    let mut endless = b
        .request_stream_with::<(), u64>(path("stream/endless"), stream_once(()), options)
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    let e = error_of(endless).await;
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert_eq!(common::next_dropped(&mut probe).await, "stream dropped");
}

#[tokio::test]
async fn a_thousand_concurrent_server_streams_on_one_connection() {
    let (_a, b, mut probe) = remote_pair().await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let stream: Streaming<u64> = b
            .request_stream(path("stream/endless"), stream_once(()))
            .await
            .unwrap();
        streams.push(stream);
    }
    // Every one is open at once and delivers.
    let firsts = futures::future::join_all(streams.iter_mut().map(|s| s.message())).await;
    assert!(firsts.into_iter().all(|m| m.unwrap() == Some(0)));
    for stream in &mut streams {
        assert_eq!(stream.message().await.unwrap(), Some(1));
    }
    drop(streams);
    for _ in 0..1000 {
        assert_eq!(common::next_dropped(&mut probe).await, "stream dropped");
    }
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_unary_calls_still_pass() {
    let key = common::key();
    let server = Node::new(NodeConfig::new("a", "test").with_network_config(
        common::network(&key, runar::DiscoveryOptions::none()).with_max_concurrent_streams(2),
    ))
    .await
    .unwrap();
    let (fixture, _probe) = common::fixture::Fixture::new("a");
    server.add_service(fixture).await.unwrap();
    server.start().await.unwrap();
    let b = common::started("b", &key, &[&server]).await;
    common::wait_for_action(&b, &path("stream/endless")).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s: Streaming<u64> = b
            .request_stream(path("stream/endless"), stream_once(()))
            .await
            .unwrap();
        assert_eq!(s.message().await.unwrap(), Some(0));
        open.push(s);
    }
    let third = b
        .request_stream::<(), u64>(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    let e = error_of(third).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // Unary requests have places of their own.
    let doubled: u64 = b.request(path("double"), 21u64).await.unwrap();
    assert_eq!(doubled, 42);
    drop(open);
}

// ---- a server that vanishes -----------------------------------------------------------------

/// How long failure detection may take: the default idle timeout (1 s) plus scheduling
/// margin on a loaded machine.
const DETECTION: Duration = Duration::from_secs(3);

/// The environment variable that makes [`stream_server`] run.
const SERVER_ENV: &str = "RUNAR_STREAM_SERVER";

/// The server role of the SIGKILL test: runs when spawned by it, serving a fixture until its
/// stdin closes, and prints `READY <address>`.
#[test]
fn stream_server() {
    if std::env::var(SERVER_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = common::node("server", &common::key(), runar::DiscoveryOptions::none()).await;
        let (fixture, _probe) = common::fixture::Fixture::new("server");
        node.add_service(fixture).await.unwrap();
        node.start().await.unwrap();
        println!("READY {}", node.local_addr().unwrap());
        common::process::until_stdin_closes().await;
        node.stop().await.unwrap();
    });
}

/// Reads `stream` until it fails; the error and how long after `since` it came.
async fn failure_of(
    stream: &mut Streaming<u64>,
    since: std::time::Instant,
) -> (runar::Error, Duration) {
    let error = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
                Ok(None) => panic!("the stream ended cleanly"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the stream never failed");
    (error, since.elapsed())
}

#[tokio::test]
async fn a_sigkilled_server_ends_the_clients_stream_with_unavailable() {
    common::init_tracing();
    let mut server = common::process::ServerProcess::spawn("stream_server", [(SERVER_ENV, "1")]);
    let addr: std::net::SocketAddr = server.ready.parse().unwrap();
    let client = common::node(
        "client",
        &common::key(),
        runar::DiscoveryOptions::static_peers([addr]),
    )
    .await;
    client.start().await.unwrap();
    common::wait_for_action(&client, &path("stream/endless")).await;
    let mut endless: Streaming<u64> = client
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    let killed = std::time::Instant::now();
    server.kill();
    let (e, after) = failure_of(&mut endless, killed).await;
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        after < DETECTION,
        "the stream failed {after:?} after the kill"
    );
    println!("SIGKILL: the client's stream failed {after:?} after the kill: {e}");
}

#[tokio::test]
async fn a_partition_ends_the_clients_stream_with_unavailable() {
    common::init_tracing();
    let key = common::key();
    let a = common::node("a", &key, runar::DiscoveryOptions::none()).await;
    let (fixture, _probe) = common::fixture::Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let proxy = common::udp_proxy::UdpProxy::start(a.local_addr().unwrap()).await;
    let b = common::node(
        "b",
        &key,
        runar::DiscoveryOptions::static_peers([proxy.addr()]),
    )
    .await;
    b.start().await.unwrap();
    common::wait_for_action(&b, &path("stream/endless")).await;
    let mut endless: Streaming<u64> = b
        .request_stream(path("stream/endless"), stream_once(()))
        .await
        .unwrap();
    assert_eq!(endless.message().await.unwrap(), Some(0));
    let cut = std::time::Instant::now();
    proxy.partition();
    let (e, after) = failure_of(&mut endless, cut).await;
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        after < DETECTION,
        "the stream failed {after:?} after the partition"
    );
    println!("partition: the client's stream failed {after:?} after the cut: {e}");
}

// ---- a hostile caller -----------------------------------------------------------------------

mod hostile {
    use super::*;
    use common::raw::{self, MAX};
    use prost::Message as _;
    use runar::__private::{read_frame, wire, write_frame};

    /// A raw caller's stream to the fixture's `action` on `a` (header written).
    async fn open(
        conn: &quinn::Connection,
        action: &str,
    ) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[4]).await.unwrap();
        let header = wire::Request {
            network: "test".into(),
            path: path(action),
            ..Default::default()
        };
        write_frame(&mut send, &header.encode_to_vec(), MAX)
            .await
            .unwrap();
        (send, recv)
    }

    async fn frame(send: &mut quinn::SendStream, kind: wire::stream_frame::Kind) {
        let frame = wire::StreamFrame { kind: Some(kind) };
        write_frame(send, &frame.encode_to_vec(), MAX)
            .await
            .unwrap();
    }

    /// Reads the server's frames until the stream ends; the trailer's code, if one came.
    async fn until_end(recv: &mut quinn::RecvStream) -> Option<Code> {
        tokio::time::timeout(WAIT, async {
            loop {
                match read_frame(recv, MAX).await {
                    Ok(Some(bytes)) => {
                        if let Some(wire::stream_frame::Kind::Trailer(t)) =
                            wire::StreamFrame::decode(bytes).unwrap().kind
                        {
                            return Some(
                                t.error.map_or(Code::Internal, |e| Code::from_u32(e.code)),
                            );
                        }
                    }
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await
        .expect("the server never ended the stream")
    }

    async fn still_serves(b: &Node) {
        let echo: Streaming<u64> = b
            .request_stream(path("stream/echo"), futures::stream::iter(0..100u64))
            .await
            .unwrap();
        assert_eq!(collect(echo).await.len(), 100);
    }

    #[tokio::test]
    async fn a_caller_past_its_credit_or_granting_too_much_loses_only_its_call() {
        let (a, b, _probe) = remote_pair().await;
        let (_t, conn, keypair) = raw::client(&a).await;
        let _control = raw::hello(&conn, &keypair).await;

        // Grants no credit (so the echo cannot answer and stops reading), then sends twice the
        // server's credit in requests.
        let past_credit = 2 * a.config().stream_buffer as u64;
        let (mut send, mut recv) = open(&conn, "stream/echo").await;
        for n in 0..past_credit {
            let message = wire::stream_frame::Kind::Message(n.encode_to_vec().into());
            let frame = wire::StreamFrame {
                kind: Some(message),
            };
            if write_frame(&mut send, &frame.encode_to_vec(), MAX)
                .await
                .is_err()
            {
                break;
            }
        }
        assert_eq!(
            until_end(&mut recv).await,
            None,
            "the server resets the stream"
        );
        still_serves(&b).await;

        // Grants more credit than any buffer.
        let (mut send, mut recv) = open(&conn, "stream/endless").await;
        frame(&mut send, wire::stream_frame::Kind::Credit(u32::MAX)).await;
        frame(&mut send, wire::stream_frame::Kind::Credit(u32::MAX)).await;
        assert_eq!(
            until_end(&mut recv).await,
            None,
            "the server resets the stream"
        );
        still_serves(&b).await;

        // A message after its trailer, then a malformed frame.
        let (mut send, mut recv) = open(&conn, "stream/echo").await;
        frame(&mut send, wire::stream_frame::Kind::Credit(1000)).await;
        frame(
            &mut send,
            wire::stream_frame::Kind::Trailer(wire::Trailer::default()),
        )
        .await;
        frame(
            &mut send,
            wire::stream_frame::Kind::Message(7u64.encode_to_vec().into()),
        )
        .await;
        assert_eq!(until_end(&mut recv).await, None);
        let (mut send, mut recv) = open(&conn, "stream/echo").await;
        write_frame(&mut send, b"\xff\xff", MAX).await.unwrap();
        assert_eq!(until_end(&mut recv).await, None);
        still_serves(&b).await;
    }

    #[tokio::test]
    async fn a_bad_header_gets_a_trailer_with_the_error() {
        let (a, b, _probe) = remote_pair().await;
        let (_t, conn, keypair) = raw::client(&a).await;
        let _control = raw::hello(&conn, &keypair).await;
        for (what, bytes, code) in [
            ("garbage", vec![0xffu8, 0xff], Code::InvalidArgument),
            (
                "a bad timeout",
                wire::Request {
                    network: "test".into(),
                    path: path("stream/echo"),
                    metadata: [("runar-timeout".to_owned(), b"soon".to_vec().into())].into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                Code::InvalidArgument,
            ),
            (
                "an unknown action",
                wire::Request {
                    network: "test".into(),
                    path: path("stream/nothing"),
                    ..Default::default()
                }
                .encode_to_vec(),
                Code::NotFound,
            ),
        ] {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&[4]).await.unwrap();
            write_frame(&mut send, &bytes, MAX).await.unwrap();
            let _ = send.finish();
            assert_eq!(until_end(&mut recv).await, Some(code), "{what}");
        }
        still_serves(&b).await;
    }
}
