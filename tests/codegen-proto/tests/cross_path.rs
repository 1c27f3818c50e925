//! One wire format: a client generated from a .proto calls a `#[runar::service]` service, and a
//! macro client calls the .proto-generated server — locally (different Rust types for one schema,
//! so the value falls back to encoding) and across two nodes over QUIC. Both clients also call
//! the hand-written test fixture, whose `add` has the same fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/mod.rs"]
mod common;

use common::fixture::Fixture;
use common::{key, started, wait_for};
use runar::{DiscoveryOptions, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::calc;

/// The macro side (public items, as a user's crate would have them).
#[allow(unreachable_pub)]
mod code_first {
    /// Numbers to summarize (hand-written prost message, same fields as `calc.Numbers`).
    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct Numbers {
        #[prost(double, repeated, tag = "1")]
        pub values: Vec<f64>,
    }

    /// Same fields as `calc.Summary`.
    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct Summary {
        #[prost(uint64, tag = "1")]
        pub count: u64,
        #[prost(double, tag = "2")]
        pub total: f64,
    }

    #[runar::service(path = "calc")]
    pub trait Calc {
        async fn add(&self, a: f64, b: f64) -> runar::Result<f64>;
        async fn label(&self, value: f64, unit: String, tags: Vec<String>)
        -> runar::Result<String>;
        async fn summarize(&self, req: Numbers) -> runar::Result<Summary>;
    }

    pub struct Impl;

    impl Calc for Impl {
        async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
            Ok(a + b)
        }
        async fn label(
            &self,
            value: f64,
            unit: String,
            tags: Vec<String>,
        ) -> runar::Result<String> {
            Ok(format!("{value} {unit} [{}] (macro)", tags.join(",")))
        }
        async fn summarize(&self, req: Numbers) -> runar::Result<Summary> {
            Ok(Summary {
                count: req.values.len() as u64,
                total: req.values.iter().sum(),
            })
        }
    }
}

/// The .proto side.
struct ProtoImpl;

impl calc::calc_server::Calc for ProtoImpl {
    async fn add(&self, _ctx: RequestContext, req: calc::CalcAddRequest) -> runar::Result<f64> {
        Ok(req.a + req.b)
    }
    async fn label(
        &self,
        _ctx: RequestContext,
        req: calc::CalcLabelRequest,
    ) -> runar::Result<String> {
        Ok(format!(
            "{} {} [{}] (proto)",
            req.value,
            req.unit,
            req.tags.join(",")
        ))
    }
    async fn summarize(
        &self,
        _ctx: RequestContext,
        req: calc::Numbers,
    ) -> runar::Result<calc::Summary> {
        Ok(calc::Summary {
            count: req.values.len() as u64,
            total: req.values.iter().sum(),
        })
    }
}

/// Calls every method through the .proto-generated client; `who` is the serving side.
async fn with_proto_client(node: &Node, who: &str) {
    let client = calc::calc_client::CalcClient::new(node.clone());
    assert_eq!(
        client
            .add(calc::CalcAddRequest { a: 1.5, b: 2.0 })
            .await
            .unwrap(),
        3.5
    );
    let label = client
        .label(calc::CalcLabelRequest {
            value: 2.5,
            unit: "kg".into(),
            tags: vec!["a".into(), "b".into()],
        })
        .await
        .unwrap();
    assert_eq!(label, format!("2.5 kg [a,b] ({who})"));
    let summary = client
        .summarize(calc::Numbers {
            values: vec![1.0, 2.0, 3.5],
        })
        .await
        .unwrap();
    assert_eq!(
        summary,
        calc::Summary {
            count: 3,
            total: 6.5
        }
    );
}

/// Calls every method through the macro-generated client; `who` is the serving side.
async fn with_macro_client(node: &Node, who: &str) {
    let client = code_first::CalcClient::new(node.clone());
    assert_eq!(client.add(1.5, 2.0).await.unwrap(), 3.5);
    let label = client
        .label(2.5, "kg".into(), vec!["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(label, format!("2.5 kg [a,b] ({who})"));
    let summary = client
        .summarize(code_first::Numbers {
            values: vec![1.0, 2.0, 3.5],
        })
        .await
        .unwrap();
    assert_eq!(
        summary,
        code_first::Summary {
            count: 3,
            total: 6.5
        }
    );
}

async fn local() -> Node {
    Node::new(NodeConfig::new("local", "test")).await.unwrap()
}

#[tokio::test]
async fn a_proto_client_calls_a_macro_service_and_the_reverse_locally() {
    let node = local().await;
    node.add_service(code_first::CalcServer::new(code_first::Impl))
        .await
        .unwrap();
    node.start().await.unwrap();
    with_proto_client(&node, "macro").await;
    with_macro_client(&node, "macro").await;

    let node = local().await;
    node.add_service(calc::calc_server::CalcServer::new(ProtoImpl))
        .await
        .unwrap();
    node.start().await.unwrap();
    with_macro_client(&node, "proto").await;
    with_proto_client(&node, "proto").await;
}

/// Calls `add`, the one method the fixture shares with `calc`, through both clients.
async fn add_with_both_clients(node: &Node) {
    let proto = calc::calc_client::CalcClient::new(node.clone());
    assert_eq!(
        proto
            .add(calc::CalcAddRequest { a: 1.5, b: 2.0 })
            .await
            .unwrap(),
        3.5
    );
    let code_first = code_first::CalcClient::new(node.clone());
    assert_eq!(code_first.add(1.5, 2.0).await.unwrap(), 3.5);
}

#[tokio::test]
async fn both_clients_call_a_hand_written_service_locally_and_remotely() {
    let server = common::node("fixture", &key(), DiscoveryOptions::none()).await;
    let (fixture, _) = Fixture::new("fixture");
    server.add_service(fixture.at("calc")).await.unwrap();
    server.start().await.unwrap();
    add_with_both_clients(&server).await;

    let client = started("client", &key(), &[&server]).await;
    wait_for("the client to connect", || {
        client.peers() == [server.node_id()]
    })
    .await;
    add_with_both_clients(&client).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_proto_client_calls_a_remote_macro_service_and_the_reverse() {
    let macro_server = common::node("macro", &key(), DiscoveryOptions::none()).await;
    macro_server
        .add_service(code_first::CalcServer::new(code_first::Impl))
        .await
        .unwrap();
    macro_server.start().await.unwrap();
    let proto_server = common::node("proto", &key(), DiscoveryOptions::none()).await;
    proto_server
        .add_service(calc::calc_server::CalcServer::new(ProtoImpl))
        .await
        .unwrap();
    proto_server.start().await.unwrap();

    for (server, who) in [(&macro_server, "macro"), (&proto_server, "proto")] {
        let client = started("client", &key(), &[server]).await;
        wait_for("the client to connect", || {
            client.peers() == [server.node_id()]
        })
        .await;
        with_proto_client(&client, who).await;
        with_macro_client(&client, who).await;
        client.stop().await.unwrap();
    }
    macro_server.stop().await.unwrap();
    proto_server.stop().await.unwrap();
}
