//! Several networks per node, over QUIC on 127.0.0.1: `a` is in shop-net, `c` in ops-net, and
//! `b` in both behind one address. Each network is isolated both ways, even through `b`:
//! services, calls, capabilities and events of one never reach the other; `ops-net:` prefixes
//! route; a peer of one network never completes a handshake for another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::raw;
use common::{WAIT, config, next, wait_for};
use prost::Message;
use runar::__private::{NodeKeypair, Transport, TransportConfig, read_frame, wire, write_frame};
use runar::{Code, NetworkConfig, NetworkKey, Node, NodeConfig, RequestOptions};
use tokio::sync::mpsc;

fn shop_key() -> NetworkKey {
    NetworkKey::from_secret("networks test: shop")
}

fn ops_key() -> NetworkKey {
    NetworkKey::from_secret("networks test: ops")
}

/// `b` in shop-net and ops-net, serving `store` (shop-net) and `admin` (ops-net); `a` in
/// shop-net serving `shop-a`, `c` in ops-net serving `ops-c`, both dialing `b`.
async fn three_nodes() -> (Node, Node, Node) {
    common::init_tracing();
    let b = Node::new(
        config("b", "shop-net", &shop_key(), &[]).with_additional_network("ops-net", ops_key()),
    )
    .await
    .unwrap();
    b.add_service(Fixture::new("b").0.at("store"))
        .await
        .unwrap();
    b.add_service_to("ops-net", Fixture::new("b").0.at("admin"))
        .await
        .unwrap();
    b.start().await.unwrap();

    let a = Node::new(config("a", "shop-net", &shop_key(), &[&b]))
        .await
        .unwrap();
    a.add_service(Fixture::new("a").0.at("shop-a"))
        .await
        .unwrap();
    a.start().await.unwrap();
    let c = Node::new(config("c", "ops-net", &ops_key(), &[&b]))
        .await
        .unwrap();
    c.add_service(Fixture::new("c").0.at("ops-c"))
        .await
        .unwrap();
    c.start().await.unwrap();

    wait_for("a and c to connect to b", || {
        b.peers_in("shop-net") == [a.node_id()] && b.peers_in("ops-net") == [c.node_id()]
    })
    .await;
    wait_for("b to route both peers' services", || {
        b.actions().contains(&"shop-a/who".to_owned())
            && c.actions().contains(&"admin/who".to_owned())
            && a.actions().contains(&"store/who".to_owned())
    })
    .await;
    (a, b, c)
}

/// A code-first service for ops-net, to point its generated client at a network.
#[derive(Clone)]
struct Restarter;

#[runar::service(path = "restarter")]
impl Restarter {
    #[action]
    async fn restart(&self, what: String) -> runar::Result<String> {
        Ok(format!("restarted {what}"))
    }
}

