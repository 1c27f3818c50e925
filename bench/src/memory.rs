//! Resident memory, each number from a fresh child process (this binary, `--child mem KIND`),
//! so that nothing measured before pollutes it.

use std::process::Command;
use std::time::Duration;

use runar::{Node, NodeConfig};

use crate::runar_side::{BenchService, network};

pub const KINDS: [(&str, &str); 5] = [
    (
        "bare",
        "process with a current-thread tokio runtime (baseline)",
    ),
    (
        "node",
        "one Runar node, started, QUIC endpoint bound, no services",
    ),
    ("node-1000", "one Runar node with 1,000 registered actions"),
    (
        "pair",
        "two Runar nodes connected over QUIC, one echo service",
    ),
    (
        "tonic",
        "tonic server + connected client over TLS, one service",
    ),
];

/// VmRSS of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Runs in the child: sets up `kind`, lets it settle, prints its RSS in KiB.
pub fn child(kind: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rss = rt.block_on(async {
        let mut keep: Vec<Node> = Vec::new();
        let mut _tonic = None;
        match kind {
            "bare" => {}
            "node" | "node-1000" => {
                let node =
                    Node::new(NodeConfig::new("mem", "bench").with_network_config(network(vec![])))
                        .await
                        .expect("node");
                if kind == "node-1000" {
                    // `bench/echo` plus 999 padding actions.
                    node.add_service(BenchService { extra: 999 })
                        .await
                        .expect("service");
                }
                node.start().await.expect("start");
                keep.push(node);
            }
            "pair" => {
                let pair = crate::runar_side::connect().await;
                keep.push(pair.client);
                keep.push(pair.server);
            }
            "tonic" => _tonic = Some(crate::tonic_side::connect(true).await),
            other => panic!("unknown memory kind {other}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        rss_kib()
    });
    println!("{rss}");
}

/// RSS in KiB of a child process set up as `kind`.
pub fn measure(kind: &str) -> u64 {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--child", "mem", kind])
        .output()
        .expect("spawn the child");
    assert!(
        out.status.success(),
        "child {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child's RSS")
}
