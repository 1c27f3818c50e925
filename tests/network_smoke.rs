//! Smoke test: two nodes over QUIC on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runar::{
    AbstractService, DiscoveryOptions, LifecycleContext, NetworkConfig, NetworkKey, Node,
    NodeConfig,
};

struct Math;
impl AbstractService for Math {
    fn name(&self) -> &str {
        "Math"
    }
    fn path(&self) -> &str {
        "math"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("double", |x: f64, _| async move { Ok(x * 2.0) })
            .await
    }
}

#[tokio::test]
async fn two_nodes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("runar_runtime=debug")
        .with_test_writer()
        .try_init();
    let key = NetworkKey::from_secret("test secret");
    let net = |d: DiscoveryOptions| {
        NetworkConfig::default()
            .with_bind_address("127.0.0.1:0".parse().unwrap())
            .with_key(key.clone())
            .with_discovery(d)
    };
    let a = Node::new(NodeConfig::new("a", "t").with_network_config(net(DiscoveryOptions::none())))
        .await
        .unwrap();
    a.add_service(Math).await.unwrap();
    a.start().await.unwrap();
    let addr = a.local_addr().unwrap();
    let b = Node::new(
        NodeConfig::new("b", "t").with_network_config(net(DiscoveryOptions::static_peers([addr]))),
    )
    .await
    .unwrap();
    b.start().await.unwrap();
    let started = Instant::now();
    while !b.actions().contains(&"math/double".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never saw math/double"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("discovered after {:?}", started.elapsed());
    println!("requesting");
    let y: f64 = tokio::time::timeout(Duration::from_secs(3), b.request("math/double", 21.0f64))
        .await
        .expect("request hung")
        .unwrap();
    println!("answered");
    assert_eq!(y, 42.0);
    assert_eq!(b.peers(), vec![a.node_id()]);
    tokio::time::timeout(Duration::from_secs(3), a.stop())
        .await
        .expect("stop hung")
        .unwrap();
    println!("a stopped");
    let started = Instant::now();
    while !b.peers().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("gone after {:?}", started.elapsed());
    assert!(!b.actions().contains(&"math/double".to_string()));
    b.stop().await.unwrap();
}
