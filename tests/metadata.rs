//! Request and event metadata, and interceptors: per call, per client and per node, on the
//! calling and the serving side, on one node and over QUIC on 127.0.0.1; limits against a raw
//! peer; the deadline riding along.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::raw::RawPeer;
use common::{WAIT, key, wait_for, wait_for_action};
use prost::Message;
use runar::__private::{read_frame, wire, write_frame};
use runar::{
    AbstractService, Call, Caller, Code, Error, LifecycleContext, Metadata, Node, NodeConfig,
    PublishOptions, RequestContext, RequestOptions,
};
use tokio::sync::mpsc;

const MAX: usize = 4 * 1024 * 1024;

/// `probe/read` answers the metadata entry its request names (bytes of a `-bin` key as a debug
/// list) and who called; `probe/forward` asks `probe/read` downstream with `ctx.request`.
struct Probe;

fn read(ctx: &RequestContext, key: &str) -> String {
    let value = if key.ends_with("-bin") {
        ctx.metadata().get_bin(key).map(|b| format!("{b:?}"))
    } else {
        ctx.metadata().get(key).map(str::to_owned)
    };
    let caller = match ctx.caller() {
        Caller::Local => "local",
        _ => "remote",
    };
    format!("{}@{caller}", value.unwrap_or_else(|| "-".into()))
}

impl AbstractService for Probe {
    fn name(&self) -> &str {
        "Probe"
    }
    fn path(&self) -> &str {
        "probe"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("read", |key: String, ctx: RequestContext| async move {
            Ok(read(&ctx, &key))
        })
        .await?;
        ctx.register_action("forward", |key: String, ctx: RequestContext| async move {
            ctx.request::<String, String>("probe/read", key).await
        })
        .await?;
        ctx.register_action("remaining", |(): (), ctx: RequestContext| async move {
            Ok(u64::try_from(ctx.remaining().as_millis()).unwrap_or(u64::MAX))
        })
        .await
    }
}

/// The macro path: a generated client with per-client metadata and interceptors.
#[runar::service(path = "whoami")]
pub trait WhoAmI {
    /// The `tenant` and `from-client` entries the handler sees.
    async fn tell(&self, ctx: runar::RequestContext) -> runar::Result<String> {
        let md = ctx.metadata();
        Ok(format!(
            "{}/{}",
            md.get("tenant").unwrap_or("-"),
            md.get("from-client").unwrap_or("-")
        ))
    }
}

struct WhoAmIImpl;
impl WhoAmI for WhoAmIImpl {}

fn config(name: &str, peers: &[&Node]) -> NodeConfig {
    common::config(name, "test", &key(), peers)
}

/// Adds `tenant: acme` to every outgoing call.
fn tenant_config(config: NodeConfig) -> NodeConfig {
    config.with_outgoing_interceptor(|mut call: Call| async move {
        call.metadata_mut().insert("tenant", "acme")?;
        Ok(call)
    })
}

/// Refuses calls without `authorization: letmein`; tells the handler who checked.
fn guarded_config(config: NodeConfig) -> NodeConfig {
    config.with_incoming_interceptor(|mut call: Call| async move {
        if call.metadata().get("authorization") != Some("letmein") {
            return Err(Error::permission_denied(format!(
                "no entry to `{}`",
                call.path()
            )));
        }
        call.metadata_mut().insert("checked-by", "guard")?;
        Ok(call)
    })
}

async fn start(config: NodeConfig, serve: bool) -> Node {
    let node = Node::new(config).await.unwrap();
    if serve {
        node.add_service(Probe).await.unwrap();
        node.add_service(WhoAmIServer::new(WhoAmIImpl))
            .await
            .unwrap();
    }
    node.start().await.unwrap();
    node
}

/// A server (with the services), and a client node connected to it that routes to them.
async fn pair(server: NodeConfig, client: impl FnOnce(NodeConfig) -> NodeConfig) -> (Node, Node) {
    common::init_tracing();
    let b = start(server, true).await;
    let a = start(client(config("a", &[&b])), false).await;
    wait_for_action(&a, "probe/read").await;
    wait_for_action(&a, "whoami/tell").await;
    (a, b)
}

async fn ask(node: &Node, key: &str, options: RequestOptions) -> runar::Result<String> {
    node.request_with("probe/read", key.to_owned(), options)
        .await
}

