//! Several networks per node, and who may do what in each.
//!
//! `cargo run --example networks` starts three nodes on 127.0.0.1: a gateway in shop-net and
//! ops-net (one address for both), a shop client in shop-net only, and an operator in ops-net
//! only. The gateway serves an inventory to shop-net and an admin service to ops-net, then
//! restricts shop-net with a policy; each step prints what each node may reach.

use std::time::{Duration, Instant};

use runar::policy::{Access, Policy, Subject};
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};

/// The shop's inventory, in shop-net.
#[derive(Clone)]
struct Inventory;

#[runar::service(path = "inventory")]
impl Inventory {
    /// The name of item `id`.
    #[action]
    async fn get_item(&self, id: u64) -> runar::Result<String> {
        Ok(format!("item {id}"))
    }

    /// Adds `count` items of `id` (for the gateway's own staff only, once the policy is set).
    #[action]
    async fn restock(&self, id: u64, count: u64) -> runar::Result<String> {
        Ok(format!("{count} more of item {id}"))
    }
}

/// Operations, in ops-net.
#[derive(Clone)]
struct Admin;

#[runar::service(path = "admin")]
impl Admin {
    /// Restarts `what`.
    #[action]
    async fn restart(&self, what: String) -> runar::Result<String> {
        Ok(format!("restarted {what}"))
    }
}

fn network(key: &NetworkKey, peers: &[&Node]) -> NetworkConfig {
    let peers: Vec<_> = peers.iter().filter_map(|p| p.local_addr()).collect();
    let discovery = if peers.is_empty() {
        DiscoveryOptions::none()
    } else {
        DiscoveryOptions::static_peers(peers)
    };
    NetworkConfig::default()
        .with_bind_address(([127, 0, 0, 1], 0).into())
        .with_key(key.clone())
        .with_discovery(discovery)
}

/// Waits (up to 5 s) until `node` routes `path`.
async fn routable(node: &Node, path: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !node.actions().iter().any(|a| a == path) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "{path} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn show(who: &str, path: &str, answer: runar::Result<String>) {
    match answer {
        Ok(answer) => println!("  {who:<9} {path:<24} -> {answer}"),
        Err(e) => println!("  {who:<9} {path:<24} -> {:?}: {}", e.code(), e.message()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let shop_key = NetworkKey::from_secret("runar networks demo: shop (use a long random secret)");
    let ops_key = NetworkKey::from_secret("runar networks demo: ops (use a long random secret)");

    let gateway = Node::new(
        NodeConfig::new("gateway", "shop-net")
            .with_network_config(network(&shop_key, &[]))
            .with_additional_network("ops-net", ops_key.clone()),
    )
    .await?;
    gateway.add_service(Inventory).await?;
    gateway.add_service_to("ops-net", Admin).await?;
    gateway.start().await?;

    let shop = Node::new(
        NodeConfig::new("shop", "shop-net").with_network_config(network(&shop_key, &[&gateway])),
    )
    .await?;
    shop.start().await?;
    let operator = Node::new(
        NodeConfig::new("operator", "ops-net").with_network_config(network(&ops_key, &[&gateway])),
    )
    .await?;
    operator.start().await?;
    routable(&shop, "inventory/get_item").await?;
    routable(&operator, "admin/restart").await?;
    println!(
        "gateway at {:?} serves {:?}",
        gateway.local_addr(),
        gateway.networks()
    );

    println!("each network reaches its own services only:");
    show(
        "shop",
        "inventory/get_item",
        shop.request("inventory/get_item", 7u64).await,
    );
    show(
        "shop",
        "admin/restart",
        shop.request("admin/restart", "db".to_owned()).await,
    );
    show(
        "operator",
        "admin/restart",
        operator.request("admin/restart", "db".to_owned()).await,
    );
    show(
        "operator",
        "inventory/get_item",
        operator.request("inventory/get_item", 7u64).await,
    );
    show(
        "gateway",
        "ops-net:admin/restart",
        gateway
            .request("ops-net:admin/restart", "db".to_owned())
            .await,
    );
    let admin = AdminClient::new(gateway.clone()).with_network("ops-net");
    show(
        "gateway",
        "AdminClient (ops-net)",
        admin.restart("cache".into()).await,
    );

    println!("shop-net policy: peers may get items; restocking is the gateway's own:");
    gateway
        .set_policy(
            "shop-net",
            Policy::deny_all()
                .allow(Subject::any_peer(), Access::Call, "inventory/get_item")
                .allow(Subject::local(), Access::Call, "inventory/>"),
        )
        .await?;
    show(
        "shop",
        "inventory/get_item",
        shop.request("inventory/get_item", 7u64).await,
    );
    let from_shop = InventoryClient::new(shop.clone());
    show("shop", "inventory/restock", from_shop.restock(7, 3).await);
    let from_gateway = InventoryClient::new(gateway.clone());
    show(
        "gateway",
        "inventory/restock",
        from_gateway.restock(7, 3).await,
    );
    for stats in gateway.policy_stats("shop-net").unwrap_or_default() {
        println!(
            "  {:<48} allowed {} denied {}",
            stats.rule, stats.allowed, stats.denied
        );
    }

    for node in [&shop, &operator, &gateway] {
        node.stop().await?;
    }
    Ok(())
}
