//! Network transparency over QUIC on 127.0.0.1: remote requests and events between real nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{WAIT, key, started, wait_for, wait_for_action};
use runar::{
    AbstractService, BroadcastMode, Caller, Code, DiscoveryOptions, Error, LifecycleContext,
    NetworkKey, Node, PublishOptions, RequestOptions, SubscribeOptions,
};
use tokio::sync::mpsc;

/// Answers with the name of the node it runs on, plus behaviours for the tests.
struct Echo {
    node_name: &'static str,
    calls: Arc<AtomicUsize>,
    dropped: mpsc::UnboundedSender<&'static str>,
}

/// Sends a message when the handler's future is dropped (completed or cancelled).
struct DropSignal(mpsc::UnboundedSender<&'static str>, &'static str);
impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl AbstractService for Echo {
    fn name(&self) -> &str {
        "Echo"
    }
    fn path(&self) -> &str {
        "echo"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let (name, calls) = (self.node_name, self.calls.clone());
        ctx.register_action("who", move |_: (), _| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(name.to_string()) }
        })
        .await?;
        ctx.register_action("caller", |_: (), ctx| async move {
            Ok(match ctx.caller() {
                Caller::Remote(id) => id.to_string(),
                _ => "local".to_string(),
            })
        })
        .await?;
        ctx.register_action("fail", |_: (), _| async {
            Err::<(), _>(Error::new(Code::NotFound, "no item 7"))
        })
        .await?;
        ctx.register_action("panic", |_: (), _| async {
            if true {
                panic!("remote handler bug");
            }
            Ok(())
        })
        .await?;
        ctx.register_action("sleep", |ms: u64, _| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .await?;
        let dropped = self.dropped.clone();
        ctx.register_action("hang", move |_: (), _| {
            let guard = DropSignal(dropped.clone(), "hang dropped");
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .await?;
        ctx.register_action("blob", |n: u64, _| async move { Ok(vec![7u8; n as usize]) })
            .await?;
        ctx.register_action("len", |b: Vec<u8>, _| async move { Ok(b.len() as u64) })
            .await?;
        ctx.register_action("items/{id}", |_: (), ctx| async move {
            Ok(format!("item {}", ctx.param("id").unwrap_or("?")))
        })
        .await
    }
}

fn echo(
    node_name: &'static str,
) -> (
    Echo,
    Arc<AtomicUsize>,
    mpsc::UnboundedReceiver<&'static str>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (dropped, rx) = mpsc::unbounded_channel();
    (
        Echo {
            node_name,
            calls: calls.clone(),
            dropped,
        },
        calls,
        rx,
    )
}

/// Server node `a` with the Echo service, client node `b` connected to it.
async fn pair() -> (Node, Node, mpsc::UnboundedReceiver<&'static str>) {
    common::init_tracing();
    let key = key();
    let a = common::node("a", &key, DiscoveryOptions::none()).await;
    let (svc, _, dropped) = echo("a");
    a.add_service(svc).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key, &[&a]).await;
    wait_for("b to connect to a", || b.peers() == [a.node_id()]).await;
    (a, b, dropped)
}

