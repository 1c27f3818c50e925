//! Helpers shared by the multi-node tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

pub mod counted;
pub mod fixture;
pub mod process;
pub mod raw;
pub mod udp_proxy;

use std::time::{Duration, Instant};

use fixture::{Fixture, Probe};
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};
use tokio::sync::mpsc;

/// Generous: conditions normally hold within milliseconds; this only bounds a failure.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn key() -> NetworkKey {
    NetworkKey::from_secret("runar test network secret")
}

pub fn network(key: &NetworkKey, discovery: DiscoveryOptions) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(key.clone())
        .with_discovery(discovery)
}

/// A node on 127.0.0.1 with `discovery`, not started.
pub async fn node(name: &str, key: &NetworkKey, discovery: DiscoveryOptions) -> Node {
    Node::new(NodeConfig::new(name, "test").with_network_config(network(key, discovery)))
        .await
        .unwrap()
}

/// The configuration of a node `name` of `network` (keyed with `key`) on 127.0.0.1 that dials
/// `peers` (no discovery when there are none).
pub fn config(name: &str, network: &str, key: &NetworkKey, peers: &[&Node]) -> NodeConfig {
    let addrs: Vec<_> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    let discovery = if addrs.is_empty() {
        DiscoveryOptions::none()
    } else {
        DiscoveryOptions::static_peers(addrs)
    };
    NodeConfig::new(name, network).with_network_config(self::network(key, discovery))
}

/// A started node of network `test` that dials `peers`.
pub async fn started(name: &str, key: &NetworkKey, peers: &[&Node]) -> Node {
    let n = Node::new(config(name, "test", key, peers)).await.unwrap();
    n.start().await.unwrap();
    n
}

/// Polls `condition` until it holds, failing the test after [`WAIT`].
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A started node (local-only unless `config` says otherwise) serving a [`Fixture`] named
/// after the node.
pub async fn serving_fixture(config: NodeConfig) -> (Node, Probe) {
    let node = Node::new(config).await.unwrap();
    let (fixture, probe) = Fixture::new("local");
    node.add_service(fixture).await.unwrap();
    node.start().await.unwrap();
    (node, probe)
}

/// Server node `a` serving a [`Fixture`] named `"a"`, and client node `b` connected to it.
pub async fn pair() -> (Node, Node, Probe) {
    init_tracing();
    let key = key();
    let a = node("a", &key, DiscoveryOptions::none()).await;
    let (fixture, probe) = Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key, &[&a]).await;
    wait_for("b to connect to a", || b.peers() == [a.node_id()]).await;
    (a, b, probe)
}

/// Receives the next item, failing the test after [`WAIT`].
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting")
        .expect("channel closed")
}

/// The next drop a fixture reports (see [`Probe::dropped`]), failing the test after [`WAIT`].
pub async fn next_dropped(probe: &mut Probe) -> &'static str {
    tokio::time::timeout(WAIT, probe.dropped.recv())
        .await
        .expect("timed out waiting for a drop")
        .expect("channel closed")
}

/// Waits until `node` routes `path` (to a local or a remote instance).
pub async fn wait_for_action(node: &Node, path: &str) {
    wait_for(&format!("{path} on {}", node.name()), || {
        node.actions().iter().any(|a| a == path)
    })
    .await;
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A multicast group on a port nobody else uses, so parallel tests do not hear each other,
/// pinned to the loopback interface.
pub fn multicast() -> DiscoveryOptions {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.255.{}.{}:{port}", port >> 8, port & 0xff);
    DiscoveryOptions::multicast(group).multicast_interface(std::net::Ipv4Addr::LOCALHOST)
}
