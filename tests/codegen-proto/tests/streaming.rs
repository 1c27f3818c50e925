//! Streaming rpcs through generated code, end to end: the client and server `runar-build`
//! generates from `proto/stock/stock.proto`, and the `#[runar::service]` twin of that service,
//! each kind locally and over QUIC, and across the two code paths both ways; order over 100,000
//! messages, a server error mid-stream, and a client that drops its stream.
//! (The runtime's own stream semantics are tested with `register_stream` in the root crate.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{WAIT, key, started, wait_for, wait_for_action};
use futures::{StreamExt as _, stream};
use runar::{Code, DiscoveryOptions, Error, Node, NodeConfig, RequestContext, Streaming};
use runar_codegen_proto_tests::stock::inventory_client::InventoryClient;
use runar_codegen_proto_tests::stock::inventory_server::{Inventory, InventoryServer};
use runar_codegen_proto_tests::stock::{
    Offer, RestockItem, RestockSummary, StockChanged, WatchRequest,
};

/// Counts the streams of replies dropped (ended, failed or cancelled).
struct DropCounter(Arc<AtomicU64>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What both implementations share: counters a test reads.
#[derive(Clone, Default)]
struct Counters {
    /// Changes sent by `watch_stock`.
    streamed: Arc<AtomicU64>,
    /// `watch_stock` streams dropped.
    dropped: Arc<AtomicU64>,
}

/// The changes of a watch: `count` of them (endless for `u64::MAX`), failing after
/// `fail_after` when it is non-zero.
fn changes(
    req: WatchRequest,
    counters: &Counters,
) -> runar::Result<impl Iterator<Item = runar::Result<(u64, u64, i64)>> + Send + use<>> {
    if req.id == 0 {
        return Err(Error::new(Code::NotFound, "no item 0"));
    }
    let streamed = counters.streamed.clone();
    let guard = DropCounter(counters.dropped.clone());
    Ok((0..req.count).map(move |seq| {
        let _alive = &guard;
        if req.fail_after != 0 && seq == req.fail_after {
            return Err(Error::new(
                Code::Unavailable,
                format!("item {} went away after {seq} changes", req.id),
            ));
        }
        streamed.fetch_add(1, Ordering::SeqCst);
        Ok((req.id, seq, -i64::try_from(seq % 1000).unwrap_or(0)))
    }))
}

/// Adds up deliveries, which must arrive in id order (from 1).
async fn add_up(mut next: impl AsyncNext<(u64, u64)>) -> runar::Result<(u64, u64, Vec<u64>)> {
    let (mut items, mut total, mut first) = (0u64, 0u64, Vec::new());
    while let Some((id, quantity)) = next.next_item().await? {
        if id != items + 1 {
            return Err(Error::new(
                Code::InvalidArgument,
                format!("delivery {id} arrived after {items} others: out of order"),
            ));
        }
        items += 1;
        total += quantity;
        if first.len() < 16 {
            first.push(id);
        }
    }
    Ok((items, total, first))
}

/// The next message of a request stream, as `(id, quantity)`; lets one `add_up` serve both
/// implementations' message types.
trait AsyncNext<T> {
    async fn next_item(&mut self) -> runar::Result<Option<T>>;
}

impl AsyncNext<(u64, u64)> for Streaming<RestockItem> {
    async fn next_item(&mut self) -> runar::Result<Option<(u64, u64)>> {
        Ok(self.message().await?.map(|i| (i.id, i.quantity)))
    }
}

/// The .proto side. Its counter-offers are one below the offer.
#[derive(Default)]
struct ProtoStore(Counters);

impl Inventory for ProtoStore {
    async fn watch_stock(
        &self,
        _ctx: RequestContext,
        request: WatchRequest,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<StockChanged>> + Send + 'static>
    {
        let changes = changes(request, &self.0)?;
        Ok(stream::iter(changes.map(|c| {
            c.map(|(id, seq, delta)| StockChanged { id, seq, delta })
        })))
    }

    async fn restock(
        &self,
        _ctx: RequestContext,
        requests: Streaming<RestockItem>,
    ) -> runar::Result<RestockSummary> {
        let (items, total_quantity, first_ids) = add_up(requests).await?;
        Ok(RestockSummary {
            items,
            total_quantity,
            first_ids,
        })
    }

    async fn haggle(
        &self,
        _ctx: RequestContext,
        requests: Streaming<Offer>,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Offer>> + Send + 'static> {
        Ok(requests.map(|offer| {
            offer.map(|o| Offer {
                seq: o.seq,
                price: o.price - 1,
            })
        }))
    }

    async fn streamed(
        &self,
        _ctx: RequestContext,
        request: WatchRequest,
    ) -> runar::Result<StockChanged> {
        Ok(StockChanged {
            id: request.id,
            seq: self.0.streamed.load(Ordering::SeqCst),
            delta: 0,
        })
    }
}

/// The macro side: the same service, code first, with its own message types (same fields).
#[allow(unreachable_pub)]
mod code_first {
    use super::*;

    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct WatchRequest {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub count: u64,
        #[prost(uint64, tag = "3")]
        pub fail_after: u64,
    }

    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct StockChanged {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub seq: u64,
        #[prost(int64, tag = "3")]
        pub delta: i64,
    }

    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct RestockItem {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub quantity: u64,
    }

    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct RestockSummary {
        #[prost(uint64, tag = "1")]
        pub items: u64,
        #[prost(uint64, tag = "2")]
        pub total_quantity: u64,
        #[prost(uint64, repeated, tag = "3")]
        pub first_ids: Vec<u64>,
    }

    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct Offer {
        #[prost(uint64, tag = "1")]
        pub seq: u64,
        #[prost(int64, tag = "2")]
        pub price: i64,
    }

    /// The stock of a shop.
    #[runar::service(path = "inventory")]
    pub trait Inventory {
        /// Streams the changes of one item's stock.
        async fn watch_stock(
            &self,
            req: WatchRequest,
        ) -> runar::Result<impl runar::Stream<Item = runar::Result<StockChanged>> + Send + 'static>;
        /// Adds up a stream of deliveries.
        async fn restock(
            &self,
            ctx: RequestContext,
            items: runar::Streaming<RestockItem>,
        ) -> runar::Result<RestockSummary>;
        /// Answers every offer.
        async fn haggle(
            &self,
            offers: runar::Streaming<Offer>,
        ) -> runar::Result<impl runar::Stream<Item = runar::Result<Offer>> + Send + 'static>;
        /// How many changes were streamed.
        async fn streamed(&self, req: WatchRequest) -> runar::Result<StockChanged>;
    }

    impl AsyncNext<(u64, u64)> for Streaming<RestockItem> {
        async fn next_item(&mut self) -> runar::Result<Option<(u64, u64)>> {
            Ok(self.message().await?.map(|i| (i.id, i.quantity)))
        }
    }

    /// Its counter-offers are two below the offer.
    #[derive(Default)]
    pub struct Store(pub Counters);

    impl Inventory for Store {
        async fn watch_stock(
            &self,
            req: WatchRequest,
        ) -> runar::Result<impl runar::Stream<Item = runar::Result<StockChanged>> + Send + 'static>
        {
            let request = super::WatchRequest {
                id: req.id,
                count: req.count,
                fail_after: req.fail_after,
            };
            let changes = changes(request, &self.0)?;
            Ok(stream::iter(changes.map(|c| {
                c.map(|(id, seq, delta)| StockChanged { id, seq, delta })
            })))
        }

        async fn restock(
            &self,
            _ctx: RequestContext,
            items: runar::Streaming<RestockItem>,
        ) -> runar::Result<RestockSummary> {
            let (items, total_quantity, first_ids) = add_up(items).await?;
            Ok(RestockSummary {
                items,
                total_quantity,
                first_ids,
            })
        }

        async fn haggle(
            &self,
            offers: runar::Streaming<Offer>,
        ) -> runar::Result<impl runar::Stream<Item = runar::Result<Offer>> + Send + 'static>
        {
            Ok(offers.map(|offer| {
                offer.map(|o| Offer {
                    seq: o.seq,
                    price: o.price - 2,
                })
            }))
        }

        async fn streamed(&self, req: WatchRequest) -> runar::Result<StockChanged> {
            Ok(StockChanged {
                id: req.id,
                seq: self.0.streamed.load(Ordering::SeqCst),
                delta: 0,
            })
        }
    }
}

/// Reads a stream to its end (or first error), failing the test after [`WAIT`].
async fn read_all<T: runar::Payload>(mut s: Streaming<T>) -> (Vec<T>, Option<Error>) {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, s.message()).await {
            Err(_) => panic!("timed out after {} messages", got.len()),
            Ok(Ok(Some(m))) => got.push(m),
            Ok(Ok(None)) => return (got, None),
            Ok(Err(e)) => return (got, Some(e)),
        }
    }
}