#[tokio::test]
async fn remote_requests_keep_types_errors_and_identity() {
    let (a, b, _) = pair().await;
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    let item: String = b.request("echo/items/42", ()).await.unwrap();
    assert_eq!(item, "item 42");
    // The server sees the caller's key-derived id, never a self-declared one.
    let caller: String = b.request("echo/caller", ()).await.unwrap();
    assert_eq!(caller, b.node_id().to_string());

    let err = b.request::<(), ()>("echo/fail", ()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no item 7"));
    let err = b.request::<(), ()>("echo/panic", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("remote handler bug"), "{err}");
    let err = b.request::<(), ()>("echo/nothing", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A wrong request type is refused by the server's decoder, with the code preserved.
    let err = b
        .request::<String, u64>("echo/sleep", "not a number".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    // And the connection still serves.
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_remote_timeout_gives_deadline_exceeded_and_cancels_the_handler() {
    let (a, b, mut dropped) = pair().await;
    let started = Instant::now();
    let err = b
        .request_with::<(), ()>(
            "echo/hang",
            (),
            RequestOptions::timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The remote handler's future is dropped: the cancellation crossed the network.
    let got = tokio::time::timeout(WAIT, dropped.recv()).await.unwrap();
    assert_eq!(got, Some("hang dropped"));

    // Dropping the caller's future cancels the remote handler too.
    let caller = b.clone();
    let call = tokio::spawn(async move { caller.request::<(), ()>("echo/hang", ()).await });
    // Let the request reach the server before giving up on it.
    let _: u64 = b.request("echo/sleep", 50u64).await.unwrap();
    call.abort();
    let got = tokio::time::timeout(WAIT, dropped.recv()).await.unwrap();
    assert_eq!(got, Some("hang dropped"));
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_connection_do_not_wait_for_each_other() {
    let (a, b, _) = pair().await;
    let started = Instant::now();
    let calls = (0..200).map(|_| {
        let b = b.clone();
        async move { b.request::<u64, u64>("echo/sleep", 100).await }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|v| *v == 100)));
    println!("200 concurrent 100 ms requests took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_gives_resource_exhausted_and_the_connection_survives() {
    let (a, b, _) = pair().await;
    let big = vec![1u8; 5 * 1024 * 1024]; // over the 4 MiB default
    let err = b
        .request::<Vec<u8>, u64>("echo/len", big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let err = b
        .request::<u64, Vec<u8>>("echo/blob", 5 * 1024 * 1024)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Large but allowed messages pass, and the connection carries on.
    let n: u64 = b
        .request("echo/len", vec![1u8; 3 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(n, 3 * 1024 * 1024);
    let blob: Vec<u8> = b.request("echo/blob", 1_000_000u64).await.unwrap();
    assert_eq!(blob.len(), 1_000_000);
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[runar::service(path = "calc")]
trait Calc {
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64>;
    async fn divide(&self, a: f64, b: f64) -> runar::Result<f64>;
}

struct Calculator;

impl Calc for Calculator {
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }
    async fn divide(&self, a: f64, b: f64) -> runar::Result<f64> {
        if b == 0.0 {
            return Err(Error::new(Code::InvalidArgument, "division by zero"));
        }
        Ok(a / b)
    }
}

#[tokio::test]
async fn a_generated_client_calls_a_remote_macro_service() {
    common::init_tracing();
    let key = key();
    let a = common::node("a", &key, DiscoveryOptions::none()).await;
    a.add_service(CalcServer::new(Calculator)).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key, &[&a]).await;
    wait_for_action(&b, "calc/add").await;
    let calc = CalcClient::new(b.clone());
    assert_eq!(calc.add(1.5, 2.0).await.unwrap(), 3.5);
    let err = calc.divide(1.0, 0.0).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "division by zero")
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_service_added_after_start_is_callable_remotely_and_leaves_when_removed() {
    let (a, b, _) = pair().await;
    let added = Instant::now();
    a.add_service(CalcServer::new(Calculator)).await.unwrap();
    // add_service returns once connected peers have acknowledged the change.
    let sum: f64 = b
        .request("calc/add", CalcAddRequest { a: 1.0, b: 2.0 })
        .await
        .unwrap();
    assert_eq!(sum, 3.0);
    println!("late service callable remotely after {:?}", added.elapsed());
    assert!(added.elapsed() < Duration::from_secs(1));
    a.remove_service("calc").await.unwrap();
    let err = b
        .request::<_, f64>("calc/add", CalcAddRequest { a: 1.0, b: 2.0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn events_cross_nodes_with_the_publisher_identity_and_retained_replay() {
    let (a, b, _) = pair().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    // Subscribing returns once peers know of the subscription.
    b.subscribe("news/{kind}", move |text: String, ctx| {
        let tx = tx.clone();
        async move {
            let from = match ctx.publisher() {
                Caller::Remote(id) => id.to_string(),
                _ => "local".into(),
            };
            tx.send((ctx.param("kind").unwrap().to_owned(), text, from))
                .unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    for i in 0..20 {
        a.publish("news/sport", format!("goal {i}")).await.unwrap();
    }
    for i in 0..20 {
        let (kind, text, from) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (kind.as_str(), text),
            ("sport", format!("goal {i}")),
            "in order"
        );
        assert_eq!(from, a.node_id().to_string());
    }

    // Retained on a, replayed to a subscription made later on b.
    let retain = PublishOptions::default().with_retain_for(Duration::from_secs(60));
    a.publish_with("status/a", String::from("ready"), retain)
        .await
        .unwrap();
    b.subscribe_with(
        "status/>",
        SubscribeOptions::include_past(),
        move |s: String, ctx| {
            let tx = tx2.clone();
            async move {
                tx.send((ctx.topic().to_owned(), s, ctx.is_retained().to_string()))
                    .unwrap();
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("status/a".into(), "ready".into(), "true".into()));
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Three nodes: `a` the client; `b` and `c` both host Echo.
async fn trio() -> (Node, Node, Node, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    common::init_tracing();
    let key = key();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    let (svc, b_calls, _) = echo("b");
    b.add_service(svc).await.unwrap();
    b.start().await.unwrap();
    let c = common::node("c", &key, DiscoveryOptions::none()).await;
    let (svc, c_calls, _) = echo("c");
    c.add_service(svc).await.unwrap();
    c.start().await.unwrap();
    let a = started("a", &key, &[&b, &c]).await;
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;
    (a, b, c, b_calls, c_calls)
}

#[tokio::test]
async fn round_robin_splits_calls_and_a_local_instance_wins() {
    let (a, b, c, b_calls, c_calls) = trio().await;
    let mut count = std::collections::HashMap::new();
    for _ in 0..100 {
        let who: String = a.request("echo/who", ()).await.unwrap();
        *count.entry(who).or_insert(0usize) += 1;
    }
    let (nb, nc) = (count["b"], count["c"]);
    assert!(
        nb.abs_diff(50) <= 1 && nc.abs_diff(50) <= 1,
        "b {nb}, c {nc}"
    );

    // b has its own instance: it never calls out.
    wait_for("b to know a", || b.peers().contains(&a.node_id())).await;
    let c_before = c_calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        let who: String = b.request("echo/who", ()).await.unwrap();
        assert_eq!(who, "b");
    }
    assert_eq!(c_calls.load(Ordering::SeqCst), c_before);
    assert_eq!(b_calls.load(Ordering::SeqCst), nb + 50);
    for n in [&a, &b, &c] {
        n.stop().await.unwrap();
    }
}

/// A service `path` whose subscription to `orders/created` reports `(node, path)`.
struct Listener {
    node_name: &'static str,
    path: &'static str,
    tx: mpsc::UnboundedSender<(&'static str, &'static str)>,
}

impl AbstractService for Listener {
    fn name(&self) -> &str {
        self.path
    }
    fn path(&self) -> &str {
        self.path
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let (node, path, tx) = (self.node_name, self.path, self.tx.clone());
        ctx.subscribe("orders/created", move |_: u64, _| {
            let tx = tx.clone();
            async move {
                tx.send((node, path)).unwrap();
                Ok(())
            }
        })
        .await
        .map(|_| ())
    }
}

#[tokio::test]
async fn broadcast_modes_across_three_nodes() {
    common::init_tracing();
    let key = key();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    b.add_service(Listener {
        node_name: "b",
        path: "billing",
        tx: tx.clone(),
    })
    .await
    .unwrap();
    b.start().await.unwrap();
    let c = common::node("c", &key, DiscoveryOptions::none()).await;
    c.add_service(Listener {
        node_name: "c",
        path: "billing",
        tx: tx.clone(),
    })
    .await
    .unwrap();
    c.add_service(Listener {
        node_name: "c",
        path: "shipping",
        tx: tx.clone(),
    })
    .await
    .unwrap();
    c.start().await.unwrap();
    let a = started("a", &key, &[&b, &c]).await;
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;

    let mut collect = async |n: usize| {
        let mut got = std::collections::HashMap::new();
        for _ in 0..n {
            let key = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            *got.entry(key).or_insert(0) += 1;
        }
        got
    };

    // All: every subscription on every node.
    for _ in 0..10 {
        a.publish("orders/created", 1u64).await.unwrap();
    }
    let got = collect(30).await;
    assert_eq!(got[&("b", "billing")], 10);
    assert_eq!(got[&("c", "billing")], 10);
    assert_eq!(got[&("c", "shipping")], 10);

    // OnePerService: exactly one billing instance per event, rotating; shipping every time.
    let one = PublishOptions::default().with_broadcast(BroadcastMode::OnePerService);
    for _ in 0..10 {
        a.publish_with("orders/created", 2u64, one.clone())
            .await
            .unwrap();
    }
    let got = collect(20).await;
    assert_eq!(
        got[&("b", "billing")] + got[&("c", "billing")],
        10,
        "{got:?}"
    );
    assert_eq!(got[&("b", "billing")], 5, "rotates: {got:?}");
    assert_eq!(got[&("c", "shipping")], 10);

    // LocalOnly from a: a has no subscribers, so nothing arrives; a control event proves it.
    let local = PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly);
    a.publish_with("orders/created", 3u64, local).await.unwrap();
    c.publish_with(
        "orders/created",
        4u64,
        PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly),
    )
    .await
    .unwrap();
    let got = collect(2).await;
    assert_eq!(got.get(&("b", "billing")), None, "{got:?}");
    assert!(rx.try_recv().is_err());
    for n in [&a, &b, &c] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_node_with_the_wrong_key_is_refused() {
    let (a, b, _) = pair().await;
    let intruder = started("intruder", &NetworkKey::from_secret("wrong secret"), &[&a]).await;
    // A legitimate node that dials after the intruder is admitted; the intruder still is not.
    let late = started("late", &key(), &[&a]).await;
    wait_for("late to connect", || late.peers() == [a.node_id()]).await;
    assert!(intruder.peers().is_empty());
    assert!(!a.peers().contains(&intruder.node_id()));
    let err = intruder
        .request::<(), String>("echo/who", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    for n in [&intruder, &late, &b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_vanished_node_is_removed_within_three_seconds_and_calls_fail_over() {
    common::init_tracing();
    let key = key();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    let (svc, _, _) = echo("b");
    b.add_service(svc).await.unwrap();
    b.start().await.unwrap();

    // c runs on a runtime of its own, so it can vanish without `stop` (no goodbye, no close).
    let (c_tx, c_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let c_key = key.clone();
    let c_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = common::node("c", &c_key, DiscoveryOptions::none()).await;
            let (svc, _, _) = echo("c");
            c.add_service(svc).await.unwrap();
            c.start().await.unwrap();
            c_tx.send((c.local_addr().unwrap(), c.node_id())).unwrap();
            // Keep serving until told to vanish.
            tokio::task::spawn_blocking(move || kill_rx.recv())
                .await
                .unwrap()
                .ok();
            std::mem::forget(c);
        });
        rt.shutdown_background();
    });
    let (c_addr, c_id) = c_rx.recv().unwrap();

    let a = common::node(
        "a",
        &key,
        DiscoveryOptions::static_peers([b.local_addr().unwrap(), c_addr]),
    )
    .await;
    a.start().await.unwrap();
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(a.request::<(), String>("echo/who", ()).await.unwrap());
    }
    assert_eq!(seen.len(), 2);

    kill_tx.send(()).unwrap();
    c_thread.join().unwrap();
    let vanished = Instant::now();
    wait_for("c to be removed", || !a.peers().contains(&c_id)).await;
    let took = vanished.elapsed();
    println!("vanished peer removed after {took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    for _ in 0..10 {
        let who: String = a.request("echo/who", ()).await.unwrap();
        assert_eq!(who, "b");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn max_connections_refuses_the_excess() {
    common::init_tracing();
    let key = key();
    let a = Node::new(runar::NodeConfig::new("a", "test").with_network_config(
        common::network(&key, DiscoveryOptions::none()).with_max_connections(1),
    ))
    .await
    .unwrap();
    let (svc, _, _) = echo("a");
    a.add_service(svc).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key, &[&a]).await;
    wait_for("b to connect", || b.peers().len() == 1).await;
    let c = started("c", &key, &[&a]).await;
    let d = started("d", &key, &[&a]).await;
    wait_for("d to connect to nobody (refused)", || d.peers().is_empty()).await;
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    assert!(c.request::<(), String>("echo/who", ()).await.is_err());
    assert_eq!(a.peers(), [b.node_id()]);
    for n in [&d, &c, &b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_static_peer_that_is_down_is_retried_until_it_comes_up() {
    common::init_tracing();
    let key = key();
    // An address nobody listens on yet.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = common::node("b", &key, DiscoveryOptions::static_peers([addr])).await;
    b.start().await.unwrap();
    // Let a few attempts fail (backoff 100 ms, 200 ms, ...).
    let _: () = tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.peers().is_empty());

    let a = runar::Node::new(runar::NodeConfig::new("a", "test").with_network_config(
        common::network(&key, DiscoveryOptions::none()).with_bind_address(addr),
    ))
    .await
    .unwrap();
    let (svc, _, _) = echo("a");
    a.add_service(svc).await.unwrap();
    a.start().await.unwrap();
    let up = Instant::now();
    wait_for("b to reach a once it is up", || b.peers() == [a.node_id()]).await;
    println!("static peer reached {:?} after it came up", up.elapsed());
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
