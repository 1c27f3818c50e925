//! The real `runar` binary against nodes in this test process: with static peers and with
//! multicast, every command, JSON ⇄ protobuf of a nested message with an enum, a map and a
//! well-known type, an error reply, a wrong key, and `runar gateway` serving a gRPC client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, MessageOptions, MethodDescriptorProto, ServiceDescriptorProto,
};
use runar::{
    AbstractService, CallKind, Code, DiscoveryOptions, Error, LifecycleContext, NetworkConfig,
    NetworkKey, Node, NodeConfig, Streaming,
};
use tokio::sync::mpsc;

mod common;

use common::{Net, WAIT, json, stdout};

const SECRET: &str = "a runar-cli test network secret";
/// The network of these tests.
const SHOP: Net = Net {
    name: "shop-net",
    secret: SECRET,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    Unspecified = 0,
    Placed = 1,
    Shipped = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(string, tag = "1")]
    pub sku: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(enumeration = "Status", tag = "2")]
    pub status: i32,
    #[prost(map = "string, int32", tag = "3")]
    pub prices: HashMap<String, i32>,
    #[prost(message, optional, tag = "4")]
    pub placed_at: Option<prost_types::Timestamp>,
    #[prost(message, repeated, tag = "5")]
    pub items: Vec<Item>,
}

fn field(
    name: &str,
    number: i32,
    ty: Type,
    type_name: Option<&str>,
    label: Label,
) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        r#type: Some(ty.into()),
        type_name: type_name.map(Into::into),
        label: Some(label.into()),
        json_name: None,
        ..Default::default()
    }
}

/// The schema of the `shop` service, as runar-build would embed it.
fn schema() -> &'static [u8] {
    static SCHEMA: OnceLock<Vec<u8>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let one = Label::Optional;
        let file = FileDescriptorProto {
            name: Some("test/shop.proto".into()),
            package: Some("test.shop".into()),
            dependency: vec!["google/protobuf/timestamp.proto".into()],
            syntax: Some("proto3".into()),
            enum_type: vec![EnumDescriptorProto {
                name: Some("Status".into()),
                value: ["STATUS_UNSPECIFIED", "STATUS_PLACED", "STATUS_SHIPPED"]
                    .iter()
                    .zip(0..)
                    .map(|(n, i)| EnumValueDescriptorProto {
                        name: Some((*n).into()),
                        number: Some(i),
                        options: None,
                    })
                    .collect(),
                ..Default::default()
            }],
            message_type: vec![
                DescriptorProto {
                    name: Some("Item".into()),
                    field: vec![
                        field("sku", 1, Type::String, None, one),
                        field("count", 2, Type::Uint32, None, one),
                    ],
                    ..Default::default()
                },
                DescriptorProto {
                    name: Some("Order".into()),
                    field: vec![
                        field("id", 1, Type::String, None, one),
                        field("status", 2, Type::Enum, Some(".test.shop.Status"), one),
                        field(
                            "prices",
                            3,
                            Type::Message,
                            Some(".test.shop.Order.PricesEntry"),
                            Label::Repeated,
                        ),
                        field(
                            "placed_at",
                            4,
                            Type::Message,
                            Some(".google.protobuf.Timestamp"),
                            one,
                        ),
                        field(
                            "items",
                            5,
                            Type::Message,
                            Some(".test.shop.Item"),
                            Label::Repeated,
                        ),
                    ],
                    nested_type: vec![DescriptorProto {
                        name: Some("PricesEntry".into()),
                        field: vec![
                            field("key", 1, Type::String, None, one),
                            field("value", 2, Type::Int32, None, one),
                        ],
                        options: Some(MessageOptions {
                            map_entry: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("Shop".into()),
                // (name, client streaming, server streaming)
                method: [
                    ("Ship", false, false),
                    ("Fail", false, false),
                    ("Track", false, true),
                    ("Collect", true, false),
                ]
                .iter()
                .map(|(m, client, server)| MethodDescriptorProto {
                    name: Some((*m).into()),
                    input_type: Some(".test.shop.Order".into()),
                    output_type: Some(".test.shop.Order".into()),
                    client_streaming: Some(*client),
                    server_streaming: Some(*server),
                    ..Default::default()
                })
                .collect(),
                options: None,
            }],
            ..Default::default()
        };
        file.encode_to_vec()
    })
}

struct Shop {
    heard: mpsc::UnboundedSender<Order>,
}

impl AbstractService for Shop {
    fn name(&self) -> &str {
        "Shop"
    }
    fn path(&self) -> &str {
        "shop"
    }
    fn schema(&self) -> Option<&'static [u8]> {
        Some(schema())
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("ship", |mut order: Order, _| async move {
            order.status = Status::Shipped.into();
            order.prices.insert("shipping".into(), 5);
            Ok(order)
        })
        .await?;
        ctx.register_action("fail", |order: Order, _| async move {
            Err::<Order, _>(Error::new(Code::NotFound, format!("no order {}", order.id)))
        })
        .await?;
        // Three updates of the order, placed then shipped twice over.
        ctx.register_stream(
            "track",
            CallKind::ServerStreaming,
            |mut orders: Streaming<Order>, _| async move {
                let order = orders.message().await?.unwrap_or_default();
                let updates = (1..=3).map(move |n| {
                    let mut update = order.clone();
                    update.status = if n == 1 {
                        Status::Placed
                    } else {
                        Status::Shipped
                    }
                    .into();
                    update.prices.insert("update".into(), n);
                    Ok(update)
                });
                Ok(futures::stream::iter(updates))
            },
        )
        .await?;
        // One order holding the items of every order sent.
        ctx.register_stream(
            "collect",
            CallKind::ClientStreaming,
            |mut orders: Streaming<Order>, _| async move {
                let mut all = Order {
                    id: "all".into(),
                    ..Default::default()
                };
                while let Some(order) = orders.message().await? {
                    all.items.extend(order.items);
                }
                Ok(runar::stream_once(Ok(all)))
            },
        )
        .await?;
        let heard = self.heard.clone();
        ctx.subscribe("orders/>", move |order: Order, _| {
            let _ = heard.send(order);
            async { Ok(()) }
        })
        .await?;
        Ok(())
    }
}

