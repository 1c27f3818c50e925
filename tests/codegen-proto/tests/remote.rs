//! A .proto-generated client calls a service on another node over QUIC, and generated event
//! helpers work across nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runar::codegen::prost_types::Timestamp;
use runar::{Code, DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::common::{Money, Unit};
use runar_codegen_proto_tests::shop::item::{Location, Status, Stock};
use runar_codegen_proto_tests::shop::item_catalog_client::ItemCatalogClient;
use runar_codegen_proto_tests::shop::item_catalog_server::{ItemCatalog, ItemCatalogServer};
use runar_codegen_proto_tests::shop::{
    GetItemRequest, Item, ListItemsReply, ListItemsRequest, StockChanged,
};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Store {
    items: Mutex<HashMap<u64, Item>>,
}

impl ItemCatalog for Store {
    async fn get_item(&self, _ctx: RequestContext, req: GetItemRequest) -> runar::Result<Item> {
        self.items
            .lock()
            .unwrap()
            .get(&req.id)
            .cloned()
            .ok_or_else(|| runar::Error::new(Code::NotFound, format!("no item {}", req.id)))
    }
    async fn put_item(&self, _ctx: RequestContext, item: Item) -> runar::Result<Item> {
        self.items.lock().unwrap().insert(item.id, item.clone());
        Ok(item)
    }
    async fn list_items(
        &self,
        _ctx: RequestContext,
        req: ListItemsRequest,
    ) -> runar::Result<ListItemsReply> {
        let items = self.items.lock().unwrap();
        let found: Vec<Item> = req
            .ids
            .iter()
            .filter_map(|id| items.get(id).cloned())
            .collect();
        Ok(ListItemsReply {
            by_id: found.iter().map(|i| (i.id, i.clone())).collect(),
            items: found,
        })
    }
    async fn count(&self, _ctx: RequestContext, _req: ()) -> runar::Result<u64> {
        Ok(self.items.lock().unwrap().len() as u64)
    }
    async fn last_change(&self, _ctx: RequestContext, _req: ()) -> runar::Result<Timestamp> {
        Err(runar::Error::new(Code::Unimplemented, "not kept here"))
    }
    async fn clear(&self, _ctx: RequestContext, _req: ()) -> runar::Result<()> {
        self.items.lock().unwrap().clear();
        Ok(())
    }
    async fn echo(&self, _ctx: RequestContext, text: String) -> runar::Result<String> {
        Ok(text)
    }
    async fn convert(&self, _ctx: RequestContext, money: Money) -> runar::Result<Money> {
        Ok(money)
    }
}

fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
        price: Some(Money {
            currency: "EUR".into(),
            units: 12,
            nanos: 990_000_000,
        }),
        unit: Unit::Kilogram as i32,
        tags: vec!["fresh".into()],
        attributes: [("colour".to_owned(), "red".to_owned())].into(),
        note: Some(String::new()),
        updated_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        location: Some(Location {
            aisle: "B".into(),
            shelf: 3,
        }),
        status: Status::Active as i32,
        stock: Some(Stock::Quantity(17)),
        extra_locations: vec![],
        bins: [(
            9,
            Location {
                aisle: "D".into(),
                shelf: 0,
            },
        )]
        .into(),
        picture: vec![0, 1, 2, 255],
        rating: Some(-3),
    }
}

async fn node(name: &str, peers: Vec<std::net::SocketAddr>) -> Node {
    let network = NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(NetworkKey::from_secret("codegen remote test"))
        .with_discovery(DiscoveryOptions::static_peers(peers));
    Node::new(NodeConfig::new(name, "test").with_network_config(network))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_generated_client_calls_a_remote_proto_service() {
    let server = node("server", vec![]).await;
    server
        .add_service(ItemCatalogServer::new(Store::default()))
        .await
        .unwrap();
    server.start().await.unwrap();
    let client_node = node("client", vec![server.local_addr().unwrap()]).await;
    client_node.start().await.unwrap();
    let started = Instant::now();
    while client_node.peers() != [server.node_id()] {
        assert!(started.elapsed() < WAIT, "never connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let client = ItemCatalogClient::new(client_node.clone());
    let sent = item(7);
    assert_eq!(client.put_item(sent.clone()).await.unwrap(), sent);
    assert_eq!(
        client.get_item(GetItemRequest { id: 7 }).await.unwrap(),
        sent
    );
    let listed = client
        .list_items(ListItemsRequest {
            ids: vec![7, 8],
            tag: None,
        })
        .await
        .unwrap();
    assert_eq!(listed.items, vec![sent.clone()]);
    assert_eq!(listed.by_id.get(&7), Some(&sent));
    assert_eq!(client.count(()).await.unwrap(), 1);
    let err = client
        .get_item(GetItemRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no item 99"));

    // Typed events: subscribed on the client node, published on the server node.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    client
        .subscribe_stock_changed(move |ev: StockChanged, _ctx| {
            let tx = tx.clone();
            async move {
                tx.send(ev).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    let event = StockChanged {
        id: 7,
        delta: -2,
        at: None,
    };
    ItemCatalogClient::new(server.clone())
        .publish_stock_changed(event)
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, event);

    client_node.stop().await.unwrap();
    server.stop().await.unwrap();
}