#[tokio::test]
async fn an_outgoing_interceptor_adds_metadata_the_handler_reads_locally_and_over_quic() {
    let local = start(tenant_config(NodeConfig::new("solo", "test")), true).await;
    let got = ask(&local, "tenant", RequestOptions::default()).await;
    assert_eq!(got.unwrap(), "acme@local");

    let (a, b) = pair(config("b", &[]), tenant_config).await;
    let got = ask(&a, "tenant", RequestOptions::default()).await;
    assert_eq!(got.unwrap(), "acme@remote");
    // The server's own calls do not get the client node's interceptor.
    assert_eq!(
        ask(&b, "tenant", RequestOptions::default()).await.unwrap(),
        "-@local"
    );
}

#[tokio::test]
async fn an_incoming_interceptor_that_refuses_gives_its_error_to_the_caller() {
    let mut pass = Metadata::new();
    pass.insert("authorization", "letmein").unwrap();
    let with_pass = || RequestOptions::default().with_metadata(pass.clone());

    let local = start(guarded_config(NodeConfig::new("solo", "test")), true).await;
    let err = ask(&local, "tenant", RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no entry to `probe/read`");
    let got = ask(&local, "checked-by", with_pass()).await.unwrap();
    assert_eq!(got, "guard@local");

    let (a, _b) = pair(guarded_config(config("b", &[])), |c| c).await;
    let err = ask(&a, "tenant", RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no entry to `probe/read`");
    let got = ask(&a, "checked-by", with_pass()).await.unwrap();
    assert_eq!(got, "guard@remote");

    // An outgoing interceptor's refusal reaches the caller before anything is sent.
    let err = ask(
        &a,
        "tenant",
        RequestOptions::default()
            .with_interceptor(|_call: Call| async { Err(Error::unavailable("offline mode")) }),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "offline mode")
    );
}

#[tokio::test]
async fn per_call_and_per_client_metadata_with_binary_values_cross_quic() {
    let (a, _b) = pair(config("b", &[]), tenant_config).await;

    let mut md = Metadata::new();
    md.insert("request-id", "r-17").unwrap();
    md.insert_bin("blob-bin", vec![0u8, 255, 10, 13]).unwrap();
    let per_call = || RequestOptions::default().with_metadata(md.clone());
    assert_eq!(
        ask(&a, "request-id", per_call()).await.unwrap(),
        "r-17@remote"
    );
    assert_eq!(
        ask(&a, "blob-bin", per_call()).await.unwrap(),
        "[0, 255, 10, 13]@remote"
    );
    // The node's interceptor ran too.
    assert_eq!(ask(&a, "tenant", per_call()).await.unwrap(), "acme@remote");

    // Per client: metadata and an interceptor, on a configured clone.
    let plain = WhoAmIClient::new(a.clone());
    let mut tenant = Metadata::new();
    tenant.insert("tenant", "other").unwrap();
    let configured =
        plain
            .clone()
            .with_metadata(tenant)
            .with_interceptor(|mut call: Call| async move {
                call.metadata_mut().insert("from-client", "yes")?;
                Ok(call)
            });
    // The node's interceptor runs first, then the client's: the client's metadata was there
    // before both and the node's `tenant` replaced it.
    assert_eq!(configured.tell().await.unwrap(), "acme/yes");
    assert_eq!(plain.tell().await.unwrap(), "acme/-");

    // A client without node interceptors keeps its own `tenant`.
    let solo = start(NodeConfig::new("solo", "test"), true).await;
    let mut tenant = Metadata::new();
    tenant.insert("tenant", "other").unwrap();
    let client = WhoAmIClient::new(solo).with_metadata(tenant);
    assert_eq!(client.tell().await.unwrap(), "other/-");
}

#[tokio::test]
async fn downstream_calls_carry_the_trace_context_and_nothing_else() {
    let (a, _b) = pair(config("b", &[]), tenant_config).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut md = Metadata::new();
    md.insert("traceparent", traceparent).unwrap();
    let options = || RequestOptions::default().with_metadata(md.clone());
    let forwarded: String = a
        .request_with("probe/forward", "traceparent".to_owned(), options())
        .await
        .unwrap();
    assert_eq!(forwarded, format!("{traceparent}@local"));
    let forwarded: String = a
        .request_with("probe/forward", "tenant".to_owned(), options())
        .await
        .unwrap();
    assert_eq!(forwarded, "-@local");
}

#[tokio::test]
async fn metadata_over_the_limits_is_refused_on_send() {
    let node = start(
        NodeConfig::new("solo", "test")
            .with_max_metadata_entries(2)
            .with_max_metadata_size(64),
        true,
    )
    .await;
    let mut many = Metadata::new();
    for i in 0..3 {
        many.insert(&format!("k{i}"), "v").unwrap();
    }
    let err = ask(&node, "k0", RequestOptions::default().with_metadata(many))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let mut big = Metadata::new();
    big.insert("k", "x".repeat(100)).unwrap();
    let err = ask(
        &node,
        "k",
        RequestOptions::default().with_metadata(big.clone()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let err = node
        .publish_with(
            "news/big",
            1u64,
            PublishOptions::default().with_metadata(big),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
}

/// Sends a `probe/read` request with `metadata` and returns the answer.
async fn raw_request(
    conn: &quinn::Connection,
    metadata: Vec<(String, Vec<u8>)>,
) -> Result<String, (Code, String)> {
    let mut map: std::collections::HashMap<String, runar::prost::bytes::Bytes> =
        metadata.into_iter().map(|(k, v)| (k, v.into())).collect();
    map.insert("runar-timeout".into(), "5000".into());
    let request = wire::Request {
        network: "test".into(),
        path: "probe/read".into(),
        payload: "tenant".to_owned().encode_to_vec().into(),
        metadata: map,
        ..Default::default()
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[2]).await.unwrap();
    write_frame(&mut send, &request.encode_to_vec(), MAX)
        .await
        .unwrap();
    let _ = send.finish();
    let frame = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX))
        .await
        .expect("no answer")
        .unwrap()
        .unwrap();
    match wire::Response::decode(frame).unwrap().result.unwrap() {
        wire::response::Result::Payload(bytes) => Ok(String::decode(bytes).unwrap()),
        wire::response::Result::Error(e) => Err((Code::from_u32(e.code), e.message)),
    }
}

#[tokio::test]
async fn a_peer_over_the_metadata_limits_is_refused_with_resource_exhausted() {
    common::init_tracing();
    let b = start(config("b", &[]), true).await;
    let raw = RawPeer::connect(&b, vec![]).await;
    let conn = &raw.conn;
    let entry = |k: &str, v: &[u8]| (k.to_owned(), v.to_vec());

    let ok = raw_request(conn, vec![entry("tenant", b"raw")]).await;
    assert_eq!(ok.unwrap(), "raw@remote");

    let many = (0..65).map(|i| entry(&format!("k{i}"), b"v")).collect();
    let (code, message) = raw_request(conn, many).await.unwrap_err();
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert_eq!(message, "the metadata has more than 64 entries, the limit");

    let big = vec![entry("tenant", &[b'x'; 9 * 1024])];
    let (code, message) = raw_request(conn, big).await.unwrap_err();
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert_eq!(
        message,
        "the metadata is over the limit of 8192 bytes of keys and values"
    );

    for bad in [
        entry("Tenant", b"x"),
        entry("tenant", b"new\nline"),
        entry("", b"x"),
    ] {
        let (code, message) = raw_request(conn, vec![bad]).await.unwrap_err();
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("metadata key"), "{message}");
    }
    // Binary values are any bytes; unknown reserved entries are ignored.
    let fine = vec![entry("k-bin", &[0, 159, 255]), entry("runar-future", b"?")];
    assert_eq!(raw_request(conn, fine).await.unwrap(), "-@remote");

    // The node is unharmed: the same connection and a real peer still get answers.
    let ok = raw_request(conn, vec![entry("tenant", b"again")]).await;
    assert_eq!(ok.unwrap(), "again@remote");
    let a = start(config("a", &[&b]), false).await;
    wait_for_action(&a, "probe/read").await;
    assert_eq!(
        ask(&a, "tenant", RequestOptions::default()).await.unwrap(),
        "-@remote"
    );
}

#[tokio::test]
async fn events_carry_metadata_locally_and_remotely() {
    common::init_tracing();
    let b = start(config("b", &[]), false).await;
    let a = start(config("a", &[&b]), false).await;
    wait_for("a and b to connect", || b.peers() == [a.node_id()]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.subscribe("news/>", move |n: u64, ctx: runar::EventContext| {
        let tx = tx.clone();
        async move {
            let tenant = ctx.metadata().get("tenant").map(str::to_owned);
            let blob = ctx.metadata().get_bin("blob-bin").map(<[u8]>::to_vec);
            let _ = tx.send((n, tenant, blob));
            Ok(())
        }
    })
    .await
    .unwrap();
    let mut md = Metadata::new();
    md.insert("tenant", "acme").unwrap();
    md.insert_bin("blob-bin", vec![1u8, 0, 2]).unwrap();
    let options = || PublishOptions::default().with_metadata(md.clone());

    b.publish_with("news/local", 1u64, options()).await.unwrap();
    a.publish_with("news/remote", 2u64, options())
        .await
        .unwrap();
    a.publish("news/bare", 3u64).await.unwrap();
    for expected in 1..=3u64 {
        let (n, tenant, blob) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("event")
            .unwrap();
        assert_eq!(n, expected);
        if n == 3 {
            assert_eq!((tenant, blob), (None, None));
        } else {
            assert_eq!(tenant.as_deref(), Some("acme"));
            assert_eq!(blob, Some(vec![1, 0, 2]));
        }
    }
}

#[tokio::test]
async fn the_deadline_still_reaches_the_remote_handler() {
    let (a, _b) = pair(config("b", &[]), tenant_config).await;
    wait_for_action(&a, "probe/remaining").await;
    let options = RequestOptions::default().with_timeout(Duration::from_secs(3));
    let left: u64 = a
        .request_with("probe/remaining", (), options)
        .await
        .unwrap();
    assert!((1..=3000).contains(&left), "{left} ms left");
    // An interceptor that outlives the deadline ends the call with DeadlineExceeded.
    let slow = RequestOptions::default()
        .with_timeout(Duration::from_millis(50))
        .with_interceptor(|call: Call| async move {
            tokio::time::sleep_until((call.deadline() + Duration::from_secs(5)).into()).await;
            Ok(call)
        });
    let err = a
        .request_with::<_, u64>("probe/remaining", (), slow)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    // A panicking interceptor fails the call with Internal; the node carries on.
    let panics = RequestOptions::default().with_interceptor(|call: Call| async move {
        if call.path() == "probe/remaining" {
            panic!("interceptor bug");
        }
        Ok(call)
    });
    let err = a
        .request_with::<_, u64>("probe/remaining", (), panics)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("interceptor bug"), "{err}");
    let left: u64 = a
        .request_with("probe/remaining", (), RequestOptions::default())
        .await
        .unwrap();
    assert!(left > 0);
}

#[tokio::test]
async fn a_peer_event_over_the_metadata_limits_is_dropped_and_counted() {
    common::init_tracing();
    let b = start(config("b", &[]), false).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.subscribe("news/>", move |n: u64, ctx: runar::EventContext| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((n, ctx.metadata().get("tenant").map(str::to_owned)));
            Ok(())
        }
    })
    .await
    .unwrap();
    let raw = RawPeer::connect(&b, vec![]).await;
    let id = raw.subscription_id("news/>").expect("b announces it");
    let with = |n: u64, entries: Vec<(String, Vec<u8>)>| wire::Event {
        metadata: entries.into_iter().map(|(k, v)| (k, v.into())).collect(),
        ..common::raw::event("news/x", n, vec![id])
    };
    let big = vec![("tenant".to_owned(), vec![b'x'; 9 * 1024])];
    let many = (0..65).map(|i| (format!("k{i}"), b"v".to_vec())).collect();
    let bad = vec![("Tenant".to_owned(), b"x".to_vec())];
    let fine = vec![("tenant".to_owned(), b"acme".to_vec())];
    raw.send_events(&[with(1, big), with(2, many), with(3, bad), with(4, fine)])
        .await;
    let (n, tenant) = common::next(&mut rx).await;
    assert_eq!((n, tenant.as_deref()), (4, Some("acme")));
    let stats = b.stats();
    assert_eq!((stats.events_received, stats.events_rejected), (4, 3));
}

/// An event handler's downstream request carries the event's trace context, as a request
/// handler's does, and nothing else of its metadata.
#[tokio::test]
async fn an_event_handlers_requests_carry_the_events_trace_context() {
    let node = start(config("solo", &[]), true).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("traced", move |key: String, ctx: runar::EventContext| {
        let tx = tx.clone();
        async move {
            let seen: String = ctx.request("probe/read", key).await?;
            let _ = tx.send(seen);
            Ok(())
        }
    })
    .await
    .unwrap();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut md = Metadata::new();
    md.insert("traceparent", traceparent).unwrap();
    md.insert("tenant", "acme").unwrap();
    for key in ["traceparent", "tenant"] {
        let options = PublishOptions::default().with_metadata(md.clone());
        node.publish_with("traced", key.to_owned(), options)
            .await
            .unwrap();
    }
    let mut next = async || {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, format!("{traceparent}@local"));
    assert_eq!(next().await, "-@local");
}
