//! The built-in `$runar` introspection service: node info, services with their schemas (of a
//! macro service too), peers with their connection statistics, per-action stats; locally and
//! from a peer, which is never routed to another node.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::fixture::{FAIL_CODE, Fixture, PATH};
use common::{key, started, wait_for};
use prost::Message as _;
use runar::introspection::{self, CallKind};
use runar::{Code, DiscoveryOptions, Node, NodeConfig, RequestOptions};

#[derive(Clone)]
struct Calc;

#[runar::service(path = "calc")]
impl Calc {
    #[action]
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }
}

async fn serving() -> Node {
    let node = common::node("server", &key(), DiscoveryOptions::none()).await;
    node.add_service(Calc).await.unwrap();
    let (fixture, _probe) = Fixture::new("server");
    node.add_service(fixture).await.unwrap();
    node.start().await.unwrap();
    node
}

#[tokio::test]
async fn a_peer_describes_a_node_its_services_and_schemas() {
    common::init_tracing();
    let server = serving().await;
    let client = started("client", &key(), &[&server]).await;
    wait_for("the client to connect", || {
        client.peers() == [server.node_id()]
    })
    .await;

    let info = client.describe_peer(server.node_id()).await.unwrap();
    assert_eq!(info.node_id, server.node_id().to_string());
    assert_eq!(info.name, "server");
    assert_eq!(info.network, "test");
    assert_eq!(info.service_count, 2);
    assert_eq!(
        info.addresses,
        vec![server.local_addr().unwrap().to_string()]
    );

    let list = client.list_schemas(server.node_id()).await.unwrap();
    let paths: Vec<&str> = list.services.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        ["calc", PATH],
        "the $runar service is not a user service"
    );
    let calc = &list.services[0];
    let add = calc.actions.iter().find(|a| a.path == "calc/add").unwrap();
    assert_eq!(add.kind(), CallKind::Unary);
    assert!(
        add.request_type.ends_with("AddRequest"),
        "{}",
        add.request_type
    );
    // The macro's synthesized schema, as a FileDescriptorSet.
    let set = prost_types::FileDescriptorSet::decode(calc.schema.as_ref()).unwrap();
    let file = &set.file[0];
    assert!(
        file.service
            .iter()
            .any(|s| s.method.iter().any(|m| m.name() == "Add"))
    );
    // A service without a schema still lists its actions.
    assert!(list.services[1].schema.is_empty());
    assert!(
        list.services[1]
            .actions
            .iter()
            .any(|a| a.path == format!("{PATH}/who"))
    );

    // The client's own view matches what it asks itself.
    let own = client.describe_peer(client.node_id()).await.unwrap();
    assert_eq!(own.name, "client");
    assert!(!client.actions().iter().any(|a| a.starts_with("$runar")));

    let peers = client.peer_list();
    assert_eq!(peers.peers.len(), 1);
    let peer = &peers.peers[0];
    assert_eq!(peer.node_id, server.node_id().to_string());
    assert_eq!(peer.name, "server");
    assert!(peer.rtt_us > 0 && peer.bytes_sent > 0 && peer.connected_since_ms > 0);

    let pong: introspection::PingReply = client
        .request_on(
            server.node_id(),
            introspection::PING,
            introspection::PingRequest {},
            RequestOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(pong.node_id, server.node_id().to_string());
}

#[tokio::test]
async fn stats_count_requests_errors_and_latency_per_action() {
    common::init_tracing();
    let server = serving().await;
    let client = started("client", &key(), &[&server]).await;
    common::wait_for_action(&client, "calc/add").await;
    for _ in 0..3 {
        let _: f64 = client
            .request("calc/add", CalcAddRequest { a: 1.0, b: 2.0 })
            .await
            .unwrap();
    }
    let _: f64 = server
        .request("calc/add", CalcAddRequest { a: 1.0, b: 2.0 })
        .await
        .unwrap();
    let err = client
        .request::<(), ()>(format!("{PATH}/fail"), ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), FAIL_CODE);

    let stats: introspection::NodeStatsReport = client
        .request_on(
            server.node_id(),
            introspection::STATS,
            introspection::NodeStatsRequest {},
            RequestOptions::default(),
        )
        .await
        .unwrap();
    let add = stats.actions.iter().find(|a| a.path == "calc/add").unwrap();
    assert_eq!(add.requests, 4, "from the peer and locally");
    assert!(add.errors.is_empty());
    assert_eq!(add.in_flight, 0);
    assert!(add.p50_us >= 1 && add.p50_us <= add.p99_us && add.p99_us <= add.max_us);
    let fail = stats
        .actions
        .iter()
        .find(|a| a.path == format!("{PATH}/fail"))
        .unwrap();
    assert_eq!(fail.requests, 1);
    assert_eq!(fail.errors.get(FAIL_CODE.as_str()), Some(&1));
    assert!(!stats.actions.iter().any(|a| a.path.starts_with('$')));
    assert_eq!(stats.peers.len(), 1);

    // Per peer: the events written to its stream.
    client
        .subscribe("news/>", |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    server.publish("news/a", 1u64).await.unwrap();
    wait_for("the event to reach the client's stream", || {
        server.peer_list().peers[0].events_delivered == 1
    })
    .await;
    assert_eq!(server.peer_list().peers[0].events_dropped, 0);
}

#[tokio::test]
async fn introspection_can_be_turned_off_and_a_missing_node_is_unavailable() {
    let node = Node::new(NodeConfig::new("quiet", "test").with_introspection(false))
        .await
        .unwrap();
    node.start().await.unwrap();
    let err = node
        .request::<_, introspection::NodeInfo>(
            introspection::INFO,
            introspection::NodeInfoRequest {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let stranger = serving().await.node_id();
    let err = node.describe_peer(stranger).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}
