//! A node dropped without `stop` shuts down as `stop` would: its sockets and tasks go with it.
//! Alone in its binary, so that no other test opens or closes descriptors meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use runar::{DiscoveryOptions, MemoryHub};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_nodes_leave_no_file_descriptors_behind() {
    common::init_tracing();
    let key = common::key();
    // Warm up what the runtime and the test harness open once.
    let warm = common::node("warm", &key, DiscoveryOptions::none()).await;
    warm.start().await.unwrap();
    warm.stop().await.unwrap();
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_fds();

    // Networked, started, connected to each other (a memory hub), dropped without `stop`.
    let hub = MemoryHub::new();
    let mut nodes = Vec::new();
    for i in 0..100 {
        let node = common::node(&format!("n{i}"), &key, DiscoveryOptions::memory(&hub)).await;
        node.start().await.unwrap();
        nodes.push(node);
        if nodes.len() == 10 {
            common::wait_for("ten nodes connected", || {
                nodes.iter().all(|n| n.peers().len() >= 9)
            })
            .await;
            nodes.clear();
        }
    }
    let during = open_fds();
    let dropped = Instant::now();
    let deadline = Duration::from_secs(10);
    while open_fds() > before {
        assert!(
            dropped.elapsed() < deadline,
            "{} descriptors still open {deadline:?} after the nodes were dropped (before: {before}, \
             with the last ten nodes: {during})",
            open_fds() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "100 dropped nodes: descriptors back to {before} after {:?}",
        dropped.elapsed()
    );
    assert!(hub.is_empty(), "dropped nodes left the memory hub");
}