async fn shop_node(
    name: &str,
    discovery: DiscoveryOptions,
) -> (Node, mpsc::UnboundedReceiver<Order>) {
    let network = NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(NetworkKey::from_secret(SECRET))
        .with_discovery(discovery);
    let node = Node::new(NodeConfig::new(name, "shop-net").with_network_config(network))
        .await
        .unwrap();
    let (heard, rx) = mpsc::unbounded_channel();
    node.add_service(Shop { heard }).await.unwrap();
    node.start().await.unwrap();
    (node, rx)
}

/// Runs `runar` with `args` and the network's key (`secret`), bounded by [`WAIT`].
/// The shop network with another secret (a wrong key).
async fn runar_with(secret: &'static str, args: &[&str]) -> Output {
    Net { secret, ..SHOP }.run(args, &[]).await
}

async fn runar(peer: &Node, args: &[&str]) -> Output {
    SHOP.run_at(peer, args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_node_found_by_static_peers() {
    let (node, mut heard) = shop_node("shop-1", DiscoveryOptions::none()).await;
    let id = node.node_id().to_string();

    // nodes
    let nodes = json(&runar(&node, &["--json", "nodes"]).await);
    assert_eq!(nodes[0]["id"], id);
    assert_eq!(nodes[0]["name"], "shop-1");
    assert_eq!(nodes[0]["services"], serde_json::json!(["shop"]));
    assert!(stdout(&runar(&node, &["nodes"]).await).contains("shop-1"));

    // list
    let list = json(&runar(&node, &["--json", "list", "--node", "shop-1"]).await);
    let actions = list[0]["services"][0]["actions"].as_array().unwrap();
    let ship = actions.iter().find(|a| a["path"] == "shop/ship").unwrap();
    assert_eq!(ship["request"], "test.shop.Order");
    assert_eq!(ship["response"], "test.shop.Order");
    assert_eq!(ship["kind"], "unary");
    assert!(stdout(&runar(&node, &["list"]).await).contains("shop/ship"));

    // describe: a service by path, a message by name
    let service = stdout(&runar(&node, &["describe", "shop"]).await);
    assert!(
        service.contains("rpc Ship(test.shop.Order) returns (test.shop.Order);"),
        "{service}"
    );
    let message = stdout(&runar(&node, &["describe", "test.shop.Order"]).await);
    assert!(
        message.contains("map<string, int32> prices = 3;"),
        "{message}"
    );
    assert!(
        message.contains("google.protobuf.Timestamp placed_at = 4;"),
        "{message}"
    );
    assert!(
        message.contains("repeated test.shop.Item items = 5;"),
        "{message}"
    );

    // call: a nested message with an enum, a map and a well-known type, both ways
    let request = r#"{"id":"o-1","status":"STATUS_PLACED","prices":{"apple":3},
        "placedAt":"2026-11-30T12:00:00Z","items":[{"sku":"apple","count":2}]}"#;
    let reply = json(&runar(&node, &["--json", "call", "shop/ship", "-d", request]).await);
    assert_eq!(reply["id"], "o-1");
    assert_eq!(reply["status"], "STATUS_SHIPPED");
    assert_eq!(reply["prices"]["apple"], 3);
    assert_eq!(reply["prices"]["shipping"], 5);
    assert_eq!(reply["placedAt"], "2026-11-30T12:00:00Z");
    assert_eq!(reply["items"][0]["count"], 2);

    // call: a server stream prints every reply, one JSON object a line
    let list = json(&runar(&node, &["--json", "list"]).await);
    let actions = list[0]["services"][0]["actions"].as_array().unwrap();
    let track = actions.iter().find(|a| a["path"] == "shop/track").unwrap();
    assert_eq!(track["kind"], "server-streaming", "{track}");
    let updates = stdout(&runar(&node, &["call", "shop/track", "-d", r#"{"id":"o-3"}"#]).await);
    let updates: Vec<serde_json::Value> = updates
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    for (n, update) in updates.iter().enumerate() {
        assert_eq!(update["id"], "o-3");
        assert_eq!(update["prices"]["update"], n + 1);
    }
    assert_eq!(updates[0]["status"], "STATUS_PLACED");
    assert_eq!(updates[2]["status"], "STATUS_SHIPPED");
    // … and a client stream sends one JSON object a line.
    let lines = "{\"items\":[{\"sku\":\"a\"}]}\n{\"items\":[{\"sku\":\"b\"}]}\n";
    let all = json(&runar(&node, &["call", "shop/collect", "-d", lines]).await);
    assert_eq!(all["id"], "all");
    assert_eq!(all["items"][0]["sku"], "a");
    assert_eq!(all["items"][1]["sku"], "b");

    // call: an error reply has its code name on stderr and its own exit code
    let failed = runar(&node, &["call", "shop/fail", "-d", r#"{"id":"o-9"}"#]).await;
    assert_eq!(failed.status.code(), Some(15), "NotFound is 10 + 5");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("NotFound: no order o-9"), "{stderr}");
    // … and JSON that is not the request message is refused before anything is sent.
    let bad = runar(&node, &["call", "shop/ship", "-d", r#"{"nope":1}"#]).await;
    assert_eq!(bad.status.code(), Some(13), "InvalidArgument is 10 + 3");

    // pub: the node's subscription gets the typed event
    let published = runar(
        &node,
        &[
            "pub",
            "orders/new",
            "--type",
            "test.shop.Order",
            "-d",
            r#"{"id":"o-2","status":"STATUS_PLACED"}"#,
        ],
    )
    .await;
    stdout(&published);
    let order = tokio::time::timeout(WAIT, heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.id, "o-2");
    assert_eq!(order.status, Status::Placed as i32);

    // sub --count: events published on the node until the CLI has printed two
    let addr = node.local_addr().unwrap().to_string();
    let mut sub = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"))
        .args([
            "--peer",
            &addr,
            "sub",
            "stock/>",
            "--count",
            "2",
            "--type",
            "test.shop.Item",
        ])
        .env("RUNAR_KEY", SECRET)
        .env("RUNAR_NETWORK", "shop-net")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = sub.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < WAIT, "sub --count 2 did not end");
        node.publish(
            "stock/apple",
            Item {
                sku: "apple".into(),
                count: 7,
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    let out = sub.wait_with_output().await.unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["topic"], "stock/apple");
    assert_eq!(lines[0]["event"]["count"], 7);

    // ping
    let ping = json(&runar(&node, &["--json", "ping", "shop-1", "--count", "3"]).await);
    assert_eq!(ping["count"], 3);
    assert!(ping["min_us"].as_u64().unwrap() <= ping["p99_us"].as_u64().unwrap());
    assert!(stdout(&runar(&node, &["ping", &id[..6]]).await).contains("p50"));

    // stats: the calls above were counted, with their errors
    let stats = json(&runar(&node, &["--json", "stats"]).await);
    let actions = stats[0]["stats"]["actions"].as_array().unwrap();
    let ship = actions.iter().find(|a| a["path"] == "shop/ship").unwrap();
    assert_eq!(ship["requests"], 1);
    let fail = actions.iter().find(|a| a["path"] == "shop/fail").unwrap();
    assert_eq!(fail["errors"]["NotFound"], 1);
    assert!(stdout(&runar(&node, &["stats"]).await).contains("shop/ship"));

    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_told_not_hung() {
    let (node, _heard) = shop_node("shop-2", DiscoveryOptions::none()).await;
    let addr = node.local_addr().unwrap().to_string();
    let started = Instant::now();
    let output = runar_with("another network's secret!", &["--peer", &addr, "nodes"]).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(17), "PermissionDenied is 10 + 7");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("network key mismatch"), "{stderr}");
    assert!(stderr.contains("wrong key?"), "{stderr}");
    // No key at all.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"))
        .args(["--peer", &addr, "nodes"])
        .env_remove("RUNAR_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&output.stderr).contains("RUNAR_KEY"));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_found_by_multicast() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.255.{}.{}:{port}", port >> 8, port & 0xff);
    let multicast = || {
        DiscoveryOptions::multicast(group.as_str())
            .multicast_interface(std::net::Ipv4Addr::LOCALHOST)
    };
    let (a, _) = shop_node("shop-a", multicast()).await;
    let (b, _) = shop_node("shop-b", multicast()).await;
    let output = runar_with(
        SECRET,
        &[
            "--multicast",
            &group,
            "--interface",
            "127.0.0.1",
            "--json",
            "nodes",
        ],
    )
    .await;
    let nodes = json(&output);
    let mut names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["shop-a", "shop-b"]);
    // A call routed through what multicast found.
    let reply = json(
        &runar_with(
            SECRET,
            &[
                "--multicast",
                &group,
                "--interface",
                "127.0.0.1",
                "--json",
                "call",
                "shop/ship",
                "-d",
                r#"{"id":"m"}"#,
            ],
        )
        .await,
    );
    assert_eq!(reply["status"], "STATUS_SHIPPED");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn keygen_writes_a_private_secret_the_library_reads() {
    let dir = std::env::temp_dir().join(format!("runar-keygen-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"))
        .args(["keygen", "--out", dir.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let secret = std::fs::read_to_string(&dir).unwrap();
    assert_eq!(secret.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let from_file = NetworkKey::from_file(&dir).unwrap();
    assert_eq!(
        from_file.network_id(),
        NetworkKey::from_secret(secret.trim()).network_id()
    );
    // It is not overwritten.
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"))
        .args(["keygen", "--out", dir.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(16), "AlreadyExists is 10 + 6");
    std::fs::remove_file(&dir).unwrap();
}

/// A gRPC call through `runar gateway` to `/test.shop.Shop/{method}`.
async fn grpc_call(
    channel: &tonic::transport::Channel,
    method: &'static str,
    order: Order,
) -> Result<Order, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Order, Order>::default();
    let reply = grpc.unary(tonic::Request::new(order), path, codec).await?;
    Ok(reply.into_inner())
}

/// `runar gateway --listen 127.0.0.1:0` joins the network, prints where it listens, and serves
/// the node's services to a gRPC client (a reply, an error with its message, a server stream)
/// until Ctrl-C, after which it exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_the_network_to_a_grpc_client_until_ctrl_c() {
    use tokio::io::AsyncBufReadExt as _;

    let (node, _heard) = shop_node("shop-1", DiscoveryOptions::none()).await;
    let addr = node.local_addr().unwrap().to_string();
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"))
        .args(["--peer", &addr, "gateway", "--listen", "127.0.0.1:0"])
        .env("RUNAR_KEY", SECRET)
        .env("RUNAR_NETWORK", "shop-net")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(gateway.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the gateway says where it listens")
        .unwrap()
        .unwrap();
    let listen = line
        .strip_prefix("gRPC gateway listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let order = Order {
        id: "o-1".into(),
        ..Default::default()
    };
    // The node's offer may reach the gateway a moment after it has joined.
    let started = Instant::now();
    let shipped = loop {
        match grpc_call(&channel, "/test.shop.Shop/Ship", order.clone()).await {
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                assert!(started.elapsed() < WAIT, "never served: {status:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(shipped.status, Status::Shipped as i32);
    assert_eq!(shipped.prices.get("shipping"), Some(&5));

    let status = grpc_call(&channel, "/test.shop.Shop/Fail", order.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no order o-1");

    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut updates = grpc
        .server_streaming(
            tonic::Request::new(order),
            tonic::codegen::http::uri::PathAndQuery::from_static("/test.shop.Shop/Track"),
            tonic_prost::ProstCodec::<Order, Order>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(update) = updates.message().await.unwrap() {
        seen.push(update.prices.get("update").copied());
    }
    assert_eq!(seen, [Some(1), Some(2), Some(3)]);

    // Ctrl-C: the gateway stops and leaves the network.
    let pid = gateway.id().unwrap().to_string();
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let exited = tokio::time::timeout(WAIT, gateway.wait())
        .await
        .expect("the gateway exits after Ctrl-C")
        .unwrap();
    assert!(exited.success(), "{exited:?}");

    node.stop().await.unwrap();
}
