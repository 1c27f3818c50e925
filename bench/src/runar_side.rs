//! Runar: two nodes in this process, connected over QUIC on 127.0.0.1 (static peers). The
//! server node hosts `bench/echo`; the client node calls it through `Node::request`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use runar::{
    AbstractService, DiscoveryOptions, LifecycleContext, NetworkConfig, NetworkKey, Node,
    NodeConfig, PublishOptions,
};

use crate::events::{Publisher, Sink};
use crate::pb::Blob;
use crate::rpc::Rpc;

/// `bench/echo` answers with its request; `extra` more actions pad the registry.
pub struct BenchService {
    pub extra: usize,
}

impl AbstractService for BenchService {
    fn name(&self) -> &str {
        "Bench"
    }
    fn path(&self) -> &str {
        "bench"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("echo", |b: Blob, _ctx| async move { Ok(b) })
            .await?;
        for i in 0..self.extra {
            ctx.register_action(&format!("pad/{i}"), |b: Blob, _ctx| async move { Ok(b) })
                .await?;
        }
        Ok(())
    }
}

pub fn key() -> NetworkKey {
    NetworkKey::from_secret("runar benchmark network")
}

pub fn network(peers: Vec<std::net::SocketAddr>) -> NetworkConfig {
    let discovery = if peers.is_empty() {
        DiscoveryOptions::none()
    } else {
        DiscoveryOptions::static_peers(peers)
    };
    NetworkConfig::default()
        .with_bind_address(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_key(key())
        .with_discovery(discovery)
}

#[derive(Clone)]
pub struct RunarRpc {
    pub client: Node,
    pub server: Node,
}

/// Starts the server node, then a client node that dials it; returns once the client routes
/// `bench/echo` to the server.
pub async fn connect() -> RunarRpc {
    let server = Node::new(NodeConfig::new("server", "bench").with_network_config(network(vec![])))
        .await
        .expect("server node");
    server
        .add_service(BenchService { extra: 0 })
        .await
        .expect("service");
    server.start().await.expect("server start");
    let addr = server.local_addr().expect("server address");
    let client =
        Node::new(NodeConfig::new("client", "bench").with_network_config(network(vec![addr])))
            .await
            .expect("client node");
    client.start().await.expect("client start");
    let started = Instant::now();
    while !(client.peers().contains(&server.node_id())
        && client.actions().iter().any(|a| a == "bench/echo"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the client node did not connect"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    RunarRpc { client, server }
}

impl RunarRpc {
    pub async fn stop(self) {
        let _ = self.client.stop().await;
        let _ = self.server.stop().await;
    }

    /// Subscribes on the server node to `bench/tick`; each event goes to `sink`. Returns once
    /// the client node knows of the subscription.
    pub async fn subscribe(&self, sink: Sink) {
        let handler_sink = sink.clone();
        self.server
            .subscribe("bench/tick", move |b: Blob, _ctx| {
                handler_sink.received(b.data.len());
                async { Ok(()) }
            })
            .await
            .expect("subscribe");
        // `subscribe` returns once the connected peers acknowledged it; a client whose
        // connection the server kept only after that learns of it a moment later. Probe until
        // an event arrives, so that no measured event goes to nobody.
        let started = Instant::now();
        while sink.count() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the client node never learned of the subscription"
            );
            self.client
                .publish("bench/tick", Blob { data: Bytes::new() })
                .await
                .expect("publish");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Rpc for RunarRpc {
    async fn call(&self, payload: Bytes) -> Bytes {
        let answer: Blob = self
            .client
            .request("bench/echo", Blob { data: payload })
            .await
            .expect("bench/echo");
        answer.data
    }
}

/// The client node publishes `bench/tick`, which only the server node subscribes to. The
/// benchmark counts every event, so it publishes losslessly: waiting for room in the peer's
/// queue (as tonic's stream and zenoh's `CongestionControl::Block` do) instead of dropping.
impl Publisher for RunarRpc {
    async fn publish(&self, payload: Bytes) {
        let wait = PublishOptions::default().with_wait(Duration::MAX);
        self.client
            .publish_with("bench/tick", Blob { data: payload }, wait)
            .await
            .expect("publish");
    }
}
