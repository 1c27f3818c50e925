//! Generated servers and clients through a node: every rpc round-trips its messages, paths
//! follow the defaults, the option and build.rs, events flow through the generated helpers,
//! and the node lists each service's schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runar::codegen::prost::Message;
use runar::codegen::prost_types::{FileDescriptorProto, Timestamp};
use runar::{Code, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::common::Money;
use runar_codegen_proto_tests::fixtures::{Store, full_item};
use runar_codegen_proto_tests::shop::audit_client::AuditClient;
use runar_codegen_proto_tests::shop::audit_server::{Audit, AuditServer};
use runar_codegen_proto_tests::shop::item::Stock;
use runar_codegen_proto_tests::shop::item_catalog_client::ItemCatalogClient;
use runar_codegen_proto_tests::shop::item_catalog_server::ItemCatalogServer;
use runar_codegen_proto_tests::shop::ledger_client::LedgerClient;
use runar_codegen_proto_tests::shop::ledger_server::{Ledger, LedgerServer};
use runar_codegen_proto_tests::shop::pricing_client::PricingClient;
use runar_codegen_proto_tests::shop::pricing_server::{Pricing, PricingServer};
use runar_codegen_proto_tests::shop::{
    GetItemRequest, ListItemsRequest, StockChanged, audit_server, item_catalog_client,
    item_catalog_server, ledger_server, pricing_server,
};

const WAIT: Duration = Duration::from_secs(5);

struct Prices;

impl Pricing for Prices {
    async fn quote(&self, _ctx: RequestContext, req: GetItemRequest) -> runar::Result<Money> {
        Ok(Money {
            currency: "EUR".into(),
            units: i64::try_from(req.id).unwrap_or(i64::MAX) * 10,
            nanos: 0,
        })
    }
}

struct Recorder;

impl Audit for Recorder {
    async fn r#type(&self, ctx: RequestContext, (): ()) -> runar::Result<String> {
        Ok(format!("served at {}", ctx.path()))
    }
}

struct Books;

impl Ledger for Books {
    async fn balance(&self, _ctx: RequestContext, (): ()) -> runar::Result<Money> {
        Ok(Money {
            currency: "EUR".into(),
            units: 42,
            nanos: 500,
        })
    }
}

/// A started local node hosting every generated service.
async fn node() -> Node {
    let node = Node::new(NodeConfig::new("n", "test")).await.unwrap();
    node.add_service(ItemCatalogServer::new(Store::default()))
        .await
        .unwrap();
    node.add_service(PricingServer::new(Prices)).await.unwrap();
    node.add_service(AuditServer::from_arc(std::sync::Arc::new(Recorder)))
        .await
        .unwrap();
    node.add_service(LedgerServer::new(Books)).await.unwrap();
    node.start().await.unwrap();
    node
}