fn deliveries(n: u64) -> Vec<RestockItem> {
    (1..=n).map(|id| RestockItem { id, quantity: 2 }).collect()
}

/// Every kind through the .proto-generated client. `decrement` tells which side serves
/// (1: the .proto server, 2: the macro server).
async fn with_proto_client(node: &Node, decrement: i64) {
    let client = InventoryClient::new(node.clone());
    let (changes, end) = read_all(
        client
            .watch_stock(WatchRequest {
                id: 7,
                count: 5,
                fail_after: 0,
            })
            .await
            .unwrap(),
    )
    .await;
    assert!(end.is_none(), "{end:?}");
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert!(changes.iter().all(|c| c.id == 7));

    let summary = client.restock(stream::iter(deliveries(3))).await.unwrap();
    assert_eq!(
        summary,
        RestockSummary {
            items: 3,
            total_quantity: 6,
            first_ids: vec![1, 2, 3],
        }
    );
    // No requests at all is a valid client stream.
    let empty = client.restock(stream::iter(Vec::new())).await.unwrap();
    assert_eq!(empty.items, 0);

    let offers = stream::iter((0..4).map(|seq| Offer { seq, price: 100 }));
    let (counters, end) = read_all(client.haggle(offers).await.unwrap()).await;
    assert!(end.is_none(), "{end:?}");
    let got: Vec<(u64, i64)> = counters.iter().map(|o| (o.seq, o.price)).collect();
    let want: Vec<(u64, i64)> = (0..4).map(|seq| (seq, 100 - decrement)).collect();
    assert_eq!(got, want);

    // A handler that fails before streaming: the call fails with its code and message.
    let err = match client
        .watch_stock(WatchRequest {
            id: 0,
            count: 1,
            fail_after: 0,
        })
        .await
    {
        Err(e) => e,
        // The call may start before the handler runs; then the stream carries the error.
        Ok(s) => read_all(s).await.1.expect("an error"),
    };
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no item 0"));
}

