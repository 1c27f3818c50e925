//! The cost of a peer: N nodes in one fresh child process (this binary, `--child scale N MODE`),
//! on one current-thread runtime, every node connected to every other (static peers: node `i`
//! dials nodes `0..i`). The child reports its resident memory, how long the full mesh took to
//! form, and the CPU it spends over a few idle seconds once it has.
//!
//! MODE `alone` starts the same N nodes with no peers, so that the difference is what the
//! connections cost.

use std::process::Command;
use std::time::{Duration, Instant};

use runar::{Node, NodeConfig};

use crate::memory::rss_kib;
use crate::runar_side::network;

/// How long the child stays idle while its CPU time is measured.
pub const IDLE: Duration = Duration::from_secs(5);

/// What one child measured.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// VmRSS once the nodes are up (and meshed), KiB.
    pub rss_kib: u64,
    /// From the first node's start until every node sees all the others.
    pub mesh: Duration,
    /// CPU time (user + system) over [`IDLE`], as a share of one core.
    pub idle_cpu: f64,
}

/// User + system CPU time of this process (from /proc/self/stat, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// Runs in the child: starts `n` nodes, meshed or `alone`, prints what [`Scale`] holds.
pub fn child(n: usize, mode: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let meshed = match mode {
        "mesh" => true,
        "alone" => false,
        other => panic!("unknown scale mode {other}"),
    };
    let (rss, mesh, idle_cpu) = rt.block_on(async {
        let started = Instant::now();
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for i in 0..n {
            let peers = if meshed {
                nodes.iter().filter_map(Node::local_addr).collect()
            } else {
                Vec::new()
            };
            let config =
                NodeConfig::new(format!("scale-{i}"), "bench").with_network_config(network(peers));
            let node = Node::new(config).await.expect("node");
            node.start().await.expect("start");
            nodes.push(node);
        }
        if meshed {
            let deadline = started + Duration::from_secs(120);
            while nodes.iter().any(|node| node.peers().len() + 1 < n) {
                assert!(Instant::now() < deadline, "the mesh did not form in 120 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mesh = started.elapsed();
        // Let the handshakes' buffers and the announcements settle before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib();
        let cpu_before = cpu_time();
        let idle_from = Instant::now();
        tokio::time::sleep(IDLE).await;
        let idle_cpu = (cpu_time() - cpu_before).as_secs_f64() / idle_from.elapsed().as_secs_f64();
        if meshed {
            assert!(
                nodes.iter().all(|node| node.peers().len() + 1 == n),
                "a connection dropped while idle"
            );
        }
        (rss, mesh, idle_cpu)
    });
    println!("{rss} {} {idle_cpu}", mesh.as_micros());
}

/// Runs a child with `n` nodes, meshed or alone.
pub fn measure(n: usize, meshed: bool) -> Scale {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "--child",
            "scale",
            &n.to_string(),
            if meshed { "mesh" } else { "alone" },
        ])
        .output()
        .expect("spawn the child");
    assert!(
        out.status.success(),
        "scale child ({n} nodes) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let mut next = || fields.next().expect("three figures from the child");
    Scale {
        rss_kib: next().parse().expect("rss"),
        mesh: Duration::from_micros(next().parse().expect("mesh time")),
        idle_cpu: next().parse().expect("idle cpu"),
    }
}
