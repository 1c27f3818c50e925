//! Sealed fields across three nodes over QUIC on 127.0.0.1 (issue 16): A serves and publishes a
//! record with a `user` and a `system` field; B holds `system`, C holds both. Envelope-level
//! checks (moved, tampered, retention) are in `runar-runtime/src/seal/tests.rs`. No test calls
//! `Keyring::trust_node`: the nodes learn each other's sealing keys from their hellos.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, key, next};
use runar::codegen::Sealed;
use runar::seal::{KeyPair, Keyring, SealedField};
use runar::{AbstractService, CallKind, Code, LifecycleContext, Node, Streaming};
use tokio::sync::mpsc;

struct UserField;
impl SealedField for UserField {
    const MESSAGE: &'static str = "test.Record";
    const FIELD: u32 = 2;
    const LABEL: &'static str = "user";
}

struct SystemField;
impl SealedField for SystemField {
    const MESSAGE: &'static str = "test.Record";
    const FIELD: u32 = 3;
    const LABEL: &'static str = "system";
}

/// What `runar-build` generates for `message Record { string id = 1; string name = 2
/// [(runar.label) = "user"]; int64 balance = 3 [(runar.label) = "system"]; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(oneof = "Sealed::<String, UserField>", tags = "2")]
    name: Option<Sealed<String, UserField>>,
    #[prost(oneof = "Sealed::<i64, SystemField>", tags = "3")]
    balance: Option<Sealed<i64, SystemField>>,
}

fn record() -> Record {
    Record {
        id: "r1".into(),
        name: Some(Sealed::new("Ada".into())),
        balance: Some(Sealed::new(42)),
    }
}

/// A's service: `records/get` answers the record; `records/keep` answers what it was sent,
/// and tells the test what it could read of it.
struct Records {
    seen: mpsc::UnboundedSender<(bool, bool)>,
}

impl AbstractService for Records {
    fn name(&self) -> &str {
        "Records"
    }
    fn path(&self) -> &str {
        "records"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("get", |_: (), _ctx| async move { Ok(record()) })
            .await?;
        // Server stream: `n` records.
        ctx.register_stream(
            "watch",
            CallKind::ServerStreaming,
            |mut req: Streaming<u32>, _ctx| async move {
                let n = req.message().await?.unwrap_or(0);
                Ok(futures::stream::iter(
                    (0..n).map(|_| Ok::<_, runar::Error>(record())),
                ))
            },
        )
        .await?;
        // Client stream: tells the test what it could read of each record, answers the last.
        let seen = self.seen.clone();
        ctx.register_stream(
            "keep_all",
            CallKind::ClientStreaming,
            move |mut records: Streaming<Record>, _ctx| {
                let seen = seen.clone();
                async move {
                    let mut last = None;
                    while let Some(r) = records.message().await? {
                        seen.send(readable(&r)).unwrap();
                        last = Some(r);
                    }
                    Ok(futures::stream::iter(last.map(Ok::<_, runar::Error>)))
                }
            },
        )
        .await?;
        let seen = self.seen.clone();
        ctx.register_action("keep", move |r: Record, _ctx| {
            let seen = seen.clone();
            async move {
                seen.send(readable(&r)).unwrap();
                Ok(r)
            }
        })
        .await
    }
}

/// Which of `r`'s fields open here: (user, system).
fn readable(r: &Record) -> (bool, bool) {
    (
        r.name.as_ref().is_some_and(|f| f.open().is_ok()),
        r.balance.as_ref().is_some_and(|f| f.open().is_ok()),
    )
}

struct Mesh {
    a: Node,
    b: Node,
    c: Node,
    a_ring: Arc<Keyring>,
    c_ring: Arc<Keyring>,
    seen: mpsc::UnboundedReceiver<(bool, bool)>,
}

async fn sealed_node(name: &str, ring: &Arc<Keyring>, peers: &[&Node]) -> Node {
    let config = common::config(name, "test", &key(), peers).with_key_resolver(ring.clone());
    Node::new(config).await.unwrap()
}

async fn mesh() -> Mesh {
    common::init_tracing();
    let user = KeyPair::generate();
    let system = KeyPair::generate();
    let a_ring = Arc::new(Keyring::new());
    a_ring.seal_to("user", 1, user.public());
    a_ring.seal_to("system", 1, system.public());
    let b_ring = Arc::new(Keyring::new());
    b_ring.hold("system", 1, &system);
    b_ring.seal_to("user", 1, user.public());
    let c_ring = Arc::new(Keyring::new());
    c_ring.hold("user", 1, &user);
    c_ring.hold("system", 1, &system);

    let a = sealed_node("a", &a_ring, &[]).await;
    let (tx, seen) = mpsc::unbounded_channel();
    a.add_service(Records { seen: tx }).await.unwrap();
    a.start().await.unwrap();
    let b = sealed_node("b", &b_ring, &[&a]).await;
    let c = sealed_node("c", &c_ring, &[&a]).await;
    b.start().await.unwrap();
    c.start().await.unwrap();
    for n in [&b, &c] {
        n.wait_for_action("records/get", WAIT).await.unwrap();
    }
    Mesh {
        a,
        b,
        c,
        a_ring,
        c_ring,
        seen,
    }
}

