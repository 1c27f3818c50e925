//! A `.proto` service with `runar-build`: a server and a typed client on one local node.
//!
//! `build.rs` generates the `shop` module from `proto/shop.proto`. This program hosts an
//! implementation of the generated `Inventory` trait, calls it through the generated
//! `InventoryClient`, and receives the typed `StockChanged` event.
//!
//! Run with `cargo run -p proto_service`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use runar::{Code, Node, NodeConfig, RequestContext};

/// The code generated from `proto/shop.proto`.
pub mod shop {
    runar::include_proto!("shop");
}

use shop::inventory_client::InventoryClient;
use shop::inventory_server::{Inventory, InventoryServer};
use shop::{AdjustStockRequest, GetItemRequest, Item, ListItemsReply, StockChanged};

/// The inventory, in memory.
struct Store {
    items: Mutex<BTreeMap<u64, Item>>,
}

impl Store {
    fn with_items(items: impl IntoIterator<Item = Item>) -> Self {
        Store {
            items: Mutex::new(items.into_iter().map(|i| (i.id, i)).collect()),
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Item>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn not_found(id: u64) -> runar::Error {
    runar::Error::new(Code::NotFound, format!("no item {id}"))
}

impl Inventory for Store {
    async fn get_item(&self, _ctx: RequestContext, req: GetItemRequest) -> runar::Result<Item> {
        self.items()
            .get(&req.id)
            .cloned()
            .ok_or_else(|| not_found(req.id))
    }

    async fn list_items(&self, _ctx: RequestContext, (): ()) -> runar::Result<ListItemsReply> {
        Ok(ListItemsReply {
            items: self.items().values().cloned().collect(),
        })
    }

    async fn adjust_stock(
        &self,
        ctx: RequestContext,
        req: AdjustStockRequest,
    ) -> runar::Result<Item> {
        let item = {
            let mut items = self.items();
            let item = items.get_mut(&req.id).ok_or_else(|| not_found(req.id))?;
            item.stock = item.stock.checked_add_signed(req.delta).ok_or_else(|| {
                runar::Error::new(
                    Code::InvalidArgument,
                    format!("only {} of item {} in stock", item.stock, item.id),
                )
            })?;
            item.clone()
        };
        // A handler publishes the typed event with the generated client of its own service.
        InventoryClient::new(ctx.node().clone())
            .publish_stock_changed(StockChanged {
                id: item.id,
                stock: item.stock,
                at: Some(Timestamp::from(SystemTime::now())),
            })
            .await?;
        Ok(item)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::new(NodeConfig::new("shop-node", "shop")).await?;
    node.add_service(InventoryServer::new(Store::with_items([
        Item {
            id: 1,
            name: "teapot".into(),
            stock: 3,
            price_cents: 2_500,
        },
        Item {
            id: 2,
            name: "cup".into(),
            stock: 12,
            price_cents: 600,
        },
    ])))
    .await?;
    node.start().await?;

    // The client goes through the node: the same code works when the service is remote.
    let client = InventoryClient::new(node.clone()).with_timeout(Duration::from_secs(2));

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    client
        .subscribe_stock_changed(move |event: StockChanged, ctx| {
            let events_tx = events_tx.clone();
            async move {
                println!(
                    "  event on {}: item {} now has {} in stock",
                    ctx.topic(),
                    event.id,
                    event.stock
                );
                events_tx.send(event).ok();
                Ok(())
            }
        })
        .await?;

    let teapot = client.get_item(GetItemRequest { id: 1 }).await?;
    println!(
        "get_item(1)      -> {} ({} in stock, {} cents)",
        teapot.name, teapot.stock, teapot.price_cents
    );

    let teapot = client
        .adjust_stock(AdjustStockRequest { id: 1, delta: -2 })
        .await?;
    println!("adjust_stock(-2) -> {} in stock", teapot.stock);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await?
        .ok_or("the subscription ended")?;
    assert_eq!((event.id, event.stock), (1, 1));

    match client
        .adjust_stock(AdjustStockRequest { id: 1, delta: -5 })
        .await
    {
        Err(e) => println!("adjust_stock(-5) -> {:?}: {}", e.code(), e.message()),
        Ok(item) => return Err(format!("expected an error, got {item:?}").into()),
    }
    match client.get_item(GetItemRequest { id: 99 }).await {
        Err(e) if e.code() == Code::NotFound => {
            println!("get_item(99)     -> NotFound: {}", e.message())
        }
        other => return Err(format!("expected NotFound, got {other:?}").into()),
    }

    let all = client.list_items(()).await?;
    println!(
        "list_items()     -> {}",
        all.items
            .iter()
            .map(|i| format!("{} x{}", i.name, i.stock))
            .collect::<Vec<_>>()
            .join(", ")
    );

    for service in node.services().await {
        println!(
            "service {} at `{}` v{}: {} ({} bytes of schema)",
            service.name,
            service.path,
            service.version,
            service.description,
            service.schema.map_or(0, <[u8]>::len)
        );
    }
    println!("actions: {}", node.actions().join(", "));

    node.stop().await?;
    Ok(())
}
