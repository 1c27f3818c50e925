//! A .proto-generated client calls a service on another node over QUIC, and generated event
//! helpers work across nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/mod.rs"]
mod common;

use common::{WAIT, key, started, wait_for};
use runar::{Code, DiscoveryOptions};
use runar_codegen_proto_tests::fixtures::{Store, full_item};
use runar_codegen_proto_tests::shop::item_catalog_client::ItemCatalogClient;
use runar_codegen_proto_tests::shop::item_catalog_server::ItemCatalogServer;
use runar_codegen_proto_tests::shop::{GetItemRequest, ListItemsRequest, StockChanged};

#[tokio::test]
async fn a_generated_client_calls_a_remote_proto_service() {
    let server = common::node("server", &key(), DiscoveryOptions::none()).await;
    server
        .add_service(ItemCatalogServer::new(Store::default()))
        .await
        .unwrap();
    server.start().await.unwrap();
    let client_node = started("client", &key(), &[&server]).await;
    wait_for("the client to connect", || {
        client_node.peers() == [server.node_id()]
    })
    .await;

    let client = ItemCatalogClient::new(client_node.clone());
    let sent = full_item(7);
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