#[tokio::test]
async fn each_node_opens_only_the_labels_it_holds() {
    let m = mesh().await;

    // A local call on A moves the record: nothing sealed.
    let local: Record = m.a.request("records/get", ()).await.unwrap();
    assert_eq!(local.name.unwrap().open().unwrap(), "Ada");
    assert_eq!(m.a.seal_stats().sealed, 0);

    let at_b: Record = m.b.request("records/get", ()).await.unwrap();
    assert_eq!(at_b.id, "r1");
    assert_eq!(*at_b.balance.as_ref().unwrap().open().unwrap(), 42);
    let err = at_b.name.as_ref().unwrap().open().unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let at_c: Record = m.c.request("records/get", ()).await.unwrap();
    assert_eq!(at_c.name.unwrap().open().unwrap(), "Ada");
    assert_eq!(*at_c.balance.unwrap().open().unwrap(), 42);

    // Two responses, two fields each.
    assert_eq!(m.a.seal_stats().sealed, 4);
    assert_eq!(
        (m.b.seal_stats().opened, m.b.seal_stats().kept_sealed),
        (1, 1)
    );
    assert_eq!(m.c.seal_stats().opened, 2);
}

#[tokio::test]
async fn published_records_are_sealed_per_label() {
    let m = mesh().await;
    let mut inboxes = Vec::new();
    for n in [&m.b, &m.c] {
        inboxes.push(opened_records(n, "records/changed").await);
    }
    m.a.wait_for_peers(2, WAIT).await.unwrap();
    // Subscriptions reach A with the peers' capabilities: publish until both are delivered.
    let mut got = Vec::new();
    for rx in &mut inboxes {
        got.push(publish_until_delivered(&m.a, "records/changed", rx).await);
    }
    assert_eq!(got[0], (None, Some(42)), "B opens system only");
    assert_eq!(got[1], (Some("Ada".to_string()), Some(42)), "C opens both");
}

#[tokio::test]
async fn a_record_published_to_one_peer_is_sealed_for_that_peer() {
    // One peer subscribes: the record is sealed for it alone, as for several.
    let m = mesh().await;
    let mut rx = opened_records(&m.b, "records/solo").await;
    m.a.wait_for_peers(2, WAIT).await.unwrap();
    let sealed_before = m.a.seal_stats().sealed;
    let got = publish_until_delivered(&m.a, "records/solo", &mut rx).await;
    assert_eq!(got, (None, Some(42)), "B opens system only");
    assert!(
        m.a.seal_stats().sealed > sealed_before,
        "A sealed the record"
    );
}

/// What a subscriber could open of a record's `name` and `balance`.
type Opened = (Option<String>, Option<i64>);

