//! Access policies over QUIC on 127.0.0.1: who may call, publish to and subscribe to what on a
//! node, decided on that node from the peers' TLS identities. Denied calls are hidden from the
//! peer's capabilities and refused when sent anyway (naming the rule); denied subscriptions and
//! events get nothing through; a policy changed at run time applies to the next call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw::{self, MAX, RawPeer, subscription};
use common::{WAIT, key, pair, started, wait_for};
use prost::Message;
use runar::__private::{read_frame, wire};
use runar::policy::{Access, Policy, Subject};
use runar::{Code, Node};
use tokio::sync::mpsc;

/// Closes a raw peer's connection, so that its node's `stop` need not wait for it.
fn bye(conn: &quinn::Connection) {
    conn.close(0u32.into(), b"bye");
}

/// A raw peer of `target` past its hello, announcing nothing.
async fn raw_peer(target: &Node) -> RawPeer {
    RawPeer::connect(target, Vec::new()).await
}

#[tokio::test]
async fn a_denied_call_is_hidden_and_refused_an_allowed_one_works() {
    let (a, b, _) = pair().await;
    let c = started("c", &key(), &[&a]).await;
    wait_for("c to connect", || c.peers() == [a.node_id()]).await;
    let raw = raw_peer(&a).await;
    let policy = Policy::deny_all()
        .allow(Subject::any_peer(), Access::Call, "echo/who")
        .allow(Subject::nodes([c.node_id()]), Access::Call, "echo/>");
    a.set_policy("test", policy).await.unwrap();

    // Told before set_policy returned: b no longer sees what it may not call; c does.
    assert!(b.actions().contains(&"echo/who".to_owned()));
    assert!(!b.actions().contains(&"echo/double".to_owned()));
    assert!(c.actions().contains(&"echo/double".to_owned()));
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    let err = b.request::<u64, u64>("echo/double", 21).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let n: u64 = c.request("echo/double", 21u64).await.unwrap();
    assert_eq!(n, 42);

    // Sent anyway, it is refused on a before the handler runs, naming the rule.
    let (code, message) = raw::call(&raw.conn, "test", "echo/double", &21u64.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("default (deny all)"), "{message}");
    assert!(message.contains(&raw.id.to_string()), "{message}");
    let who = raw::call(&raw.conn, "test", "echo/who", &[]).await.unwrap();
    assert_eq!(String::decode(who.as_slice()).unwrap(), "a");

    // Counted per rule.
    let stats = a.policy_stats("test").unwrap();
    assert_eq!(stats.len(), 3);
    assert!(stats[0].allowed >= 2, "{stats:?}");
    assert!(stats[1].allowed >= 1, "{stats:?}");
    assert!(stats[2].denied >= 1, "{stats:?}");
    bye(&raw.conn);
    for n in [&b, &c, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_policy_changed_at_run_time_applies_to_the_next_call() {
    let (a, b, _) = pair().await;
    let n: u64 = b.request("echo/double", 21u64).await.unwrap();
    assert_eq!(n, 42);
    let deny = Policy::allow_all().deny(Subject::any_peer(), Access::Call, "echo/double");
    a.set_policy("test", deny).await.unwrap();
    let err = b.request::<u64, u64>("echo/double", 21).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let raw = raw_peer(&a).await;
    let (code, message) = raw::call(&raw.conn, "test", "echo/double", &21u64.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        message.contains("rule 1 (deny any peer call `echo/double`)"),
        "{message}"
    );
    // The rest is still allowed, by the default.
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");

    a.set_policy("test", Policy::allow_all()).await.unwrap();
    assert_eq!(a.policy_stats("test"), None);
    let n: u64 = b.request("echo/double", 21u64).await.unwrap();
    assert_eq!(n, 42);
    bye(&raw.conn);

    // A policy naming local callers checks them too: `echo/double` made remote-only.
    let remote_only = Policy::allow_all().deny(Subject::local(), Access::Call, "echo/double");
    a.set_policy("test", remote_only).await.unwrap();
    let err = a.request::<u64, u64>("echo/double", 21).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let n: u64 = b.request("echo/double", 21u64).await.unwrap();
    assert_eq!(n, 42);

    // Bad policies are refused whole.
    let bad = Policy::deny_all().allow(Subject::group("ops"), Access::Call, "echo/>");
    assert_eq!(
        a.set_policy("test", bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let other = a
        .set_policy("other-net", Policy::deny_all())
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    for n in [&b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_caller_is_the_peer_its_certificate_proves() {
    let (a, b, _) = pair().await;
    // Groups name node ids: b may call `caller`, and learns its own id back.
    let ops = Policy::deny_all()
        .allow(Subject::group("ops"), Access::Call, "echo/caller")
        .with_group("ops", [b.node_id()]);
    a.set_policy("test", ops).await.unwrap();
    let caller: String = b.request("echo/caller", ()).await.unwrap();
    assert_eq!(caller, b.node_id().to_string());

    // A raw client holding the key is the id of its certificate, whatever its hello says.
    let (_transport, conn, keypair) = raw::client(&a).await;
    let mut hello = raw::hello_with(&keypair, wire::Capabilities::default());
    hello.node_id = b.node_id().to_string();
    let (_send, _recv, theirs) = raw::send_hello(&conn, &hello).await;
    assert!(theirs.is_none(), "a hello claiming b's id is refused");
    bye(&conn);
    let raw = raw_peer(&a).await;
    let (code, message) = raw::call(&raw.conn, "test", "echo/caller", &[])
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    a.set_policy("test", Policy::allow_all()).await.unwrap();
    let caller = raw::call(&raw.conn, "test", "echo/caller", &[])
        .await
        .unwrap();
    assert_eq!(
        String::decode(caller.as_slice()).unwrap(),
        raw.id.to_string()
    );
    bye(&raw.conn);
    for n in [&b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_denied_subscription_receives_nothing_an_allowed_one_everything() {
    let (a, b, _) = pair().await;
    let policy =
        Policy::allow_all().deny(Subject::any_peer(), Access::Subscribe, "alerts/secret/>");
    a.set_policy("test", policy).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (name, pattern) in [("allowed", "alerts/public/>"), ("denied", "alerts/>")] {
        let tx = tx.clone();
        b.subscribe(pattern, move |n: u64, _| {
            let tx = tx.clone();
            async move {
                tx.send((name, n)).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    // Subscribing returns once a was told; its policy refused the broader one.
    for n in 0..10u64 {
        a.publish("alerts/secret/x", n).await.unwrap();
        a.publish("alerts/public/x", n).await.unwrap();
    }
    for n in 0..10u64 {
        assert_eq!(common::next(&mut rx).await, ("allowed", n));
    }
    // One more round trip through both subscriptions' paths: still nothing for the denied one.
    a.publish("alerts/public/x", 10u64).await.unwrap();
    assert_eq!(common::next(&mut rx).await, ("allowed", 10));
    assert!(
        rx.try_recv().is_err(),
        "the denied subscription received an event"
    );
    let stats = a.policy_stats("test").unwrap();
    assert!(stats[0].denied >= 1, "{stats:?}");

    // Allowed again at run time, it receives from then on.
    a.set_policy("test", Policy::allow_all()).await.unwrap();
    a.publish("alerts/secret/x", 11u64).await.unwrap();
    assert_eq!(common::next(&mut rx).await, ("denied", 11));
    for n in [&b, &a] {
        n.stop().await.unwrap();
    }
}

/// Reads `conn`'s first event stream until an event for `topic` arrives; returns every event
/// read, that one included.
async fn events_until(conn: &quinn::Connection, topic: &str) -> Vec<wire::Event> {
    let mut stream = tokio::time::timeout(WAIT, conn.accept_uni())
        .await
        .expect("no event stream")
        .unwrap();
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).await.unwrap();
    let mut events = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut stream, MAX))
            .await
            .expect("no event")
            .unwrap()
            .expect("an event");
        let event = wire::Event::decode(frame).unwrap();
        let last = event.topic == topic;
        events.push(event);
        if last {
            return events;
        }
    }
}

#[tokio::test]
async fn a_peer_announcing_a_forbidden_subscription_gets_nothing() {
    common::init_tracing();
    let a = common::node("a", &key(), runar::DiscoveryOptions::none()).await;
    a.start().await.unwrap();
    let policy =
        Policy::allow_all().deny(Subject::any_peer(), Access::Subscribe, "alerts/secret/>");
    a.set_policy("test", policy).await.unwrap();
    let raw = RawPeer::connect(
        &a,
        vec![
            subscription(7, "alerts/secret/>"),
            subscription(8, "alerts/public/>"),
        ],
    )
    .await;
    a.publish("alerts/secret/x", 1u64).await.unwrap();
    a.publish("alerts/public/x", 2u64).await.unwrap();
    let events = events_until(&raw.conn, "alerts/public/x").await;
    assert_eq!(
        events.len(),
        1,
        "only the allowed subscription's event is sent"
    );
    assert_eq!(events[0].subscription_ids, [8]);
    bye(&raw.conn);
    a.stop().await.unwrap();
}

/// The raw peer sends `refused` then `delivered` (topic, number) to its subscription `id` on
/// `a`: only the second reaches the handler, and `a` counts one rejection.
async fn refused_then_delivered(
    a: &Node,
    raw: &RawPeer,
    id: u64,
    rx: &mut mpsc::UnboundedReceiver<(String, u64)>,
    refused: (&str, u64),
    delivered: (&str, u64),
) {
    let rejected = a.stats().events_rejected;
    raw.send_events(&[
        raw::event(refused.0, refused.1, vec![id]),
        raw::event(delivered.0, delivered.1, vec![id]),
    ])
    .await;
    assert_eq!(
        common::next(rx).await,
        (delivered.0.to_owned(), delivered.1)
    );
    assert!(rx.try_recv().is_err());
    assert_eq!(a.stats().events_rejected, rejected + 1);
}

#[tokio::test]
async fn events_into_a_forbidden_topic_are_refused_and_counted() {
    common::init_tracing();
    let a = common::node("a", &key(), runar::DiscoveryOptions::none()).await;
    a.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    a.subscribe("alerts/>", move |n: u64, ctx| {
        let tx = tx.clone();
        async move {
            tx.send((ctx.topic().to_owned(), n)).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    let policy = Policy::allow_all().deny(Subject::any_peer(), Access::Publish, "alerts/secret/>");
    a.set_policy("test", policy).await.unwrap();
    let raw = raw_peer(&a).await;
    let id = raw
        .subscription_id("alerts/>")
        .expect("a announces its subscription");
    refused_then_delivered(
        &a,
        &raw,
        id,
        &mut rx,
        ("alerts/secret/x", 1),
        ("alerts/public/x", 2),
    )
    .await;
    let stats = a.policy_stats("test").unwrap();
    assert_eq!(stats[0].denied, 1, "{stats:?}");

    // A topic delivered before (and so in the node's route cache) meets a new policy all the
    // same.
    let narrower = Policy::allow_all()
        .deny(Subject::any_peer(), Access::Publish, "alerts/secret/>")
        .deny(Subject::any_peer(), Access::Publish, "alerts/public/>");
    a.set_policy("test", narrower).await.unwrap();
    refused_then_delivered(
        &a,
        &raw,
        id,
        &mut rx,
        ("alerts/public/x", 3),
        ("alerts/other/x", 4),
    )
    .await;
    bye(&raw.conn);

    // A subscription a peer may not publish to at all is not announced to it.
    let deny = Policy::allow_all().deny(Subject::any_peer(), Access::Publish, "alerts/>");
    a.set_policy("test", deny).await.unwrap();
    let raw = raw_peer(&a).await;
    assert_eq!(raw.subscription_id("alerts/>"), None);
    bye(&raw.conn);
    a.stop().await.unwrap();
}

#[tokio::test]
async fn deny_all_hides_everything_from_peers_not_from_local_callers() {
    let (a, b, _) = pair().await;
    a.set_policy("test", Policy::deny_all()).await.unwrap();
    assert!(b.actions().iter().all(|p| !p.starts_with("echo/")));
    let local: String = a.request("echo/caller", ()).await.unwrap();
    assert_eq!(local, "local");
    for n in [&b, &a] {
        n.stop().await.unwrap();
    }
}

/// A code-first service, whose schema a peer may or may not be shown.
#[derive(Clone)]
struct Described;

#[runar::service(path = "described")]
impl Described {
    /// Answers.
    #[action]
    async fn ask(&self, q: String) -> runar::Result<String> {
        Ok(q)
    }
}

#[tokio::test]
async fn introspection_decides_whether_a_peer_sees_schemas() {
    common::init_tracing();
    let a = common::node("a", &key(), runar::DiscoveryOptions::none()).await;
    a.add_service(Described).await.unwrap();
    a.start().await.unwrap();
    let schema_told = |raw: &RawPeer| {
        let services = &raw.theirs.capabilities.as_ref().unwrap().services;
        let described = services.iter().find(|s| s.path == "described").unwrap();
        (!described.schema.is_empty(), described.actions.clone())
    };
    let call_only = Policy::deny_all().allow(Subject::any_peer(), Access::Call, "described/>");
    a.set_policy("test", call_only.clone()).await.unwrap();
    let raw = raw_peer(&a).await;
    assert_eq!(schema_told(&raw), (false, vec!["described/ask".to_owned()]));
    bye(&raw.conn);
    let with_schema = call_only.allow(Subject::any_peer(), Access::Introspect, "described");
    a.set_policy("test", with_schema).await.unwrap();
    let raw = raw_peer(&a).await;
    assert_eq!(schema_told(&raw), (true, vec!["described/ask".to_owned()]));
    bye(&raw.conn);
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_policy_naming_local_callers_checks_local_publishes_and_subscriptions() {
    let a = common::node("a", &key(), runar::DiscoveryOptions::none()).await;
    a.start().await.unwrap();
    let policy = Policy::allow_all()
        .deny(Subject::local(), Access::Publish, "secret/>")
        .deny(Subject::local(), Access::Subscribe, "secret/>");
    a.set_policy("test", policy).await.unwrap();
    let err = a.publish("secret/x", 1u64).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("rule 1"), "{err}");
    let err = a
        .subscribe(">", |_: u64, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("rule 2"), "{err}");
    a.publish("public/x", 1u64).await.unwrap();
    a.subscribe("public/>", |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn streaming_calls_need_stream_access() {
    let (a, b, _) = pair().await;
    let count = |node: &Node| -> futures::future::BoxFuture<'static, runar::Result<Vec<u64>>> {
        let node = node.clone();
        Box::pin(async move {
            let mut counts = node
                .request_stream::<u64, u64>("echo/stream/count", futures::stream::iter([3u64]))
                .await?;
            let mut got = Vec::new();
            while let Some(n) = counts.message().await? {
                got.push(n);
            }
            Ok(got)
        })
    };
    // Calls are allowed, streams are not: b is not told of the streaming action.
    let calls_only = Policy::deny_all().allow(Subject::any_peer(), Access::Call, "echo/>");
    a.set_policy("test", calls_only).await.unwrap();
    assert!(b.actions().contains(&"echo/double".to_owned()));
    assert!(!b.actions().contains(&"echo/stream/count".to_owned()));
    let err = count(&b).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    let streams = Policy::deny_all()
        .allow(Subject::any_peer(), Access::Call, "echo/>")
        .allow(Subject::any_peer(), Access::Stream, "echo/stream/>");
    a.set_policy("test", streams).await.unwrap();
    assert_eq!(count(&b).await.unwrap(), [0, 1, 2]);
    let stats = a.policy_stats("test").unwrap();
    assert!(stats[1].allowed >= 1, "{stats:?}");

    // Checked where the action is served: here, for a local caller the policy names.
    let local_denied =
        Policy::allow_all().deny(Subject::local(), Access::Stream, "echo/stream/count");
    a.set_policy("test", local_denied).await.unwrap();
    let err = count(&a).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("stream"), "{err}");
    assert_eq!(count(&b).await.unwrap(), [0, 1, 2]);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