/// A service a raw peer announces: in `network`, at `path`, with `actions`.
fn service(network: &str, path: &str, actions: &[&str]) -> wire::ServiceDescriptor {
    wire::ServiceDescriptor {
        path: path.into(),
        name: path.into(),
        network: network.into(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

async fn who(node: &Node, path: &str) -> runar::Result<String> {
    node.request::<(), String>(path, ()).await
}

#[tokio::test]
async fn a_node_in_two_networks_keeps_them_apart() {
    let (a, b, c) = three_nodes().await;
    // One address reaches both of b's networks.
    assert_eq!(b.networks(), ["shop-net", "ops-net"]);
    assert_eq!(a.peers(), [b.node_id()]);
    assert_eq!(c.peers(), [b.node_id()]);

    // Each network reaches its own services on b.
    assert_eq!(who(&a, "store/who").await.unwrap(), "b");
    assert_eq!(who(&c, "admin/who").await.unwrap(), "b");
    // b reaches each peer in its network, the prefix picking ops-net.
    assert_eq!(who(&b, "shop-a/who").await.unwrap(), "a");
    assert_eq!(who(&b, "ops-net:ops-c/who").await.unwrap(), "c");
    assert_eq!(who(&b, "ops-net:admin/who").await.unwrap(), "b");
    assert_eq!(who(&b, "shop-net:store/who").await.unwrap(), "b");

    // Nothing crosses: not from a peer, not through b, not with a prefix.
    for (node, path) in [
        (&a, "admin/who"),
        (&a, "ops-net:admin/who"),
        (&a, "ops-c/who"),
        (&a, "ops-net:ops-c/who"),
        (&c, "store/who"),
        (&c, "shop-net:store/who"),
        (&c, "shop-a/who"),
        (&c, "shop-net:shop-a/who"),
        (&b, "admin/who"),
        (&b, "ops-c/who"),
        (&b, "ops-net:shop-a/who"),
        (&b, "ops-net:store/who"),
    ] {
        let err = who(node, path).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{} {path}: {err}", node.name());
    }

    // Capabilities: a peer is told only of its own network's services.
    let hidden = |node: &Node, prefixes: &[&str]| {
        node.actions()
            .iter()
            .filter(|p| prefixes.iter().any(|x| p.starts_with(x)))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(hidden(&a, &["admin/", "ops-c/"]).is_empty());
    assert!(hidden(&c, &["store/", "shop-a/"]).is_empty());
    assert!(hidden(&b, &["admin/", "ops-c/"]).is_empty());
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_generated_client_can_be_pointed_at_a_network() {
    let (a, b, c) = three_nodes().await;
    b.add_service_to("ops-net", Restarter).await.unwrap();
    // In ops-net, c's default network, the client needs no network.
    wait_for("c to see the restarter", || {
        c.actions().contains(&"restarter/restart".to_owned())
    })
    .await;
    let reply = RestarterClient::new(c.clone()).restart("db".into()).await;
    assert_eq!(reply.unwrap(), "restarted db");
    // On b, whose default is shop-net, it is pointed at ops-net.
    let plain = RestarterClient::new(b.clone());
    let err = plain.restart("db".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let ops = plain.with_network("ops-net");
    assert_eq!(ops.restart("db".into()).await.unwrap(), "restarted db");
    // a, in shop-net only, reaches it in no way.
    let from_a = RestarterClient::new(a.clone()).with_network("ops-net");
    let err = from_a.restart("db".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    // Removed by its network-prefixed path, it is gone from ops-net.
    b.remove_service("ops-net:restarter").await.unwrap();
    let err = ops.restart("db".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(!c.actions().contains(&"restarter/restart".to_owned()));
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_streaming_call_can_be_pointed_at_a_network() {
    let (a, b, c) = three_nodes().await;
    let count = |node: &Node, options: RequestOptions| {
        let node = node.clone();
        async move {
            let mut counts = node
                .request_stream_with::<u64, u64>(
                    "admin/stream/count",
                    futures::stream::iter([3u64]),
                    options,
                )
                .await?;
            let mut got = Vec::new();
            while let Some(n) = counts.message().await? {
                got.push(n);
            }
            runar::Result::<Vec<u64>>::Ok(got)
        }
    };
    // `admin` is in ops-net: on b (default shop-net) a stream reaches it only when pointed there.
    let err = count(&b, RequestOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let ops = RequestOptions::default().with_network("ops-net");
    assert_eq!(count(&b, ops.clone()).await.unwrap(), [0, 1, 2]);
    // c, in ops-net, reaches b's admin over QUIC; a, in shop-net only, in no way.
    wait_for("c to see admin", || {
        c.actions().contains(&"admin/stream/count".to_owned())
    })
    .await;
    assert_eq!(
        count(&c, RequestOptions::default()).await.unwrap(),
        [0, 1, 2]
    );
    let err = count(&a, ops).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn events_stay_in_their_network() {
    let (a, b, c) = three_nodes().await;
    let (a_tx, mut a_rx) = mpsc::unbounded_channel();
    let (c_tx, mut c_rx) = mpsc::unbounded_channel();
    a.subscribe("alerts/>", move |n: u64, ctx| {
        let tx = a_tx.clone();
        async move {
            tx.send((ctx.topic().to_owned(), n)).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    c.subscribe("alerts/>", move |n: u64, ctx| {
        let tx = c_tx.clone();
        async move {
            tx.send((ctx.topic().to_owned(), n)).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();

    // Each peer hears its network's events, once b knows its subscription.
    let heard = |rx: &mut mpsc::UnboundedReceiver<(String, u64)>| rx.try_recv().ok();
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut a_got, mut c_got) = (None, None);
    while a_got.is_none() || c_got.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no events arrived");
        if a_got.is_none() {
            b.publish("alerts/shop", 1u64).await.unwrap();
        }
        if c_got.is_none() {
            b.publish("ops-net:alerts/ops", 2u64).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        a_got = a_got.or_else(|| heard(&mut a_rx));
        c_got = c_got.or_else(|| heard(&mut c_rx));
    }
    assert_eq!(a_got.unwrap(), ("alerts/shop".to_owned(), 1));
    assert_eq!(c_got.unwrap(), ("alerts/ops".to_owned(), 2));

    // Events of the other network, then a marker in each: the marker comes after anything
    // leaked on the same connection, and nothing leaked.
    b.publish("alerts/shop", 10u64).await.unwrap();
    b.publish("ops-net:alerts/ops", 20u64).await.unwrap();
    b.publish("alerts/marker", 99u64).await.unwrap();
    b.publish("ops-net:alerts/marker", 99u64).await.unwrap();
    for (rx, network) in [(&mut a_rx, "shop"), (&mut c_rx, "ops")] {
        loop {
            let (topic, _) = common::next(rx).await;
            if topic == "alerts/marker" {
                break;
            }
            assert_eq!(topic, format!("alerts/{network}"), "a leaked event");
        }
    }
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_of_one_network_is_not_admitted_to_another() {
    let (a, b, c) = three_nodes().await;
    let raw = |key: &NetworkKey| {
        let config = TransportConfig {
            bind_addr: "127.0.0.1:0".parse().unwrap(),
            ..TransportConfig::default()
        };
        Transport::bind(config, &NodeKeypair::generate().unwrap(), key).unwrap()
    };
    // The ops key reaches b (ops-net) at the same address as the shop key (shop-net)...
    let ops = raw(&ops_key());
    let addr = b.local_addr().unwrap();
    ops.connect(addr, Some(&b.node_id())).await.unwrap();
    raw(&shop_key())
        .connect(addr, Some(&b.node_id()))
        .await
        .unwrap();
    // ... but not a, which is only in shop-net, nor c with the shop key.
    let err = ops
        .connect(a.local_addr().unwrap(), None)
        .await
        .unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
    let err = raw(&shop_key())
        .connect(c.local_addr().unwrap(), None)
        .await
        .unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn additional_networks_are_checked() {
    let shop = NetworkConfig::default().with_key(shop_key());
    let err =
        Node::new(NodeConfig::new("x", "shop-net").with_additional_network("ops-net", ops_key()))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    for (name, key) in [
        ("shop-net", ops_key()),
        ("ops:net", ops_key()),
        ("ops-net", shop_key()),
    ] {
        let config = NodeConfig::new("x", "shop-net")
            .with_network_config(shop.clone())
            .with_additional_network(name, key);
        let err = Node::new(config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
    }
    let node = Node::new(NodeConfig::new("x", "shop-net").with_network_config(shop))
        .await
        .unwrap();
    let err = node
        .add_service_to("ops-net", Fixture::new("x").0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn discovery_announces_each_network_apart() {
    common::init_tracing();
    let group = common::multicast();
    let with = |name: &str, network: &str, key: &NetworkKey| {
        NodeConfig::new(name, network).with_network_config(
            NetworkConfig::default()
                .with_bind_address("127.0.0.1:0".parse().unwrap())
                .with_key(key.clone())
                .with_discovery(group.clone()),
        )
    };
    let b =
        Node::new(with("b", "shop-net", &shop_key()).with_additional_network("ops-net", ops_key()))
            .await
            .unwrap();
    let a = Node::new(with("a", "shop-net", &shop_key())).await.unwrap();
    let c = Node::new(with("c", "ops-net", &ops_key())).await.unwrap();
    for n in [&b, &a, &c] {
        n.start().await.unwrap();
    }
    wait_for("each network's peers to find each other", || {
        b.peers_in("shop-net") == [a.node_id()]
            && b.peers_in("ops-net") == [c.node_id()]
            && a.peers() == [b.node_id()]
            && c.peers() == [b.node_id()]
    })
    .await;
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_cannot_reach_into_another_network_of_its_node() {
    let (a, b, c) = three_nodes().await;
    // A raw peer of shop-net that announces, asks and sends everything as ops-net's.
    let config = TransportConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        ..TransportConfig::default()
    };
    let keypair = NodeKeypair::generate().unwrap();
    let transport = Transport::bind(config, &keypair, &shop_key()).unwrap();
    let (conn, _) = transport
        .connect(b.local_addr().unwrap(), Some(&b.node_id()))
        .await
        .unwrap();
    let capabilities = wire::Capabilities {
        version: 1,
        services: vec![
            service("ops-net", "evil", &["evil/x"]),
            // In its own network, but naming ops-net in its paths (what the gRPC gateway
            // would route by, were it listed).
            service("shop-net", "ops-net:admin", &["ops-net:admin/who"]),
            service("shop-net", "sly", &["sly/ok", "ops-net:admin/who"]),
        ],
        subscriptions: vec![wire::SubscriptionDescriptor {
            id: 1,
            network: "ops-net".into(),
            pattern: "alerts/>".into(),
            ..Default::default()
        }],
    };
    let mut hello = raw::hello_with(&keypair, capabilities);
    hello.network_id = shop_key().network_id();
    hello.network = "shop-net".into();
    let (_send, _recv, theirs) = raw::send_hello(&conn, &hello).await;
    let theirs = theirs.expect("b answers a shop-net hello");
    // b told it of shop-net only.
    let told: Vec<String> = theirs
        .capabilities
        .unwrap()
        .services
        .iter()
        .map(|s| format!("{}:{}", s.network, s.path))
        .collect();
    assert_eq!(told, ["shop-net:store"]);
    wait_for("b to list the raw peer", || {
        b.peers_in("shop-net").contains(&keypair.node_id())
    })
    .await;
    // Its ops-net service went nowhere.
    assert!(
        !b.actions_in("ops-net")
            .iter()
            .any(|p| p.starts_with("evil"))
    );
    assert!(
        !b.actions_in("shop-net")
            .iter()
            .any(|p| p.starts_with("evil"))
    );
    assert!(!c.actions().iter().any(|p| p.starts_with("evil")));
    // What b lists as reachable through the peer (the gRPC gateway's routes) names no other
    // network: the prefixed service is gone, and of `sly` only its own action is left.
    wait_for("b to route the raw peer's own action", || {
        b.actions_in("shop-net").contains(&"sly/ok".to_owned())
    })
    .await;
    let listed: Vec<_> = b
        .reachable_services()
        .into_iter()
        .filter(|s| s.node == Some(keypair.node_id()))
        .map(|s| (s.network, s.path, s.actions))
        .collect();
    assert_eq!(
        listed,
        [(
            "shop-net".to_owned(),
            "sly".to_owned(),
            vec!["sly/ok".to_owned()]
        )]
    );
    // Its requests for ops-net's services are not served, whatever network they name, and
    // whatever network their path names.
    for network in ["ops-net", "shop-net", ""] {
        for path in ["admin/who", "ops-net:admin/who"] {
            let (code, message) = raw::call(&conn, network, path, &[]).await.unwrap_err();
            assert_eq!(code, Code::NotFound, "{network} {path}: {message}");
        }
    }
    // What the node tells it of itself covers shop-net alone: not ops-net's services, its
    // peer c, or its name.
    let ask = |path: &'static str, request: Vec<u8>| {
        let conn = conn.clone();
        async move { raw::call(&conn, "shop-net", path, &request).await.unwrap() }
    };
    let services = wire::ServiceList::decode(
        &ask(
            "$runar/services",
            wire::ServiceListRequest {}.encode_to_vec(),
        )
        .await[..],
    )
    .unwrap();
    let listed: Vec<_> = services
        .services
        .iter()
        .map(|s| format!("{}:{}", s.network, s.path))
        .collect();
    assert_eq!(listed, ["shop-net:store"]);
    let peers = wire::PeerList::decode(
        &ask("$runar/peers", wire::PeerListRequest {}.encode_to_vec()).await[..],
    )
    .unwrap();
    assert!(peers.peers.iter().all(|p| p.network == "shop-net"));
    assert!(
        !peers
            .peers
            .iter()
            .any(|p| p.node_id == c.node_id().to_string())
    );
    let info = wire::NodeInfo::decode(
        &ask("$runar/info", wire::NodeInfoRequest {}.encode_to_vec()).await[..],
    )
    .unwrap();
    assert_eq!(
        (info.network.as_str(), &info.networks[..]),
        ("shop-net", &["shop-net".to_owned()][..])
    );
    assert_eq!(info.service_count, 1);
    let stats = wire::NodeStatsReport::decode(
        &ask("$runar/stats", wire::NodeStatsRequest {}.encode_to_vec()).await[..],
    )
    .unwrap();
    assert!(
        !stats
            .peers
            .iter()
            .any(|p| p.node_id == c.node_id().to_string())
    );
    // On b itself, the same answers cover both networks.
    assert!(
        b.service_list()
            .services
            .iter()
            .any(|s| s.network == "ops-net")
    );
    assert!(b.node_info().networks.contains(&"ops-net".to_owned()));

    // Nor its streaming calls (the same admission).
    for path in ["admin/stream/count", "ops-net:admin/stream/count"] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[4]).await.unwrap();
        let header = wire::Request {
            network: "shop-net".into(),
            path: path.into(),
            ..Default::default()
        };
        write_frame(&mut send, &header.encode_to_vec(), raw::MAX)
            .await
            .unwrap();
        let ended = tokio::time::timeout(WAIT, async {
            while let Ok(Some(bytes)) = read_frame(&mut recv, raw::MAX).await {
                if let Some(wire::stream_frame::Kind::Trailer(t)) =
                    wire::StreamFrame::decode(bytes).unwrap().kind
                {
                    return t.error.map(|e| Code::from_u32(e.code));
                }
            }
            None
        })
        .await
        .expect("b never ended the stream");
        assert_eq!(ended, Some(Code::NotFound), "{path}");
    }
    // Its events into ops-net are refused and counted.
    let rejected = b.stats().events_rejected;
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(&[3]).await.unwrap();
    let event = wire::Event {
        network: "ops-net".into(),
        topic: "alerts/x".into(),
        subscription_ids: vec![1, 2, 3],
        ..Default::default()
    };
    write_frame(&mut stream, &event.encode_to_vec(), raw::MAX)
        .await
        .unwrap();
    stream.finish().unwrap();
    wait_for("the event to be refused", || {
        b.stats().events_rejected >= rejected + 3
    })
    .await;
    conn.close(0u32.into(), b"bye");
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_in_two_networks_keeps_each_networks_entries_apart() {
    let (a, b, c) = three_nodes().await;
    // One raw peer, one keypair, connected to b in both networks (two connections).
    let config = TransportConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        ..TransportConfig::default()
    };
    let keypair = NodeKeypair::generate().unwrap();
    let transport = Transport::bind_networks(config, &keypair, &[shop_key(), ops_key()]).unwrap();
    let mut connections = Vec::new();
    for (index, (network, key, action)) in [
        ("shop-net", shop_key(), "k-shop/x"),
        ("ops-net", ops_key(), "k-ops/x"),
    ]
    .into_iter()
    .enumerate()
    {
        let (conn, _) = transport
            .in_network(index)
            .unwrap()
            .connect(b.local_addr().unwrap(), Some(&b.node_id()))
            .await
            .unwrap();
        let capabilities = wire::Capabilities {
            version: 1,
            services: vec![service(
                network,
                action.split('/').next().unwrap(),
                &[action],
            )],
            ..Default::default()
        };
        let mut hello = raw::hello_with(&keypair, capabilities);
        hello.network_id = key.network_id();
        hello.network = network.into();
        let (send, recv, theirs) = raw::send_hello(&conn, &hello).await;
        assert!(theirs.is_some(), "b answers the {network} hello");
        connections.push((conn, send, recv));
    }
    let has = |network: &str, action: &str| b.actions_in(network).iter().any(|p| p == action);
    // Each network routes what the peer announced in it: the second hello is not taken for
    // an old one of the first connection.
    wait_for("b to route both networks' actions", || {
        has("shop-net", "k-shop/x") && has("ops-net", "k-ops/x")
    })
    .await;
    // The shop-net connection goes; what the peer announced in ops-net stays.
    let (shop, _send, _recv) = connections.remove(0);
    shop.close(0u32.into(), b"bye");
    wait_for("b to drop the shop-net connection's action", || {
        !has("shop-net", "k-shop/x")
    })
    .await;
    assert!(has("ops-net", "k-ops/x"), "the ops-net entries survive");
    assert!(b.peers_in("ops-net").contains(&keypair.node_id()));
    drop(connections);
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}

/// In whatever network it is added to: `relay/ask` (a path) asks that path for a `String`,
/// publishes the answer on `relayed/answer`, and answers with its network and the answer; it
/// also hears `relay/in/>` and asks `admin/who` for each (the answer on `relayed/heard`).
struct Relay;

impl runar::AbstractService for Relay {
    fn name(&self) -> &str {
        "relay"
    }
    fn path(&self) -> &str {
        "relay"
    }
    async fn init(&self, ctx: &runar::LifecycleContext) -> runar::Result<()> {
        ctx.register_action(
            "ask",
            |path: String, ctx: runar::RequestContext| async move {
                let who: String = ctx.request(path, ()).await?;
                ctx.publish("relayed/answer", who.clone()).await?;
                Ok(format!("{} {who}", ctx.network()))
            },
        )
        .await
    }
}

#[tokio::test]
async fn a_handlers_downstream_calls_and_events_stay_in_its_network() {
    let (a, b, c) = three_nodes().await;
    b.add_service_to("ops-net", Relay).await.unwrap();
    let (heard, mut hear) = mpsc::unbounded_channel();
    let on_c = heard.clone();
    c.subscribe("relayed/>", move |who: String, ctx| {
        let heard = on_c.clone();
        async move {
            let _ = heard.send(format!("c {} {who}", ctx.network()));
            Ok(())
        }
    })
    .await
    .unwrap();
    // A subscription of b's in ops-net: its handler's request stays in ops-net too.
    let on_b = heard.clone();
    b.subscribe("ops-net:relayed/answer", move |_: String, ctx| {
        let heard = on_b.clone();
        async move {
            let who: runar::Result<String> = ctx.request("admin/who", ()).await;
            let _ = heard.send(format!("b {} {who:?}", ctx.network()));
            Ok(())
        }
    })
    .await
    .unwrap();
    wait_for("c to route relay/ask", || {
        c.actions().contains(&"relay/ask".to_owned())
    })
    .await;

    // Called from an ops-net peer, the handler asks ops-net's admin (on b), and its event
    // reaches ops-net's subscribers: c, and b's own ops-net subscription.
    let answer: String = c
        .request("relay/ask", "admin/who".to_owned())
        .await
        .unwrap();
    assert_eq!(answer, "ops-net b");
    let mut got = vec![next(&mut hear).await, next(&mut hear).await];
    got.sort();
    assert_eq!(got, ["b ops-net Ok(\"b\")", "c ops-net b"]);
    // shop-net's store is not in the handler's network.
    let err = c
        .request::<_, String>("relay/ask", "store/who".to_owned())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    // Called on b through the prefix, the same.
    let answer: String = b
        .request("ops-net:relay/ask", "admin/who".to_owned())
        .await
        .unwrap();
    assert_eq!(answer, "ops-net b");
    let mut got = vec![next(&mut hear).await, next(&mut hear).await];
    got.sort();
    assert_eq!(got, ["b ops-net Ok(\"b\")", "c ops-net b"]);
    // A shop-net caller cannot see it at all.
    assert!(!a.actions().contains(&"relay/ask".to_owned()));
    for n in [&a, &c, &b] {
        n.stop().await.unwrap();
    }
}