#[tokio::test(flavor = "current_thread")]
async fn every_rpc_round_trips_equal_messages() {
    let node = node().await;
    let client = ItemCatalogClient::new(node.clone());

    let item = full_item(7);
    assert_eq!(client.put_item(item.clone()).await.unwrap(), item);
    let mut other = full_item(8);
    other.stock = Some(Stock::Unlimited(true));
    other.tags = vec!["imported".into()];
    other.note = None;
    assert_eq!(client.put_item(other.clone()).await.unwrap(), other);

    assert_eq!(
        client.get_item(GetItemRequest { id: 7 }).await.unwrap(),
        item
    );
    let all = client
        .list_items(ListItemsRequest {
            ids: vec![7, 8, 9],
            tag: None,
        })
        .await
        .unwrap();
    assert_eq!(all.items, vec![item.clone(), other.clone()]);
    assert_eq!(all.by_id.get(&8), Some(&other));
    let local = client
        .list_items(ListItemsRequest {
            ids: vec![7, 8],
            tag: Some("local".into()),
        })
        .await
        .unwrap();
    assert_eq!(local.items, vec![item.clone()]);

    assert_eq!(client.count(()).await.unwrap(), 2);
    assert_eq!(
        client.last_change(()).await.unwrap(),
        other.updated_at.unwrap()
    );
    assert_eq!(client.echo("hello".into()).await.unwrap(), "hello");
    let money = Money {
        currency: "USD".into(),
        units: 4,
        nanos: 1,
    };
    assert_eq!(
        client.convert(money).await.unwrap(),
        Money {
            currency: "EUR".into(),
            units: 8,
            nanos: 1
        }
    );

    client.clear(()).await.unwrap();
    assert_eq!(client.count(()).await.unwrap(), 0);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn handler_errors_keep_their_code() {
    let node = node().await;
    let client = ItemCatalogClient::new(node.clone());
    let err = client
        .get_item(GetItemRequest { id: 404 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no item 404"), "{err}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn client_timeout_applies_per_call() {
    let node = node().await;
    let client = ItemCatalogClient::new(node.clone()).with_timeout(Duration::from_millis(100));
    let err = client.echo("hang".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    // The same client still works for calls that answer.
    assert_eq!(client.echo("ok".into()).await.unwrap(), "ok");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn paths_follow_default_option_and_build_rs() {
    assert_eq!(item_catalog_server::SERVICE_PATH, "item_catalog");
    assert_eq!(item_catalog_client::SERVICE_PATH, "item_catalog");
    assert_eq!(pricing_server::SERVICE_PATH, "prices"); // (runar.service_path)
    assert_eq!(audit_server::SERVICE_PATH, "audit_log"); // build.rs
    assert_eq!(ledger_server::SERVICE_PATH, "ledger"); // both: build.rs wins

    let node = node().await;
    let actions = node.actions();
    for expected in [
        "item_catalog/get_item",
        "item_catalog/put_item",
        "item_catalog/list_items",
        "item_catalog/clear",
        "item_catalog/last_change",
        "item_catalog/count",
        "item_catalog/echo",
        "item_catalog/convert",
        "prices/quote",
        "audit_log/type",
        "ledger/balance",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    // The event is not an action; the overridden option path is not used.
    assert!(
        !actions.iter().any(|a| a.contains("stock_changed")),
        "{actions:?}"
    );
    assert!(
        !actions.iter().any(|a| a.starts_with("ledger_option")),
        "{actions:?}"
    );

    // Generated clients use the same paths.
    let quote = PricingClient::new(node.clone())
        .quote(GetItemRequest { id: 3 })
        .await
        .unwrap();
    assert_eq!(quote.units, 30);
    assert_eq!(
        AuditClient::new(node.clone()).r#type(()).await.unwrap(),
        "served at audit_log/type"
    );
    assert_eq!(
        LedgerClient::new(node.clone())
            .balance(())
            .await
            .unwrap()
            .units,
        42
    );
    // And so does a plain request on the node.
    let money: Money = node.request("ledger/balance", ()).await.unwrap();
    assert_eq!(money.nanos, 500);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn events_publish_and_subscribe_through_generated_helpers() {
    let node = node().await;
    let client = ItemCatalogClient::new(node.clone());

    let (typed_tx, mut typed_rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = client
        .subscribe_stock_changed(move |ev: StockChanged, ctx| {
            let tx = typed_tx.clone();
            async move {
                tx.send((ev, ctx.topic().to_owned())).ok();
                Ok(())
            }
        })
        .await
        .unwrap();
    // A plain subscription on the documented topic sees the same events.
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel();
    node.subscribe("item_catalog/>", move |ev: StockChanged, _ctx| {
        let tx = raw_tx.clone();
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
        at: Some(Timestamp {
            seconds: 1,
            nanos: 2,
        }),
    };
    client.publish_stock_changed(event).await.unwrap();

    let (got, topic) = tokio::time::timeout(WAIT, typed_rx.recv())
        .await
        .expect("typed subscriber got no event in time")
        .unwrap();
    assert_eq!(got, event);
    assert_eq!(topic, "item_catalog/stock_changed");
    let raw = tokio::time::timeout(WAIT, raw_rx.recv())
        .await
        .expect("plain subscriber got no event in time")
        .unwrap();
    assert_eq!(raw, event);

    // Publishing on the node reaches the generated subscription too.
    node.publish(
        "item_catalog/stock_changed",
        StockChanged { id: 9, ..event },
    )
    .await
    .unwrap();
    let (got, _) = tokio::time::timeout(WAIT, typed_rx.recv())
        .await
        .expect("typed subscriber got no second event in time")
        .unwrap();
    assert_eq!(got.id, 9);

    node.unsubscribe(sub).await.unwrap();
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn node_lists_each_service_with_its_schema() {
    let node = node().await;
    let services = node.services().await;
    let catalog = services
        .iter()
        .find(|s| s.path == "item_catalog")
        .expect("item_catalog listed");
    assert_eq!(catalog.name, "shop.ItemCatalog");
    assert_eq!(catalog.description, "The catalog of items.");
    assert_eq!(catalog.version, env!("CARGO_PKG_VERSION"));

    let schema = catalog.schema.expect("generated services have a schema");
    let file = FileDescriptorProto::decode(schema).unwrap();
    assert_eq!(file.name(), "shop/shop.proto");
    assert_eq!(file.package(), "shop");
    assert!(file.source_code_info.is_none(), "source info is stripped");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "ItemCatalog")
        .expect("the schema names the service");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert!(
        methods.contains(&"GetItem") && methods.contains(&"StockChanged"),
        "{methods:?}"
    );
    assert!(file.message_type.iter().any(|m| m.name() == "Item"));
    // Custom options survive (prost-types would have dropped them): the option's value is in
    // the bytes.
    assert!(
        schema
            .windows(b"ledger_option".len())
            .any(|w| w == b"ledger_option")
    );

    for (path, name) in [
        ("prices", "shop.Pricing"),
        ("audit_log", "shop.Audit"),
        ("ledger", "shop.Ledger"),
    ] {
        let info = services
            .iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("{path} listed"));
        assert_eq!(info.name, name);
        let file = FileDescriptorProto::decode(info.schema.unwrap()).unwrap();
        assert!(
            file.service
                .iter()
                .any(|s| format!("shop.{}", s.name()) == name)
        );
    }
    node.stop().await.unwrap();
}
