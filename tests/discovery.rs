//! Automatic discovery at the node level: memory hub, multicast on loopback, registry events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::{WAIT, key, wait_for};
use runar::{DiscoveryOptions, MemoryHub, Node, PeerEvent};
use tokio::sync::mpsc;

async fn serving(name: &'static str, discovery: DiscoveryOptions) -> Node {
    let node = common::node(name, &key(), discovery).await;
    node.add_service(Fixture::new(name).0).await.unwrap();
    node.start().await.unwrap();
    node
}

#[tokio::test]
async fn memory_hub_nodes_connect_and_report_registry_events() {
    common::init_tracing();
    let hub = MemoryHub::new();
    let watcher = common::node("watcher", &key(), DiscoveryOptions::memory(&hub)).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    watcher
        .subscribe("$registry/peer/{id}/{change}", move |e: PeerEvent, ctx| {
            let tx = tx.clone();
            async move {
                assert_eq!(ctx.param("id"), Some(e.node_id.as_str()));
                tx.send((ctx.param("change").unwrap().to_owned(), e.node_id, e.name))
                    .unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    watcher.start().await.unwrap();
    let b = serving("b", DiscoveryOptions::memory(&hub)).await;
    let c = serving("c", DiscoveryOptions::memory(&hub)).await;
    wait_for("all three connected", || {
        watcher.peers().len() == 2 && b.peers().len() == 2 && c.peers().len() == 2
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(watcher.request::<(), String>("echo/who", ()).await.unwrap());
    }
    assert_eq!(seen.len(), 2);

    let mut events = Vec::new();
    while events.len() < 4 {
        events.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for node in [&b, &c] {
        let id = node.node_id().to_string();
        assert!(
            events
                .iter()
                .any(|(ch, i, _)| ch == "discovered" && *i == id),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(ch, i, n)| ch == "connected" && *i == id && n == node.name())
        );
    }

    // A goodbye removes the peer at once.
    let stopped = Instant::now();
    let stopping = tokio::spawn({
        let c = c.clone();
        async move { c.stop().await }
    });
    wait_for("c to leave", || watcher.peers().len() == 1).await;
    println!("goodbye to removal: {:?}", stopped.elapsed());
    assert!(stopped.elapsed() < Duration::from_millis(500));
    stopping.await.unwrap().unwrap();
    let (change, id, _) = loop {
        let e = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if e.0 != "discovered" && e.0 != "connected" {
            break e;
        }
    };
    assert_eq!(
        (change.as_str(), id),
        ("disconnected", c.node_id().to_string())
    );
    for _ in 0..3 {
        assert_eq!(
            watcher.request::<(), String>("echo/who", ()).await.unwrap(),
            "b"
        );
    }
    b.stop().await.unwrap();
    watcher.stop().await.unwrap();
}

#[tokio::test]
async fn multicast_nodes_find_each_other_and_a_goodbye_is_fast() {
    common::init_tracing();
    let group = common::multicast();
    let started = Instant::now();
    let a = serving("a", group.clone()).await;
    let b = serving("b", group.clone()).await;
    wait_for("a and b connected", || {
        a.peers().len() == 1 && b.peers().len() == 1
    })
    .await;
    println!("two nodes connected {:?} after start", started.elapsed());
    assert_eq!(a.request::<(), String>("echo/who", ()).await.unwrap(), "a");
    // b's instance is reachable from a by its own node's view: b answers for itself.
    assert_eq!(b.request::<(), String>("echo/who", ()).await.unwrap(), "b");

    let stopped = Instant::now();
    let stopping = tokio::spawn({
        let b = b.clone();
        async move { b.stop().await }
    });
    wait_for("b to leave", || a.peers().is_empty()).await;
    println!("goodbye to removal: {:?}", stopped.elapsed());
    assert!(stopped.elapsed() < Duration::from_millis(500));
    stopping.await.unwrap().unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_over_multicast_all_see_each_other() {
    common::init_tracing();
    let group = common::multicast();
    let started = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..20 {
        let node = common::node(&format!("n{i}"), &key(), group.clone()).await;
        node.start().await.unwrap();
        nodes.push(node);
    }
    let all_started = started.elapsed();
    let deadline = Instant::now() + WAIT;
    while nodes.iter().any(|n| n.peers().len() < 19) {
        assert!(Instant::now() < deadline, "not everyone connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    println!("20 nodes: started in {all_started:?}, fully connected (190 links) after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    for result in futures::future::join_all(nodes.iter().map(|n| n.stop())).await {
        result.unwrap();
    }
}

/// As the API contract shows it: bound to 127.0.0.1, multicast with the default interface
/// choice (no `multicast_interface`): discovery follows the bind address onto loopback.
#[tokio::test]
async fn nodes_bound_to_loopback_discover_each_other_with_default_interfaces() {
    common::init_tracing();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = DiscoveryOptions::multicast(format!("239.255.42.98:{port}"));
    let a = serving("a", group.clone()).await;
    let b = serving("b", group).await;
    wait_for("a and b connected", || {
        a.peers().len() == 1 && b.peers().len() == 1
    })
    .await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
