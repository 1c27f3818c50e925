//! Streaming rpcs from a `.proto`, across two nodes over QUIC: a watch (server streaming), a
//! restock (client streaming) and a haggle (bidirectional), through the generated client.
//!
//! `build.rs` generates the `stock` module from `proto/stock.proto`. The `store` node serves
//! the generated `Inventory` trait; the `front` node calls it with `InventoryClient`.
//!
//! Run with `cargo run -p proto_service --bin streaming`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt as _, stream};
use runar::{
    Code, DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, RequestContext, Streaming,
};
use tokio::sync::watch;

/// The code generated from `proto/stock.proto`.
pub mod stock {
    runar::include_proto!("stock");
}

use stock::inventory_client::InventoryClient;
use stock::inventory_server::{Inventory, InventoryServer};
use stock::{Offer, RestockItem, RestockSummary, StockLevel, WatchRequest};

/// Stock levels by item; each item's level is a `watch` channel, so watchers see every change.
#[derive(Default)]
struct Store {
    levels: Mutex<BTreeMap<u64, watch::Sender<u64>>>,
}

impl Store {
    fn level(&self, id: u64) -> watch::Sender<u64> {
        self.levels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| watch::Sender::new(0))
            .clone()
    }
}

impl Inventory for Store {
    async fn watch_stock(
        &self,
        _ctx: RequestContext,
        request: WatchRequest,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<StockLevel>> + Send + 'static> {
        let mut levels = self.level(request.id).subscribe();
        levels.mark_changed(); // the current level first
        // Ends when the store drops the item; dropped (with the receiver) when the caller
        // drops its stream.
        Ok(stream::unfold(levels, move |mut levels| async move {
            levels.changed().await.ok()?;
            let level = *levels.borrow_and_update();
            Some((
                Ok(StockLevel {
                    id: request.id,
                    level,
                }),
                levels,
            ))
        }))
    }

    async fn restock(
        &self,
        _ctx: RequestContext,
        mut requests: Streaming<RestockItem>,
    ) -> runar::Result<RestockSummary> {
        let mut summary = RestockSummary::default();
        while let Some(item) = requests.message().await? {
            if item.quantity == 0 {
                return Err(runar::Error::new(
                    Code::InvalidArgument,
                    format!("an empty delivery of item {}", item.id),
                ));
            }
            self.level(item.id)
                .send_modify(|level| *level = level.saturating_add(item.quantity));
            summary.deliveries += 1;
            summary.total_quantity += item.quantity;
        }
        Ok(summary)
    }

    async fn haggle(
        &self,
        _ctx: RequestContext,
        requests: Streaming<Offer>,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Offer>> + Send + 'static> {
        // The store asks 1000 cents and meets each offer halfway.
        let mut ask = 1000i64;
        Ok(requests.map(move |offer| {
            let offer = offer?;
            ask = (ask + offer.price) / 2;
            Ok(Offer { price: ask })
        }))
    }
}

fn network(key: &NetworkKey, discovery: DiscoveryOptions) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address(([127, 0, 0, 1], 0).into())
        .with_key(key.clone())
        .with_discovery(discovery)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = NetworkKey::from_secret("stock example");
    let store = Node::new(
        NodeConfig::new("store", "stock-net")
            .with_network_config(network(&key, DiscoveryOptions::none())),
    )
    .await?;
    store
        .add_service(InventoryServer::from_arc(Arc::new(Store::default())))
        .await?;
    store.start().await?;

    let address = store.local_addr().ok_or("the store node has no address")?;
    let peers = DiscoveryOptions::static_peers([address]);
    let front =
        Node::new(NodeConfig::new("front", "stock-net").with_network_config(network(&key, peers)))
            .await?;
    front.start().await?;
    front
        .wait_for_action("inventory/watch_stock", Duration::from_secs(5))
        .await?;
    let client = InventoryClient::new(front.clone());

    // Server streaming: returns once the call is started; levels arrive as they change.
    let mut levels = client.watch_stock(WatchRequest { id: 7 }).await?;
    let first = levels.message().await?;
    println!("item 7 starts at {:?}", first.map(|l| l.level));

    // Client streaming: any stream of requests; one summary once it ends.
    let deliveries = (1..=3).map(|n| RestockItem {
        id: 7,
        quantity: n * 10,
    });
    let summary = client.restock(stream::iter(deliveries)).await?;
    println!(
        "restocked: {} deliveries, {} units",
        summary.deliveries, summary.total_quantity
    );
    // The watch saw every change (a `watch` channel may merge quick ones).
    while let Some(level) = levels.message().await? {
        println!("item 7 is now at {}", level.level);
        if level.level == summary.total_quantity {
            break;
        }
    }
    drop(levels); // cancels the watch: the store drops its stream

    // A handler's error reaches the caller with its code and message.
    let empty = stream::iter([RestockItem { id: 7, quantity: 0 }]);
    if let Err(err) = client.restock(empty).await {
        println!("refused: {:?} {}", err.code(), err.message());
    }

    // Bidirectional: offers go out as the stream yields them; counter-offers come back.
    let offers = stream::iter([600, 700, 750].map(|price| Offer { price }));
    let mut counters = client.haggle(offers).await?;
    while let Some(counter) = counters.message().await? {
        println!("the store counters with {}", counter.price);
    }

    front.stop().await?;
    store.stop().await?;
    Ok(())
}
