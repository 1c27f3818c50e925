//! Requests, on one node and across nodes over QUIC on 127.0.0.1: routing and templates,
//! bounded paths, timeouts and cancellation, handler errors and panics, wrong types, message size limits,
//! concurrency on one connection, load balancing, and a generated client calling remotely.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fixture::{Fixture, Probe};
use common::{WAIT, key, next, pair, serving_fixture, started, wait_for, wait_for_action};
use runar::{Code, DiscoveryOptions, Error, Node, NodeConfig, RequestOptions};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// On one node

async fn local(config: NodeConfig) -> Node {
    serving_fixture(config).await.0
}

/// A local node with no services, not started.
async fn node() -> Node {
    Node::new(NodeConfig::new("test-node", "test"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_slow_handler_gives_deadline_exceeded_shortly_after_the_timeout() {
    let node =
        local(NodeConfig::new("n", "test").with_request_timeout(Duration::from_millis(200))).await;
    // The node's default timeout.
    let started = Instant::now();
    let err = node
        .request::<u64, u64>("echo/sleep", 10_000)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");

    // A per-call timeout overrides it, both ways.
    let started = Instant::now();
    let err = node
        .request_with::<u64, u64>(
            "echo/sleep",
            10_000,
            RequestOptions::timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(1500));
    let ok: u64 = node
        .request_with(
            "echo/sleep",
            300u64,
            RequestOptions::timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(ok, 300);
}

#[tokio::test]
async fn a_missing_path_fails_at_once_with_not_found() {
    let node = local(NodeConfig::new("n", "test")).await; // 30 s default timeout
    let started = Instant::now();
    let err = node
        .request::<(), ()>("echo/nothing", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("echo/nothing"), "{err}");
    let err = node.request::<(), ()>("nobody/home", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = node
        .request::<(), ()>("other:echo/count", ())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another network has no such action"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_paths_give_invalid_argument() {
    let node = local(NodeConfig::new("n", "test")).await;
    for bad in [
        "",
        "echo//count",
        "echo/count/",
        "a:b:c",
        "echo/*",
        "echo/>",
    ] {
        let err = node.request::<(), ()>(bad, ()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    let err = node.publish("x/{y}", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = node
        .subscribe("x/>/y", |_: (), _| async { Ok(()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_handler_error_keeps_its_code_and_message() {
    let node = local(NodeConfig::new("n", "test")).await;
    let err = node.request::<(), ()>("echo/fail", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no item 7");
}

#[tokio::test]
async fn a_panicking_handler_gives_internal_and_the_node_keeps_serving() {
    let node = local(NodeConfig::new("n", "test")).await;
    let err = node
        .request::<String, ()>("echo/panic", "handler bug".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("handler bug"), "{err}");
    let n: u64 = node.request("echo/count", ()).await.unwrap();
    assert_eq!(n, 1);
    let err = node
        .request::<String, ()>("echo/panic", "handler bug".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let n: u64 = node.request("echo/count", ()).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn templates_pass_parameters_and_literals_win() {
    let node = local(NodeConfig::new("n", "test")).await;
    let s: String = node.request("echo/items/42", ()).await.unwrap();
    assert_eq!(s, "item 42");
    let s: String = node.request("echo/items/special", ()).await.unwrap();
    assert_eq!(s, "special");
    let s: String = node.request("test:echo/where", ()).await.unwrap();
    assert_eq!(s, "echo/where");
}

#[tokio::test]
async fn a_wrong_request_type_is_invalid_argument() {
    let node = local(NodeConfig::new("n", "test")).await;
    // `echo/items/{id}` takes `()`: a string is a different schema, but an empty message
    // decodes as anything, so send something that cannot be `u64`-shaped for `echo/sleep`.
    let err = node
        .request::<String, u64>("echo/sleep", "not a number".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Bounded paths

#[tokio::test]
async fn paths_over_the_length_or_depth_limit_give_invalid_argument() {
    let node = node().await;
    node.start().await.unwrap();
    // 400,001 bytes and 200,001 segments: refused before anything walks it.
    let huge = format!("{}a", "a/".repeat(200_000));
    let deep = vec!["s"; 33].join("/"); // short, but one segment over the default 32
    for path in [&huge, &deep] {
        let e = node
            .subscribe(path.as_str(), |_: u64, _| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = node.publish(path.as_str(), 1u64).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = node
            .request::<u64, u64>(path.as_str(), 1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }
    let e = node
        .subscribe(huge.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(e.message().contains("max_path_len"), "{e}");
    assert!(e.message().len() < 200, "the error quotes only the start");
    let e = node
        .subscribe(deep.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(e.message().contains("max_path_depth"), "{e}");
    // At the limit is fine.
    node.subscribe(vec!["s"; 32].join("/"), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.stop().await.unwrap();

    let e = Node::new(NodeConfig::new("n", "test").with_path_limits(0, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// With the limits raised, a 200,000-segment subscription is routed, removed and dropped with
/// the node: nothing on the way recurses once per segment.
#[tokio::test]
async fn deep_paths_within_raised_limits_route_and_drop_without_overflow() {
    let config = NodeConfig::new("deep", "test").with_path_limits(1 << 20, 300_000);
    let node = Node::new(config).await.unwrap();
    node.start().await.unwrap();
    let pattern = format!("{}>", "a/".repeat(199_999));
    let topic = format!("{}a", "a/".repeat(200_000));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = node
        .subscribe(pattern.as_str(), move |n: u64, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
                Ok(())
            }
        })
        .await
        .unwrap();
    node.publish(topic.as_str(), 7u64).await.unwrap();
    assert_eq!(next(&mut rx).await, 7);
    node.unsubscribe(sub).await.unwrap();
    // Left in place: stopping the node drops the registry with them.
    node.subscribe(pattern.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.subscribe(topic.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.stop().await.unwrap();
    drop(node);
}

// ---------------------------------------------------------------------------------------------
// Across nodes

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
    let err = b
        .request::<String, ()>("echo/panic", "remote handler bug".into())
        .await
        .unwrap_err();
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
    let (a, b, mut probe) = pair().await;
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
    let got = tokio::time::timeout(WAIT, probe.dropped.recv())
        .await
        .unwrap();
    assert_eq!(got, Some("hang dropped"));

    // Dropping the caller's future cancels the remote handler too.
    let caller = b.clone();
    let call = tokio::spawn(async move { caller.request::<(), ()>("echo/hang", ()).await });
    // Let the request reach the server before giving up on it.
    let _: u64 = b.request("echo/sleep", 50u64).await.unwrap();
    call.abort();
    let got = tokio::time::timeout(WAIT, probe.dropped.recv())
        .await
        .unwrap();
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

/// Three nodes: `a` the client; `b` and `c` both serve a fixture named after their node.
async fn trio() -> (Node, Node, Node, Probe, Probe) {
    common::init_tracing();
    let key = key();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    let (fixture, b_probe) = Fixture::new("b");
    b.add_service(fixture).await.unwrap();
    b.start().await.unwrap();
    let c = common::node("c", &key, DiscoveryOptions::none()).await;
    let (fixture, c_probe) = Fixture::new("c");
    c.add_service(fixture).await.unwrap();
    c.start().await.unwrap();
    let a = started("a", &key, &[&b, &c]).await;
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;
    (a, b, c, b_probe, c_probe)
}

#[tokio::test]
async fn round_robin_splits_calls_and_a_local_instance_wins() {
    let (a, b, c, b_probe, c_probe) = trio().await;
    let (b_calls, c_calls) = (b_probe.calls, c_probe.calls);
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

// ---------------------------------------------------------------------------------------------
// A generated client, across nodes

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
