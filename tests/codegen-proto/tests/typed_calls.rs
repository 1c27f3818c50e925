//! A dynamic call to a `.proto` service with another message type than the rpc's is refused
//! with `InvalidArgument` naming both full protobuf type names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use runar::{Code, Node, NodeConfig};
use runar_codegen_proto_tests::fixtures::Store;
use runar_codegen_proto_tests::shop::item_catalog_server::ItemCatalogServer;
use runar_codegen_proto_tests::shop::{GetItemRequest, Item};

#[tokio::test]
async fn another_message_type_is_invalid_argument_with_both_full_names() {
    let node = Node::new(NodeConfig::new("n", "shop-net")).await.unwrap();
    node.add_service(ItemCatalogServer::new(Store::default()))
        .await
        .unwrap();
    node.start().await.unwrap();
    // A u64 encodes exactly like `GetItemRequest { id }`: it must not be taken for one.
    let err = node
        .request::<_, Item>("item_catalog/get_item", 7u64)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(
        err.message(),
        "message type mismatch: `item_catalog/get_item` takes a `shop.GetItemRequest`, but the \
         request is a `google.protobuf.UInt64Value`"
    );
    let err = node
        .request::<_, String>("item_catalog/get_item", GetItemRequest { id: 7 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("`shop.Item`"), "{err}");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_generated_client_with_wait_for_ready_waits_for_the_service() {
    use runar_codegen_proto_tests::shop::item_catalog_client::ItemCatalogClient;
    let node = Node::new(NodeConfig::new("n", "shop-net")).await.unwrap();
    node.start().await.unwrap();
    let client = ItemCatalogClient::new(node.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .with_wait_for_ready(true);
    let call = tokio::spawn(async move { client.get_item(GetItemRequest { id: 7 }).await });
    node.add_service(ItemCatalogServer::new(Store::default()))
        .await
        .unwrap();
    // The store's own answer (it has no item 7), not the node's NotFound: the call waited.
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.message(), "no item 7", "{err}");
    node.stop().await.unwrap();
}

#[test]
fn generated_messages_know_their_full_protobuf_names() {
    use runar::codegen::prost::Name;
    assert_eq!(GetItemRequest::full_name(), "shop.GetItemRequest");
    assert_eq!(Item::full_name(), "shop.Item");
}
