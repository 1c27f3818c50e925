//! `#[runar::service]`: the trait form and the impl form on one local node, the wire format of
//! the synthesized messages, and the schema.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prost::Message as _;
use prost_types::FileDescriptorProto;
use prost_types::field_descriptor_proto::{Label, Type as ProtoType};
use runar::prost::bytes::Bytes;
use runar::{AbstractService, Code, Node, NodeConfig};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Messages and an enum written by hand, as prost-build would generate them.

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRequest {
    #[prost(double, repeated, tag = "1")]
    pub values: Vec<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsReply {
    #[prost(uint64, tag = "1")]
    pub count: u64,
    #[prost(double, tag = "2")]
    pub sum: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Level {
    Low = 0,
    High = 1,
}

// ---------------------------------------------------------------------------------------------
// The trait form.

/// Arithmetic.
#[runar::service(path = "math")]
pub trait Math {
    /// Adds two numbers.
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64>;

    async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply>;

    /// A default body, and the request context.
    async fn where_am_i(&self, ctx: runar::RequestContext) -> runar::Result<String> {
        Ok(ctx.path().to_owned())
    }

    #[action("negate")]
    async fn neg(&self, x: f64) -> runar::Result<f64>;
}

struct MathImpl;

impl Math for MathImpl {
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply> {
        Ok(StatsReply {
            count: req.values.len() as u64,
            sum: req.values.iter().sum(),
        })
    }

    async fn neg(&self, x: f64) -> runar::Result<f64> {
        Ok(-x)
    }
}

// ---------------------------------------------------------------------------------------------
// The impl form.

#[derive(Clone)]
struct Calc {
    events: mpsc::UnboundedSender<f64>,
}

/// A calculator with every kind of parameter.
#[runar::service(path = "calc", version = "1.2.3")]
impl Calc {
    #[action]
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    #[action("plus")]
    async fn add_again(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    #[action]
    async fn double(&self, x: f64) -> runar::Result<f64> {
        Ok(2.0 * x)
    }

    #[action]
    #[allow(clippy::too_many_arguments)]
    async fn echo(
        &self,
        name: String,
        nickname: Option<String>,
        scores: Vec<i64>,
        weights: HashMap<String, f64>,
        tags: BTreeMap<u32, String>,
        blob: Vec<u8>,
        buf: Bytes,
        #[runar(enumeration)] level: Level,
        #[runar(enumeration)] levels: Vec<Level>,
        #[runar(sint32)] delta: i32,
        maybe: Option<i32>,
        stats: Option<StatsRequest>,
    ) -> runar::Result<EchoReply> {
        Ok(EchoReply {
            text: format!(
                "{name}/{nickname:?}/{scores:?}/{weights:?}/{tags:?}/{blob:?}/{buf:?}/{level:?}/{levels:?}/{delta}/{maybe:?}/{stats:?}"
            ),
        })
    }

    #[action]
    async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply> {
        Ok(StatsReply {
            count: req.values.len() as u64,
            sum: req.values.iter().sum(),
        })
    }

    #[action]
    async fn ping(&self) -> runar::Result<()> {
        Ok(())
    }

    #[action]
    async fn bytes(&self, data: Vec<u8>) -> runar::Result<Bytes> {
        Ok(Bytes::from(data))
    }

    #[action]
    async fn slow(&self, millis: u64) -> runar::Result<()> {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok(())
    }

    /// Configured out: neither served nor a client method.
    #[cfg(any())]
    #[action]
    async fn never(&self, x: NotEvenAType) -> runar::Result<()> {
        Ok(())
    }

    #[subscribe("math/computed")]
    async fn on_computed(&self, v: f64) -> runar::Result<()> {
        let _ = self.events.send(v);
        Ok(())
    }

    /// Neither an action nor a subscription: left alone.
    fn helper(&self) -> u8 {
        7
    }
}

/// A generic impl block: the handlers are generic, the messages are not.
#[derive(Clone)]
struct Store<S> {
    prefix: S,
}

#[runar::service(path = "store")]
impl<S> Store<S>
where
    S: AsRef<str> + Clone + Send + Sync + 'static,
{
    #[action]
    async fn label(&self, n: u32) -> runar::Result<String> {
        Ok(format!("{}-{n}", self.prefix.as_ref()))
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// The hand-written twin of the message `#[runar::service]` synthesizes for `Calc::echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequestByHand {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, optional, tag = "2")]
    pub nickname: Option<String>,
    #[prost(int64, repeated, tag = "3")]
    pub scores: Vec<i64>,
    #[prost(map = "string, double", tag = "4")]
    pub weights: HashMap<String, f64>,
    #[prost(btree_map = "uint32, string", tag = "5")]
    pub tags: BTreeMap<u32, String>,
    #[prost(bytes = "vec", tag = "6")]
    pub blob: Vec<u8>,
    #[prost(bytes = "bytes", tag = "7")]
    pub buf: Bytes,
    #[prost(enumeration = "Level", tag = "8")]
    pub level: i32,
    #[prost(enumeration = "Level", repeated, tag = "9")]
    pub levels: Vec<i32>,
    #[prost(sint32, tag = "10")]
    pub delta: i32,
    #[prost(int32, optional, tag = "11")]
    pub maybe: Option<i32>,
    #[prost(message, optional, tag = "12")]
    pub stats: Option<StatsRequest>,
}

/// The hand-written twin of `MathAddRequest`: what a client generated from the equivalent
/// `.proto` sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddRequestByHand {
    #[prost(double, tag = "1")]
    pub a: f64,
    #[prost(double, tag = "2")]
    pub b: f64,
}

async fn node_with_services() -> (Node, mpsc::UnboundedReceiver<f64>) {
    let node = Node::new(NodeConfig::new("n", "test")).await.unwrap();
    let (events, received) = mpsc::unbounded_channel();
    node.add_service(MathServer::new(MathImpl)).await.unwrap();
    node.add_service(Calc { events }).await.unwrap();
    node.add_service(Store { prefix: "item" }).await.unwrap();
    node.start().await.unwrap();
    (node, received)
}

#[tokio::test]
async fn trait_form_serves_and_client_calls() {
    let (node, _events) = node_with_services().await;
    let math = MathClient::new(node.clone());
    assert_eq!(math.add(1.0, 2.0).await.unwrap(), 3.0);
    assert_eq!(math.neg(4.0).await.unwrap(), -4.0);
    assert_eq!(math.where_am_i().await.unwrap(), "math/where_am_i");
    let reply = math
        .stats(StatsRequest {
            values: vec![1.0, 2.0, 4.5],
        })
        .await
        .unwrap();
    assert_eq!(reply, StatsReply { count: 3, sum: 7.5 });
    let mut actions = node.actions();
    actions.retain(|a| a.starts_with("math/"));
    assert_eq!(
        actions,
        ["math/add", "math/negate", "math/stats", "math/where_am_i"]
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn impl_form_serves_and_client_calls() {
    let (node, _events) = node_with_services().await;
    let calc = CalcClient::new(node.clone());
    assert_eq!(calc.add(1.0, 2.0).await.unwrap(), 3.0);
    assert_eq!(calc.add_again(2.0, 2.5).await.unwrap(), 4.5);
    assert_eq!(calc.double(21.0).await.unwrap(), 42.0);
    calc.ping().await.unwrap();
    assert_eq!(
        calc.bytes(vec![1, 2, 3]).await.unwrap(),
        Bytes::from_static(&[1, 2, 3])
    );
    let reply = calc
        .stats(StatsRequest {
            values: vec![2.0, 3.0],
        })
        .await
        .unwrap();
    assert_eq!(reply, StatsReply { count: 2, sum: 5.0 });
    assert_eq!(
        StoreClient::new(node.clone()).label(7).await.unwrap(),
        "item-7"
    );
    // Methods without #[action] stay plain methods.
    let (events, _) = mpsc::unbounded_channel();
    assert_eq!(Calc { events }.helper(), 7);
    let infos = node.services().await;
    let info = infos.iter().find(|s| s.path == "calc").unwrap();
    assert_eq!(info.name, "Calc");
    assert_eq!(info.version, "1.2.3");
    assert_eq!(
        info.description,
        "A calculator with every kind of parameter."
    );
    let info = infos.iter().find(|s| s.path == "math").unwrap();
    assert_eq!(info.description, "Arithmetic.");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn every_parameter_kind_round_trips() {
    let (node, _events) = node_with_services().await;
    let calc = CalcClient::new(node.clone());
    let text = calc
        .echo(
            "ada".into(),
            Some("countess".into()),
            vec![1, -2, 3],
            HashMap::from([("w".to_owned(), 0.5)]),
            BTreeMap::from([(1, "one".to_owned()), (2, "two".to_owned())]),
            vec![0, 255],
            Bytes::from_static(b"xy"),
            Level::High,
            vec![Level::Low, Level::High],
            -5,
            None,
            Some(StatsRequest { values: vec![1.0] }),
        )
        .await
        .unwrap();
    assert_eq!(
        text.text,
        "ada/Some(\"countess\")/[1, -2, 3]/{\"w\": 0.5}/{1: \"one\", 2: \"two\"}/[0, 255]/b\"xy\"/\
         High/[Low, High]/-5/None/Some(StatsRequest { values: [1.0] })"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn subscription_receives_published_events() {
    let (node, mut events) = node_with_services().await;
    node.publish("math/computed", 3.0f64).await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the subscription did not receive the event within 5s")
        .unwrap();
    assert_eq!(v, 3.0);
    // Subscriptions are not client methods and not actions; configured-out methods are not
    // served.
    assert!(!node.actions().iter().any(|a| a.contains("on_computed")));
    assert!(!node.actions().iter().any(|a| a.contains("never")));
    node.stop().await.unwrap();
}

#[tokio::test]
async fn synthesized_message_is_wire_identical_to_a_hand_written_one() {
    let synthesized = CalcEchoRequest {
        name: "ada".into(),
        nickname: Some("c".into()),
        scores: vec![1, -2, 300],
        weights: HashMap::from([("w".to_owned(), 0.25)]),
        tags: BTreeMap::from([(1, "one".to_owned()), (9, "nine".to_owned())]),
        blob: vec![0, 1, 255],
        buf: Bytes::from_static(b"buf"),
        level: Level::High as i32,
        levels: vec![1, 0, 1],
        delta: -7,
        maybe: Some(0),
        stats: Some(StatsRequest {
            values: vec![1.5, 2.5],
        }),
    };
    let by_hand = EchoRequestByHand {
        name: "ada".into(),
        nickname: Some("c".into()),
        scores: vec![1, -2, 300],
        weights: HashMap::from([("w".to_owned(), 0.25)]),
        tags: BTreeMap::from([(1, "one".to_owned()), (9, "nine".to_owned())]),
        blob: vec![0, 1, 255],
        buf: Bytes::from_static(b"buf"),
        level: Level::High as i32,
        levels: vec![1, 0, 1],
        delta: -7,
        maybe: Some(0),
        stats: Some(StatsRequest {
            values: vec![1.5, 2.5],
        }),
    };
    let bytes = synthesized.encode_to_vec();
    assert!(!bytes.is_empty());
    assert_eq!(bytes, by_hand.encode_to_vec());
    assert_eq!(CalcEchoRequest::decode(&*bytes).unwrap(), synthesized);

    let add = MathAddRequest { a: 1.5, b: -2.0 };
    assert_eq!(
        add.encode_to_vec(),
        AddRequestByHand { a: 1.5, b: -2.0 }.encode_to_vec()
    );
    // A single scalar parameter travels as prost's `f64`, the same bytes as the one-field
    // message `{ double x = 1; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct DoubleRequestByHand {
        #[prost(double, tag = "1")]
        x: f64,
    }
    assert_eq!(
        21.0f64.encode_to_vec(),
        DoubleRequestByHand { x: 21.0 }.encode_to_vec()
    );
}

#[tokio::test]
async fn a_client_built_from_the_proto_calls_the_macro_service() {
    let (node, _events) = node_with_services().await;
    // What a client generated from the schema sends: its own message types.
    let sum: f64 = node
        .request("math/add", AddRequestByHand { a: 2.0, b: 3.0 })
        .await
        .unwrap();
    assert_eq!(sum, 5.0);
    let doubled: f64 = node.request("calc/double", 21.0f64).await.unwrap();
    assert_eq!(doubled, 42.0);
    // An enum value the service does not know is an invalid argument.
    let bad = EchoRequestByHand {
        level: 99,
        ..Default::default()
    };
    let err = node
        .request::<_, EchoReply>("calc/echo", bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("99"), "{err}");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn client_timeout_applies() {
    let (node, _events) = node_with_services().await;
    let calc = CalcClient::new(node.clone()).with_timeout(Duration::from_millis(50));
    let err = calc.slow(5_000).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    calc.slow(0).await.unwrap();
    node.stop().await.unwrap();
}

fn field<'a>(
    message: &'a prost_types::DescriptorProto,
    name: &str,
) -> &'a prost_types::FieldDescriptorProto {
    message
        .field
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no field {name} in {}", message.name()))
}

#[test]
fn schema_describes_messages_and_rpcs() {
    let bytes = MathServer::new(MathImpl).schema().unwrap();
    let file = FileDescriptorProto::decode(bytes).unwrap();
    assert_eq!(file.package(), "math");
    assert_eq!(file.syntax(), "proto3");
    let service = &file.service[0];
    assert_eq!(service.name(), "Math");
    let rpcs: Vec<(&str, &str, &str)> = service
        .method
        .iter()
        .map(|m| (m.name(), m.input_type(), m.output_type()))
        .collect();
    assert_eq!(
        rpcs,
        [
            ("Add", ".math.AddRequest", ".google.protobuf.DoubleValue"),
            ("Stats", "StatsRequest", "StatsReply"),
            (
                "WhereAmI",
                ".math.WhereAmIRequest",
                ".google.protobuf.StringValue"
            ),
            (
                "Negate",
                ".math.NegateRequest",
                ".google.protobuf.DoubleValue"
            ),
        ]
    );
    let add = file
        .message_type
        .iter()
        .find(|m| m.name() == "AddRequest")
        .unwrap();
    let fields: Vec<(&str, i32, ProtoType)> = add
        .field
        .iter()
        .map(|f| (f.name(), f.number(), f.r#type()))
        .collect();
    assert_eq!(
        fields,
        [("a", 1, ProtoType::Double), ("b", 2, ProtoType::Double)]
    );
    // The context is not a field.
    let where_am_i = file
        .message_type
        .iter()
        .find(|m| m.name() == "WhereAmIRequest")
        .unwrap();
    assert!(where_am_i.field.is_empty());
    assert!(
        file.dependency
            .contains(&"google/protobuf/wrappers.proto".to_owned())
    );

    let (events, _) = mpsc::unbounded_channel();
    let file = FileDescriptorProto::decode(Calc { events }.schema().unwrap()).unwrap();
    assert_eq!(file.package(), "calc");
    let names: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    // The schema is built when the macro expands, before `#[cfg]` is evaluated: a configured-out
    // method is still listed (documented).
    assert_eq!(
        names,
        [
            "Add", "Plus", "Double", "Echo", "Stats", "Ping", "Bytes", "Slow", "Never"
        ]
    );
    let echo = file
        .message_type
        .iter()
        .find(|m| m.name() == "EchoRequest")
        .unwrap();
    let numbers: Vec<i32> = echo.field.iter().map(|f| f.number()).collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
    let nickname = field(echo, "nickname");
    assert_eq!(nickname.r#type(), ProtoType::String);
    assert!(nickname.proto3_optional());
    assert_eq!(
        echo.oneof_decl[nickname.oneof_index() as usize].name(),
        "_nickname"
    );
    let scores = field(echo, "scores");
    assert_eq!(
        (scores.label(), scores.r#type()),
        (Label::Repeated, ProtoType::Int64)
    );
    let weights = field(echo, "weights");
    assert_eq!(weights.label(), Label::Repeated);
    assert_eq!(weights.type_name(), ".calc.EchoRequest.WeightsEntry");
    let entry = echo
        .nested_type
        .iter()
        .find(|n| n.name() == "WeightsEntry")
        .unwrap();
    assert!(entry.options.as_ref().unwrap().map_entry());
    assert_eq!(field(entry, "key").r#type(), ProtoType::String);
    assert_eq!(field(entry, "value").r#type(), ProtoType::Double);
    assert_eq!(field(echo, "blob").r#type(), ProtoType::Bytes);
    assert_eq!(field(echo, "buf").r#type(), ProtoType::Bytes);
    let level = field(echo, "level");
    assert_eq!(
        (level.r#type(), level.type_name()),
        (ProtoType::Enum, "Level")
    );
    assert_eq!(field(echo, "delta").r#type(), ProtoType::Sint32);
    let stats = field(echo, "stats");
    assert_eq!(
        (stats.r#type(), stats.type_name(), stats.proto3_optional()),
        (ProtoType::Message, "StatsRequest", false)
    );
    let ping = file.service[0]
        .method
        .iter()
        .find(|m| m.name() == "Ping")
        .unwrap();
    assert_eq!(ping.output_type(), ".google.protobuf.Empty");
    assert!(
        file.dependency
            .contains(&"google/protobuf/empty.proto".to_owned())
    );
}

#[tokio::test]
async fn client_wait_for_ready_waits_for_the_service() {
    let node = Node::new(NodeConfig::new("n", "test")).await.unwrap();
    node.start().await.unwrap();
    let math = MathClient::new(node.clone()).with_timeout(Duration::from_secs(5));
    // Without it, a call before the service is there fails at once.
    let err = math.add(1.0, 2.0).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let waiting = math.clone().with_wait_for_ready(true);
    let call = tokio::spawn(async move { waiting.add(1.0, 2.0).await });
    node.add_service(MathServer::new(MathImpl)).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 3.0);
    node.stop().await.unwrap();
}
