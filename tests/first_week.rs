//! The first week with Runar: the README's two-node snippet works right after `start()`, a
//! program can wait for what it needs, errors say why (wrong key, wrong network name, a typo),
//! and a dynamic call with the wrong message type is refused. Real QUIC on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runar::{
    Code, DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, PeerRefusedEvent,
    RefusalReason, RequestOptions,
};
use tokio::sync::mpsc;

use common::WAIT;

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddTodoRequest {
    #[prost(string, tag = "1")]
    pub title: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Todo {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(bool, tag = "2")]
    pub done: bool,
}

#[derive(Clone)]
struct TodoList;

#[runar::service(path = "todo_list")]
impl TodoList {
    #[action]
    async fn add_todo(&self, req: AddTodoRequest) -> runar::Result<Todo> {
        Ok(Todo {
            title: req.title,
            done: false,
        })
    }
}

fn config(name: &str, network: &str, key: &NetworkKey, discovery: DiscoveryOptions) -> NodeConfig {
    NodeConfig::new(name, network).with_network_config(
        NetworkConfig::default()
            .with_bind_address("127.0.0.1:0".parse().unwrap())
            .with_key(key.clone())
            .with_discovery(discovery),
    )
}

/// Node A, started, finding nobody itself, hosting the service if `serving` (added before
/// `start`, as in the README).
async fn started_server(network: &str, key: &NetworkKey, serving: bool) -> Node {
    let a = Node::new(config("a", network, key, DiscoveryOptions::none()))
        .await
        .unwrap();
    if serving {
        a.add_service(TodoList).await.unwrap();
    }
    a.start().await.unwrap();
    a
}

/// Node A: hosts the service, finds nobody itself.
async fn server(network: &str, key: &NetworkKey) -> Node {
    started_server(network, key, true).await
}

/// Node B, not started: dials A by address, as in the README.
async fn dialing(network: &str, key: &NetworkKey, a: &Node) -> Node {
    Node::new(config(
        "b",
        network,
        key,
        DiscoveryOptions::static_peers([a.local_addr().unwrap()]),
    ))
    .await
    .unwrap()
}

/// Node B, started: dials A by address, as in the README.
async fn client(network: &str, key: &NetworkKey, a: &Node) -> Node {
    let b = dialing(network, key, a).await;
    b.start().await.unwrap();
    b
}

/// Node A hosting the service and node B dialing it, in `todo-net` with the test key.
async fn todo_pair() -> (Node, Node) {
    common::init_tracing();
    let key = common::key();
    let a = server("todo-net", &key).await;
    let b = client("todo-net", &key, &a).await;
    (a, b)
}

fn buy_milk() -> AddTodoRequest {
    AddTodoRequest {
        title: "buy milk".into(),
    }
}

#[tokio::test]
async fn the_readme_snippet_succeeds_right_after_start_100_times_of_100() {
    common::init_tracing();
    let key = NetworkKey::from_secret("a long random secret shared by the network");
    let started = Instant::now();
    for round in 0..100 {
        let a = server("todo-net", &key).await;
        let b = client("todo-net", &key, &a).await;
        // No wait, no sleep: `start` returned once the static peer was tried.
        let todo = TodoListClient::new(b.clone())
            .add_todo(buy_milk())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(todo.title, "buy milk");
        let (stopped_b, stopped_a) = tokio::join!(b.stop(), a.stop());
        stopped_b.unwrap();
        stopped_a.unwrap();
    }
    eprintln!("100 fresh node pairs in {:?}", started.elapsed());
}

/// Subscribes to `$registry/peer/*/refused` on `node`.
async fn refusals(node: &Node) -> mpsc::UnboundedReceiver<PeerRefusedEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    node.subscribe("$registry/peer/*/refused", move |e: PeerRefusedEvent, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e);
            Ok(())
        }
    })
    .await
    .unwrap();
    rx
}

async fn next_refusal(rx: &mut mpsc::UnboundedReceiver<PeerRefusedEvent>) -> PeerRefusedEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a refusal event")
        .unwrap()
}

