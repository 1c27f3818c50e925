//! The gRPC gateway (`runar-grpc`): one Runar node hosts `bench.Echo` (the Runar service
//! `runar-build` generates from `proto/bench.proto`, path `echo`), a gateway on the same node
//! serves it over HTTP/2, and the tonic client of the tonic rows (generated from the same
//! `.proto`) calls `/bench.Echo/Echo` on the gateway. Plaintext (h2c) or rustls TLS (ring),
//! like tonic's own server. Only the unary `Echo` is measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use runar::{Node, NodeConfig, RequestContext, Streaming};
use runar_grpc::{Gateway, GatewayConfig};
use tonic::transport::Channel;

use crate::certs;
use crate::pb::generated::echo_server::{Echo, EchoServer};
use crate::pb::grpc::echo_client::EchoClient;
use crate::pb::{Blob, Count, Pull};
use crate::rpc::Rpc;
use crate::tonic_side;

/// The gRPC method the client calls, as the gateway names it.
const METHOD: &str = "/bench.Echo/Echo";

/// Answers with the request; the streaming rpcs behave as tonic's server's do.
struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, _ctx: RequestContext, request: Blob) -> runar::Result<Blob> {
        Ok(request)
    }

    /// No events: the gateway's rows measure `Echo` only.
    async fn subscribe(
        &self,
        _ctx: RequestContext,
        _request: Blob,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Blob>> + Send + 'static> {
        Ok(futures::stream::empty())
    }

    async fn pull(
        &self,
        _ctx: RequestContext,
        request: Pull,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Blob>> + Send + 'static> {
        let Pull { count, data } = request;
        Ok(futures::stream::repeat(Blob { data })
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(Ok))
    }

    async fn push(&self, _ctx: RequestContext, mut blobs: Streaming<Blob>) -> runar::Result<Count> {
        let mut n = 0;
        while blobs.message().await?.is_some() {
            n += 1;
        }
        Ok(Count { n })
    }
}

#[derive(Clone)]
pub struct GatewayRpc {
    client: EchoClient<Channel>,
    node: Node,
    gateway: Gateway,
}

/// A local-only node with `bench.Echo`, its gateway on 127.0.0.1 (TLS with a self-signed
/// certificate when `tls`), and a tonic client connected to the gateway.
pub async fn connect(tls: bool) -> GatewayRpc {
    let node = Node::new(NodeConfig::new("gateway", "bench"))
        .await
        .expect("node");
    node.add_service(EchoServer::new(EchoService))
        .await
        .expect("service");
    node.start().await.expect("node start");

    let cert = certs::localhost();
    let mut config = GatewayConfig::default();
    if tls {
        config = config.with_tls_identity(&cert.cert_pem, &cert.key_pem);
    }
    let gateway = Gateway::with_config(node.clone(), config);
    let addr = gateway
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("gateway bind");
    let serving = gateway.clone();
    tokio::spawn(async move { serving.serve().await.expect("the gateway failed") });
    let started = Instant::now();
    while !gateway.methods().iter().any(|m| m == METHOD) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway does not serve {METHOD}: {:?}",
            gateway.methods()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let channel = tonic_side::channel(addr.port(), tls.then_some(&cert)).await;
    GatewayRpc {
        client: tonic_side::echo_client(channel),
        node,
        gateway,
    }
}

impl GatewayRpc {
    pub async fn stop(self) {
        self.gateway.shutdown();
        let _ = self.node.stop().await;
    }
}

impl Rpc for GatewayRpc {
    async fn call(&self, payload: Bytes) -> Bytes {
        tonic_side::echo(&self.client, payload).await
    }
}
