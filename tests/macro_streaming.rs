//! `#[runar::service]` streaming actions: a `runar::Streaming<T>` parameter streams requests, an
//! `impl runar::Stream` return streams responses; on an impl block, with scalar messages and a
//! synthesized request, locally and over QUIC; and the schema marks them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{WAIT, key, started, wait_for, wait_for_action};
use futures::{StreamExt as _, stream};
use prost::Message as _;
use runar::{AbstractService, Code, DiscoveryOptions, Node, NodeConfig, RequestContext, Streaming};

/// Counts and sums, as streams of scalars.
#[derive(Clone)]
struct Tally {
    /// Added to every sum, so a test sees which instance answered.
    bias: f64,
}

#[runar::service(path = "tally")]
impl Tally {
    /// Counts from `from` to `to`, failing at `fail_at` when it is set.
    #[action]
    async fn count(
        &self,
        from: u64,
        to: u64,
        fail_at: Option<u64>,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<u64>> + Send + 'static> {
        if from > to {
            return Err(runar::Error::new(
                Code::InvalidArgument,
                format!("{from} > {to}"),
            ));
        }
        Ok(stream::iter(from..=to).map(move |n| {
            if Some(n) == fail_at {
                Err(runar::Error::new(Code::Internal, format!("stopped at {n}")))
            } else {
                Ok(n)
            }
        }))
    }

    /// Sums a stream of numbers.
    #[action]
    async fn sum(&self, ctx: RequestContext, values: Streaming<f64>) -> runar::Result<f64> {
        let _ = ctx.caller();
        let total: Vec<runar::Result<f64>> = values.collect().await;
        let mut sum = self.bias;
        for value in total {
            sum += value?;
        }
        Ok(sum)
    }

    /// The running total of a stream of numbers, one per number.
    #[action("running_total")]
    async fn running(
        &self,
        values: Streaming<i64>,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<i64>> + Send + 'static> {
        let mut total = 0;
        Ok(values.map(move |v| {
            total += v?;
            Ok(total)
        }))
    }
}

async fn exercise(node: &Node, bias: f64) {
    let client = TallyClient::new(node.clone());
    let counted: Vec<u64> = client
        .count(3, 7, None)
        .await
        .unwrap()
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert_eq!(counted, [3, 4, 5, 6, 7]);

    let mut failing = client.count(1, 10, Some(3)).await.unwrap();
    assert_eq!(failing.message().await.unwrap(), Some(1));
    assert_eq!(failing.message().await.unwrap(), Some(2));
    let err = failing.message().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Internal, "stopped at 3")
    );

    let err = match client.count(5, 1, None).await {
        Err(e) => e,
        Ok(mut s) => s.message().await.unwrap_err(),
    };
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "5 > 1")
    );

    let sum = client.sum(stream::iter([1.5, 2.5, 3.0])).await.unwrap();
    assert_eq!(sum, 7.0 + bias);

    let totals: Vec<i64> = tokio::time::timeout(
        WAIT,
        client
            .running(stream::iter([1, 2, 3, -6]))
            .await
            .unwrap()
            .map(|n| n.unwrap())
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(totals, [1, 3, 6, 0]);
}

#[tokio::test]
async fn streaming_actions_of_an_impl_block_locally() {
    let node = Node::new(NodeConfig::new("local", "test")).await.unwrap();
    node.add_service(Tally { bias: 0.0 }).await.unwrap();
    node.start().await.unwrap();
    assert_eq!(
        node.call_kind("tally/count"),
        Some(runar::CallKind::ServerStreaming)
    );
    assert_eq!(
        node.call_kind("tally/sum"),
        Some(runar::CallKind::ClientStreaming)
    );
    assert_eq!(
        node.call_kind("tally/running_total"),
        Some(runar::CallKind::Bidi)
    );
    exercise(&node, 0.0).await;
    node.stop().await.unwrap();
}

#[tokio::test]
async fn streaming_actions_of_an_impl_block_over_quic() {
    common::init_tracing();
    let server = common::node("server", &key(), DiscoveryOptions::none()).await;
    server.add_service(Tally { bias: 100.0 }).await.unwrap();
    server.start().await.unwrap();
    let client = started("client", &key(), &[&server]).await;
    wait_for("the client to connect", || {
        client.peers() == [server.node_id()]
    })
    .await;
    for action in ["count", "sum", "running_total"] {
        wait_for_action(&client, &format!("tally/{action}")).await;
    }
    exercise(&client, 100.0).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[test]
fn the_schema_marks_streaming_rpcs_and_describes_their_messages() {
    let schema = Tally { bias: 0.0 }.schema().unwrap();
    let file = runar::codegen::prost_types::FileDescriptorProto::decode(schema).unwrap();
    let service = &file.service[0];
    let rpc = |name: &str| {
        service
            .method
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name} in {service:?}"))
    };
    let count = rpc("Count");
    assert!(!count.client_streaming() && count.server_streaming());
    assert_eq!(count.input_type(), ".tally.CountRequest");
    assert_eq!(count.output_type(), ".google.protobuf.UInt64Value");
    let sum = rpc("Sum");
    assert!(sum.client_streaming() && !sum.server_streaming());
    // A stream of scalars: each message is the one-field request message.
    assert_eq!(sum.input_type(), ".tally.SumRequest");
    let message = file
        .message_type
        .iter()
        .find(|m| m.name() == "SumRequest")
        .unwrap();
    assert_eq!(message.field.len(), 1);
    assert_eq!(message.field[0].name(), "values");
    let running = rpc("RunningTotal");
    assert!(running.client_streaming() && running.server_streaming());
    assert_eq!(running.output_type(), ".google.protobuf.Int64Value");
}
