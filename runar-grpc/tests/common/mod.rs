//! What the gateway's client tests share: the greeter service (from `tests/proto/greeter.proto`)
//! on node A, node B that reaches it over QUIC, and a condition wait with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};

/// The `gateway.test` package, generated from `tests/proto/greeter.proto`.
#[allow(unreachable_pub)]
pub(crate) mod greeter {
    runar::include_proto!("gateway.test");
}
use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{CountRequest, HelloReply, HelloRequest, SleepRequest};

/// Bounds a failure only: conditions normally hold within milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The greeter service.
pub(crate) struct Hello {
    pub(crate) counts: Arc<Counts>,
}

/// What became of the calls that take long.
#[derive(Default)]
pub(crate) struct Counts {
    /// Sleep calls that started.
    pub(crate) started: AtomicUsize,
    /// Sleep calls that were dropped before they answered.
    pub(crate) cancelled: AtomicUsize,
    /// Count streams that started.
    pub(crate) streams_started: AtomicUsize,
    /// Count streams that were dropped (finished or cancelled).
    pub(crate) streams_dropped: AtomicUsize,
}

/// Counts a call dropped before it finished.
struct DropGuard(Option<Arc<Counts>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(counts) = self.0.take() {
            counts.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Counts a stream dropped.
struct StreamGuard(Arc<Counts>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn greeting(ctx: &runar::RequestContext, message: String) -> HelloReply {
    HelloReply {
        message,
        node: ctx.node().name().to_owned(),
        traceparent: ctx
            .metadata()
            .get(runar::TRACEPARENT)
            .unwrap_or_default()
            .to_owned(),
    }
}

impl Greeter for Hello {
    async fn say_hello(
        &self,
        ctx: runar::RequestContext,
        req: HelloRequest,
    ) -> runar::Result<HelloReply> {
        if req.name == "nobody" {
            return Err(runar::Error::new(
                runar::Code::NotFound,
                "no greeting for nobody",
            ));
        }
        Ok(greeting(&ctx, format!("hello {}", req.name)))
    }

    async fn sleep(
        &self,
        ctx: runar::RequestContext,
        req: SleepRequest,
    ) -> runar::Result<HelloReply> {
        self.counts.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = DropGuard(Some(self.counts.clone()));
        tokio::time::sleep(Duration::from_millis(req.millis.into())).await;
        guard.0 = None;
        Ok(greeting(&ctx, "slept".into()))
    }

    async fn count(
        &self,
        ctx: runar::RequestContext,
        req: CountRequest,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<HelloReply>> + Send + 'static> {
        self.counts.streams_started.fetch_add(1, Ordering::SeqCst);
        let guard = StreamGuard(self.counts.clone());
        let every = Duration::from_millis(req.every_millis.into());
        Ok(futures::stream::iter(1..=req.count).then(move |i| {
            let _alive = &guard;
            let reply = greeting(&ctx, format!("hello {} {i}", req.name));
            let fail = req.fail_after != 0 && i > req.fail_after;
            let fail_after = req.fail_after;
            async move {
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
                if fail {
                    return Err(runar::Error::new(
                        runar::Code::ResourceExhausted,
                        format!("no more than {fail_after}"),
                    ));
                }
                Ok(reply)
            }
        }))
    }

    async fn collect(
        &self,
        ctx: runar::RequestContext,
        mut requests: runar::Streaming<HelloRequest>,
    ) -> runar::Result<HelloReply> {
        let mut names = Vec::new();
        while let Some(request) = requests.message().await? {
            names.push(request.name);
        }
        Ok(greeting(&ctx, format!("hello {}", names.join(", "))))
    }

    async fn chat(
        &self,
        ctx: runar::RequestContext,
        requests: runar::Streaming<HelloRequest>,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<HelloReply>> + Send + 'static> {
        Ok(requests.map(move |request| {
            let request = request?;
            if request.name == "nobody" {
                return Err(runar::Error::new(
                    runar::Code::NotFound,
                    "no greeting for nobody",
                ));
            }
            Ok(greeting(&ctx, format!("hello {}", request.name)))
        }))
    }
}

/// Every method of the greeter, as the gateway serves them.
pub(crate) const METHODS: [&str; 5] = [
    "/gateway.test.Greeter/Chat",
    "/gateway.test.Greeter/Collect",
    "/gateway.test.Greeter/Count",
    "/gateway.test.Greeter/SayHello",
    "/gateway.test.Greeter/Sleep",
];

pub(crate) fn network(key: &NetworkKey, discovery: DiscoveryOptions) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(key.clone())
        .with_discovery(discovery)
}

pub(crate) async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Node A serves the greeter, node B reaches it over QUIC; returns them and A's counts.
pub(crate) async fn two_nodes() -> (Node, Node, Arc<Counts>) {
    let key = NetworkKey::from_secret("runar gateway test secret");
    let counts = Arc::new(Counts::default());
    let a = Node::new(
        NodeConfig::new("node-a", "test")
            .with_network_config(network(&key, DiscoveryOptions::none())),
    )
    .await
    .unwrap();
    a.add_service(GreeterServer::new(Hello {
        counts: counts.clone(),
    }))
    .await
    .unwrap();
    a.start().await.unwrap();
    let b = Node::new(
        NodeConfig::new("node-b", "test").with_network_config(network(
            &key,
            DiscoveryOptions::static_peers([a.local_addr().unwrap()]),
        )),
    )
    .await
    .unwrap();
    b.start().await.unwrap();
    for action in ["greeter/sleep", "greeter/count", "greeter/chat"] {
        b.wait_for_action(action, WAIT).await.unwrap();
    }
    (a, b, counts)
}

/// A gateway on `node` with `config`, serving on 127.0.0.1 (a free port) in a task of its own.
pub(crate) async fn serve(
    node: &Node,
    config: runar_grpc::GatewayConfig,
) -> (
    runar_grpc::Gateway,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), runar_grpc::GatewayError>>,
) {
    let gateway = runar_grpc::Gateway::with_config(node.clone(), config);
    let addr = gateway.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert_ne!(addr.port(), 0);
    let serving = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.serve().await }
    });
    (gateway, addr, serving)
}

/// Shuts the gateway down and checks that `serve` returned cleanly.
pub(crate) async fn stop(
    gateway: runar_grpc::Gateway,
    serving: tokio::task::JoinHandle<Result<(), runar_grpc::GatewayError>>,
) {
    gateway.shutdown();
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