/// Subscribes `node` to `topic`: what it opens of each record comes out of the receiver.
async fn opened_records(node: &Node, topic: &str) -> mpsc::UnboundedReceiver<Opened> {
    let (tx, rx) = mpsc::unbounded_channel();
    node.subscribe(topic, move |r: Record, _ctx| {
        let tx = tx.clone();
        async move {
            tx.send((
                r.name.unwrap().into_open().ok(),
                r.balance.unwrap().into_open().ok(),
            ))
            .unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    rx
}

/// Publishes the record on `topic` from `node` until `rx` has one (a subscription reaches the
/// publisher some time after it is made).
async fn publish_until_delivered(
    node: &Node,
    topic: &str,
    rx: &mut mpsc::UnboundedReceiver<Opened>,
) -> Opened {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no event delivered");
        node.publish(topic, record()).await.unwrap();
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            return event;
        }
    }
}

#[tokio::test]
async fn a_node_without_the_keys_relays_envelopes_it_cannot_read() {
    let mut m = mesh().await;
    // C sends a record to A, which holds neither label: A reads neither field and answers it
    // back unchanged; C opens both (it trusts its own sealing key).
    let back: Record = m.c.request("records/keep", record()).await.unwrap();
    assert_eq!(next_seen(&mut m.seen).await, (false, false));
    assert_eq!(back.name.unwrap().open().unwrap(), "Ada");
    assert_eq!(*back.balance.unwrap().open().unwrap(), 42);
    assert_eq!(m.a.seal_stats().sealed, 0, "A resealed nothing");
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<(bool, bool)>) -> (bool, bool) {
    next(rx).await
}

#[tokio::test]
async fn after_rotation_and_revocation_new_records_use_the_new_epoch() {
    let m = mesh().await;
    // `system` moves to epoch 2, given to C only; epoch 1 (B's) is revoked at A.
    let system2 = KeyPair::generate();
    m.a_ring.seal_to("system", 2, system2.public());
    m.a_ring.revoke("system", 1);
    m.c_ring.hold("system", 2, &system2);

    let at_b: Record = m.b.request("records/get", ()).await.unwrap();
    let balance = at_b.balance.unwrap();
    assert_eq!(balance.epoch(), Some(2));
    assert_eq!(balance.open().unwrap_err().code(), Code::PermissionDenied);

    let at_c: Record = m.c.request("records/get", ()).await.unwrap();
    assert_eq!(*at_c.balance.unwrap().open().unwrap(), 42);
}

#[tokio::test]
async fn a_server_stream_is_sealed_per_label_and_opened_by_key_holders() {
    let m = mesh().await;
    for n in [&m.b, &m.c] {
        n.wait_for_action("records/watch", WAIT).await.unwrap();
    }

    // A local stream on A moves the records: nothing sealed.
    let mut local =
        m.a.request_stream::<u32, Record>("records/watch", futures::stream::iter([2u32]))
            .await
            .unwrap();
    while let Some(r) = local.message().await.unwrap() {
        assert_eq!(readable(&r), (true, true));
    }
    assert_eq!(m.a.seal_stats().sealed, 0);

    // B holds `system` only; C holds both.
    for (node, expect) in [(&m.b, (false, true)), (&m.c, (true, true))] {
        let mut replies = node
            .request_stream::<u32, Record>("records/watch", futures::stream::iter([3u32]))
            .await
            .unwrap();
        let mut count = 0;
        while let Some(r) = replies.message().await.unwrap() {
            assert_eq!(readable(&r), expect);
            assert_eq!(*r.balance.as_ref().unwrap().open().unwrap(), 42);
            if !expect.0 {
                let err = r.name.as_ref().unwrap().open().unwrap_err();
                assert_eq!(err.code(), Code::PermissionDenied);
            }
            count += 1;
        }
        assert_eq!(count, 3);
    }
    // Six records, two labels each: one envelope (HPKE setup) per label per record.
    let stats = m.a.seal_stats();
    assert_eq!((stats.sealed, stats.envelopes, stats.redacted), (12, 12, 0));
    assert_eq!(
        (m.b.seal_stats().opened, m.b.seal_stats().kept_sealed),
        (3, 3)
    );
    assert_eq!(m.c.seal_stats().opened, 6);
}

#[tokio::test]
async fn a_client_stream_is_sealed_and_relayed_unread() {
    let mut m = mesh().await;
    m.b.wait_for_action("records/keep_all", WAIT).await.unwrap();
    // B seals both labels (it holds `system`, seals `user` to its public key); A holds neither
    // and answers the last record back as it came; B opens `system` only.
    let records = futures::stream::iter((0..3).map(|_| record()));
    let mut replies =
        m.b.request_stream::<Record, Record>("records/keep_all", records)
            .await
            .unwrap();
    let back = replies.message().await.unwrap().unwrap();
    for _ in 0..3 {
        assert_eq!(next_seen(&mut m.seen).await, (false, false));
    }
    assert_eq!(*back.balance.as_ref().unwrap().open().unwrap(), 42);
    let err = back.name.as_ref().unwrap().open().unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(m.b.seal_stats().sealed, 6);
    assert_eq!(m.a.seal_stats().sealed, 0, "A resealed nothing");
    assert_eq!(m.a.seal_stats().kept_sealed, 6);
}

#[tokio::test]
async fn peers_open_each_others_fields_with_announced_keys() {
    common::init_tracing();
    let user = KeyPair::generate();
    let system = KeyPair::generate();
    // X holds `system` and seals `user`; Y holds both. Neither is told the other's key.
    let x_ring = Arc::new(Keyring::new());
    x_ring.hold("system", 1, &system);
    x_ring.seal_to("user", 1, user.public());
    let y_ring = Arc::new(Keyring::new());
    y_ring.hold("user", 1, &user);
    y_ring.hold("system", 1, &system);
    let x = sealed_node("x", &x_ring, &[]).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    x.add_service(Records { seen: tx }).await.unwrap();
    x.start().await.unwrap();
    let y = sealed_node("y", &y_ring, &[&x]).await;
    y.start().await.unwrap();
    y.wait_for_action("records/keep", WAIT).await.unwrap();

    // Y seals both; X opens `system` (Y's key came in Y's hello), not `user`, and answers:
    // `system` resealed by X, `user` passed on as Y sealed it. Y opens both.
    let back: Record = y.request("records/keep", record()).await.unwrap();
    assert_eq!(next_seen(&mut seen).await, (false, true));
    assert_eq!(back.name.unwrap().open().unwrap(), "Ada");
    assert_eq!(*back.balance.unwrap().open().unwrap(), 42);
    assert_eq!(x.seal_stats().refused + y.seal_stats().refused, 0);

    // Announced keys are held per connected peer: X forgets Y's once Y is gone, so identities
    // that come and go cannot grow the map.
    assert_eq!(x.seal_stats().peer_keys, 2, "X's own key and Y's");
    y.stop().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while x.seal_stats().peer_keys != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "X still holds Y's key: {:?}",
            x.seal_stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