/// Every kind through the macro-generated client.
async fn with_macro_client(node: &Node, decrement: i64) {
    use code_first::*;
    let client = InventoryClient::new(node.clone());
    let (changes, end) = read_all(
        client
            .watch_stock(WatchRequest {
                id: 7,
                count: 5,
                fail_after: 0,
            })
            .await
            .unwrap(),
    )
    .await;
    assert!(end.is_none(), "{end:?}");
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);

    let items = (1..=3).map(|id| RestockItem { id, quantity: 2 });
    let summary = client.restock(stream::iter(items)).await.unwrap();
    assert_eq!(
        summary,
        RestockSummary {
            items: 3,
            total_quantity: 6,
            first_ids: vec![1, 2, 3],
        }
    );

    let offers = stream::iter((0..4).map(|seq| Offer { seq, price: 100 }));
    let (counters, end) = read_all(client.haggle(offers).await.unwrap()).await;
    assert!(end.is_none(), "{end:?}");
    let got: Vec<(u64, i64)> = counters.iter().map(|o| (o.seq, o.price)).collect();
    let want: Vec<(u64, i64)> = (0..4).map(|seq| (seq, 100 - decrement)).collect();
    assert_eq!(got, want);
}

async fn local() -> Node {
    let node = Node::new(NodeConfig::new("local", "test")).await.unwrap();
    node.start().await.unwrap();
    node
}