/// Node A hosting the service in `todo-net` with `a_key`, and node B in `b_network` with
/// `b_key` dialing it, both started; each one's refusal events from before B starts.
async fn refused_pair(
    a_key: &NetworkKey,
    b_network: &str,
    b_key: &NetworkKey,
) -> (
    Node,
    Node,
    mpsc::UnboundedReceiver<PeerRefusedEvent>,
    mpsc::UnboundedReceiver<PeerRefusedEvent>,
) {
    let a = server("todo-net", a_key).await;
    let a_refusals = refusals(&a).await;
    let b = dialing(b_network, b_key, &a).await;
    let b_refusals = refusals(&b).await;
    b.start().await.unwrap();
    (a, b, a_refusals, b_refusals)
}

#[tokio::test]
async fn a_wrong_key_is_named_on_both_sides_and_in_not_found() {
    common::init_tracing();
    let (a, b, mut a_refusals, mut b_refusals) = refused_pair(
        &NetworkKey::from_secret("the right key"),
        "todo-net",
        &NetworkKey::from_secret("the wrong key"),
    )
    .await;

    let err = TodoListClient::new(b.clone())
        .add_todo(buy_milk())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let message = err.message();
    assert!(
        message.contains("no action `todo_list/add_todo` in network `todo-net`")
            && message.contains("0 peers connected, 1 refused: network key mismatch"),
        "{message}"
    );
    let event = next_refusal(&mut b_refusals).await;
    assert_eq!(event.reason(), RefusalReason::NetworkKey);
    assert_eq!(event.address, a.local_addr().unwrap().to_string());
    // The side that was dialed knows too.
    let event = next_refusal(&mut a_refusals).await;
    assert_eq!(event.reason(), RefusalReason::NetworkKey);
    assert_eq!(
        b.refused_peers(),
        [(a.local_addr().unwrap(), RefusalReason::NetworkKey)]
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn another_network_name_is_refused_at_the_hello_and_the_dialer_learns_why() {
    common::init_tracing();
    let key = NetworkKey::from_secret("one key, two names");
    let (a, b, mut a_refusals, mut b_refusals) = refused_pair(&key, "other-net", &key).await;

    assert!(b.peers().is_empty() && a.peers().is_empty());
    let err = b
        .request::<_, Todo>("todo_list/add_todo", buy_milk())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(
        err.message()
            .contains("(0 peers connected, 1 refused: network name mismatch)"),
        "{err}"
    );
    // The dialer learned the reason from the acceptor's close; the acceptor refused it.
    let event = next_refusal(&mut b_refusals).await;
    assert_eq!(event.reason(), RefusalReason::NetworkName);
    assert!(event.detail.contains("todo-net"), "{}", event.detail);
    let event = next_refusal(&mut a_refusals).await;
    assert_eq!(event.reason(), RefusalReason::NetworkName);
    assert_eq!(event.node_id, b.node_id().to_string());
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_typo_gets_a_suggestion_and_what_the_node_knows() {
    let (a, b) = todo_pair().await;
    let err = b
        .request::<_, Todo>("todo_list/add_todoo", buy_milk())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "no action `todo_list/add_todoo` in network `todo-net`; did you mean \
         `todo_list/add_todo`? (1 peer connected)"
    );
    // Nothing close: no suggestion.
    let err = b
        .request::<_, Todo>("inventory/get_item", buy_milk())
        .await
        .unwrap_err();
    assert!(!err.message().contains("did you mean"), "{err}");
    // A local-only node says so.
    let local = Node::new(NodeConfig::new("local", "todo-net"))
        .await
        .unwrap();
    local.start().await.unwrap();
    let err = local
        .request::<_, Todo>("todo_list/add_todo", buy_milk())
        .await
        .unwrap_err();
    assert!(err.message().contains("local-only"), "{err}");
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_dynamic_call_with_another_message_type_is_invalid_argument() {
    let (a, b) = todo_pair().await;
    for (node, place) in [(&a, "local"), (&b, "remote")] {
        // A String encodes like `AddTodoRequest { title }`: it must not be taken for one.
        let err = node
            .request::<_, Todo>("todo_list/add_todo", "buy milk".to_string())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{place}: {err}");
        assert!(
            err.message().contains("AddTodoRequest")
                && err.message().contains("google.protobuf.StringValue"),
            "{place}: {err}"
        );
        // The response type is checked too.
        let err = node
            .request::<_, String>("todo_list/add_todo", buy_milk())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{place}: {err}");
        assert!(
            err.message().contains("Todo") && err.message().contains("google.protobuf.StringValue"),
            "{place}: {err}"
        );
        // The right types still work, dynamically and through the client.
        let todo: Todo = node
            .request("todo_list/add_todo", buy_milk())
            .await
            .unwrap();
        assert_eq!(todo.title, "buy milk", "{place}");
        let todo = TodoListClient::new(node.clone())
            .add_todo(buy_milk())
            .await
            .unwrap();
        assert_eq!(todo.title, "buy milk", "{place}");
    }
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn wait_for_ready_waits_for_a_service_added_later() {
    common::init_tracing();
    let key = common::key();
    let a = started_server("todo-net", &key, false).await;
    let b = client("todo-net", &key, &a).await;
    b.wait_for_peers(1, WAIT).await.unwrap();

    // Without the option: NotFound at once.
    let err = b
        .request::<_, Todo>("todo_list/add_todo", buy_milk())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // With it: the call waits for the service, which A adds later.
    let options = RequestOptions::timeout(WAIT).with_wait_for_ready(true);
    let call = {
        let b = b.clone();
        tokio::spawn(async move {
            b.request_with::<_, Todo>("todo_list/add_todo", buy_milk(), options)
                .await
        })
    };
    let local_call = {
        let a = a.clone();
        let options = RequestOptions::timeout(WAIT).with_wait_for_ready(true);
        tokio::spawn(async move {
            a.request_with::<_, Todo>("todo_list/add_todo", buy_milk(), options)
                .await
        })
    };
    a.add_service(TodoList).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap().title, "buy milk");
    assert_eq!(local_call.await.unwrap().unwrap().title, "buy milk");

    // Within its deadline only.
    let options = RequestOptions::timeout(Duration::from_millis(50)).with_wait_for_ready(true);
    let err = b
        .request_with::<_, Todo>("todo_list/never", buy_milk(), options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        err.message().contains("no action `todo_list/never`"),
        "{err}"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn wait_for_action_and_wait_for_peers() {
    common::init_tracing();
    let key = common::key();
    let a = started_server("todo-net", &key, false).await;
    let err = a
        .wait_for_peers(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let err = a
        .wait_for_action("todo_list/add_todo", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().contains("0 peers connected"), "{err}");
    let err = a
        .wait_for_action("bad//path", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let b = client("todo-net", &key, &a).await;
    b.wait_for_peers(1, WAIT).await.unwrap();
    a.wait_for_peers(1, WAIT).await.unwrap();
    // Waits for the remote action, in a network named explicitly.
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_for_action("todo-net:todo_list/add_todo", WAIT).await })
    };
    a.add_service(TodoList).await.unwrap();
    waiting.await.unwrap().unwrap();
    let _: Todo = b.request("todo_list/add_todo", buy_milk()).await.unwrap();
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A subscription made right after the dialer's `start` returned, while the listening node
/// may still be finishing the hello (the dialer has the listener's hello, the listener has not
/// kept the dialer yet), still reaches the dialer: the listener's announcement either finds the
/// dialer kept or the dialer catches up once kept. Before the fix, an announcement that found
/// no peer yet was never sent, and the dialer never published to the subscription (about one
/// run in twenty of the events benchmark lost every event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_during_a_peers_hello_reaches_that_peer_50_times_of_50() {
    common::init_tracing();
    let key = common::key();
    for round in 0..50 {
        let a = started_server("ticks-net", &key, false).await;
        let b = client("ticks-net", &key, &a).await;
        let heard = Arc::new(AtomicU64::new(0));
        let counter = heard.clone();
        a.subscribe("ticks/x", move |_: u64, _ctx| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        })
        .await
        .unwrap();
        let deadline = Instant::now() + WAIT;
        while heard.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: b never published to a's subscription"
            );
            b.publish("ticks/x", 1u64).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (stopped_b, stopped_a) = tokio::join!(b.stop(), a.stop());
        stopped_b.unwrap();
        stopped_a.unwrap();
    }
}
