//! A .proto-generated client calls a service on another node over QUIC, and generated event
//! helpers work across nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runar::{Code, DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};
use runar_codegen_proto_tests::fixtures::{Store, full_item};
use runar_codegen_proto_tests::shop::item_catalog_client::ItemCatalogClient;
use runar_codegen_proto_tests::shop::item_catalog_server::ItemCatalogServer;
use runar_codegen_proto_tests::shop::{GetItemRequest, ListItemsRequest, StockChanged};

const WAIT: Duration = Duration::from_secs(10);

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