/// A server node serving `service`, and a client node connected to it that sees its actions.
async fn remote_pair(service: impl runar::AbstractService + 'static) -> (Node, Node) {
    common::init_tracing();
    let server = common::node("server", &key(), DiscoveryOptions::none()).await;
    server.add_service(service).await.unwrap();
    server.start().await.unwrap();
    let client = started("client", &key(), &[&server]).await;
    wait_for("the client to connect", || {
        client.peers() == [server.node_id()]
    })
    .await;
    for action in ["watch_stock", "restock", "haggle", "streamed"] {
        wait_for_action(&client, &format!("inventory/{action}")).await;
    }
    (server, client)
}

#[tokio::test]
async fn every_kind_through_the_generated_code_locally() {
    let node = local().await;
    node.add_service(InventoryServer::new(ProtoStore::default()))
        .await
        .unwrap();
    with_proto_client(&node, 1).await;

    let node = local().await;
    node.add_service(code_first::InventoryServer::new(
        code_first::Store::default(),
    ))
    .await
    .unwrap();
    with_macro_client(&node, 2).await;
}

#[tokio::test]
async fn every_kind_through_the_generated_code_over_quic() {
    let (server, client) = remote_pair(InventoryServer::new(ProtoStore::default())).await;
    with_proto_client(&client, 1).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();

    let (server, client) = remote_pair(code_first::InventoryServer::new(
        code_first::Store::default(),
    ))
    .await;
    with_macro_client(&client, 2).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_proto_client_streams_from_a_macro_service_and_the_reverse() {
    // Locally: one schema, two sets of Rust types.
    let node = local().await;
    node.add_service(code_first::InventoryServer::new(
        code_first::Store::default(),
    ))
    .await
    .unwrap();
    with_proto_client(&node, 2).await;
    let node = local().await;
    node.add_service(InventoryServer::new(ProtoStore::default()))
        .await
        .unwrap();
    with_macro_client(&node, 1).await;

    // Over QUIC.
    let (server, client) = remote_pair(code_first::InventoryServer::new(
        code_first::Store::default(),
    ))
    .await;
    with_proto_client(&client, 2).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
    let (server, client) = remote_pair(InventoryServer::new(ProtoStore::default())).await;
    with_macro_client(&client, 1).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_macro_schema_marks_the_streaming_rpcs_like_the_proto() {
    use runar::AbstractService as _;
    use runar::prost::Message as _;
    let proto = InventoryServer::new(ProtoStore::default());
    let code_first = code_first::InventoryServer::new(code_first::Store::default());
    let kinds = |schema: &'static [u8]| {
        let file = runar::codegen::prost_types::FileDescriptorProto::decode(schema).unwrap();
        let mut kinds: Vec<(String, bool, bool)> = file.service[0]
            .method
            .iter()
            .map(|m| {
                (
                    m.name().to_owned(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect();
        kinds.sort();
        kinds
    };
    let want = vec![
        ("Haggle".to_owned(), true, true),
        ("Restock".to_owned(), true, false),
        ("Streamed".to_owned(), false, false),
        ("WatchStock".to_owned(), false, true),
    ];
    assert_eq!(kinds(proto.schema().unwrap()), want);
    assert_eq!(kinds(code_first.schema().unwrap()), want);
}

const MANY: u64 = 100_000;

#[tokio::test]
async fn order_is_kept_over_100_000_messages_each_way_locally_and_over_quic() {
    let node = local().await;
    node.add_service(InventoryServer::new(ProtoStore::default()))
        .await
        .unwrap();
    in_order(&node).await;
    node.stop().await.unwrap();

    let (server, client) = remote_pair(InventoryServer::new(ProtoStore::default())).await;
    in_order(&client).await;
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

/// [`MANY`] messages each way through the generated client, in order.
async fn in_order(node: &Node) {
    let inventory = InventoryClient::new(node.clone());

    // Server streaming.
    let mut changes = inventory
        .watch_stock(WatchRequest {
            id: 1,
            count: MANY,
            fail_after: 0,
        })
        .await
        .unwrap();
    let mut expected = 0;
    while let Some(change) = tokio::time::timeout(WAIT, changes.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(change.seq, expected);
        expected += 1;
    }
    assert_eq!(expected, MANY);

    // Client streaming: the server checks the order.
    let summary = tokio::time::timeout(
        WAIT,
        inventory.restock(stream::iter(1..=MANY).map(|id| RestockItem { id, quantity: 1 })),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((summary.items, summary.total_quantity), (MANY, MANY));

    // Bidirectional: each counter-offer answers the offer of the same seq, in order.
    let offers = stream::iter(0..MANY).map(|seq| Offer {
        seq,
        price: i64::try_from(seq).unwrap(),
    });
    let mut counters = inventory.haggle(offers).await.unwrap();
    let mut expected = 0;
    while let Some(counter) = tokio::time::timeout(WAIT, counters.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(
            (counter.seq, counter.price),
            (expected, i64::try_from(expected).unwrap() - 1)
        );
        expected += 1;
    }
    assert_eq!(expected, MANY);
}

#[tokio::test]
async fn a_server_error_mid_stream_reaches_the_generated_client_with_code_and_message() {
    let request = WatchRequest {
        id: 3,
        count: 10,
        fail_after: 4,
    };
    let check = |(changes, end): (Vec<StockChanged>, Option<Error>)| {
        let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        let end = end.expect("the stream ends with the error");
        assert_eq!(
            (end.code(), end.message()),
            (Code::Unavailable, "item 3 went away after 4 changes")
        );
    };
    let node = local().await;
    node.add_service(InventoryServer::new(ProtoStore::default()))
        .await
        .unwrap();
    let local_client = InventoryClient::new(node.clone());
    check(read_all(local_client.watch_stock(request).await.unwrap()).await);

    let (server, client) = remote_pair(InventoryServer::new(ProtoStore::default())).await;
    let remote_client = InventoryClient::new(client.clone());
    check(read_all(remote_client.watch_stock(request).await.unwrap()).await);

    // A client-streaming handler's error is the call's error.
    let out_of_order = vec![RestockItem { id: 2, quantity: 1 }];
    let err = remote_client
        .restock(stream::iter(out_of_order))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "delivery 2 arrived after 0 others: out of order"
        )
    );
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_the_generated_clients_stream_drops_the_servers_stream() {
    let store = ProtoStore::default();
    let counters = store.0.clone();
    let (server, client) = remote_pair(InventoryServer::new(store)).await;
    let inventory = InventoryClient::new(client.clone());
    let mut endless = inventory
        .watch_stock(WatchRequest {
            id: 5,
            count: u64::MAX,
            fail_after: 0,
        })
        .await
        .unwrap();
    for seq in 0..10 {
        let change = tokio::time::timeout(WAIT, endless.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(change.seq, seq);
    }
    assert_eq!(counters.dropped.load(Ordering::SeqCst), 0);
    drop(endless);
    wait_for("the server's stream to be dropped", || {
        counters.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    // And it stays stopped: the producer is no longer polled.
    let streamed = counters.streamed.load(Ordering::SeqCst);
    let reported = inventory
        .streamed(WatchRequest::default())
        .await
        .unwrap()
        .seq;
    assert_eq!(reported, streamed);
    client.stop().await.unwrap();
    server.stop().await.unwrap();
}
