//! The mesh over QUIC on 127.0.0.1: admission by network key, a vanished peer noticed and
//! failed over, the connection limit, and a static peer retried until it comes up.
//! (Requests and events across nodes are in `requests.rs` and `events.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::{key, pair, started, wait_for};
use runar::{Code, DiscoveryOptions, NetworkKey, Node};

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
    let (fixture, _) = Fixture::new("b");
    b.add_service(fixture).await.unwrap();
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
            let (fixture, _) = Fixture::new("c");
            c.add_service(fixture).await.unwrap();
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
    let (fixture, _) = Fixture::new("a");
    a.add_service(fixture).await.unwrap();
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
    let (fixture, _) = Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let up = Instant::now();
    wait_for("b to reach a once it is up", || b.peers() == [a.node_id()]).await;
    println!("static peer reached {:?} after it came up", up.elapsed());
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
