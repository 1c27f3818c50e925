//! Publish and subscribe, on one node and across nodes over QUIC on 127.0.0.1: wildcards and
//! templates, ordering, unsubscribe, retained events, broadcast modes, failing handlers, and the
//! publisher's identity. (Flow control and inbound event hygiene are in `events.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::{WAIT, key, next, pair, started, wait_for};
use runar::{
    BroadcastMode, Caller, Code, DiscoveryOptions, Error, Node, NodeConfig, PublishOptions,
    SubscribeOptions,
};
use tokio::sync::mpsc;

async fn node() -> Node {
    Node::new(NodeConfig::new("test-node", "test"))
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// On one node

#[tokio::test]
async fn wildcards_and_templates_in_subscriptions() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for pattern in ["math/>", "math/*", "math/{op}/done", "other/x"] {
        let tx = tx.clone();
        node.subscribe(pattern, move |v: f64, ctx| {
            let tx = tx.clone();
            async move {
                let op = ctx.param("op").map(str::to_owned);
                tx.send((pattern, ctx.topic().to_owned(), op, v)).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    node.publish("math/add/done", 1.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|g| g.0);
    assert_eq!(got[0], ("math/>", "math/add/done".into(), None, 1.0));
    assert_eq!(
        got[1],
        (
            "math/{op}/done",
            "math/add/done".into(),
            Some("add".into()),
            1.0
        )
    );
    node.publish("math/add", 2.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|g| g.0);
    assert_eq!((got[0].0, got[1].0), ("math/*", "math/>"));
    // A control event on another topic arrives next: nothing else was delivered.
    node.publish("other/x", 3.0f64).await.unwrap();
    assert_eq!(next(&mut rx).await.0, "other/x");
}

#[tokio::test]
async fn one_subscriber_sees_a_publishers_events_in_order() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("seq", move |n: u64, _| {
        let tx = tx.clone();
        async move {
            tx.send(n).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    for n in 0..500u64 {
        node.publish("seq", n).await.unwrap();
    }
    for n in 0..500u64 {
        assert_eq!(next(&mut rx).await, n);
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    let sub = node
        .subscribe("news", move |s: String, _| {
            let tx = tx.clone();
            async move {
                tx.send(format!("sub: {s}")).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    node.subscribe("control", move |s: String, _| {
        let tx = tx2.clone();
        async move {
            tx.send(format!("control: {s}")).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    node.publish("news", String::from("one")).await.unwrap();
    assert_eq!(next(&mut rx).await, "sub: one");
    node.unsubscribe(&sub).await.unwrap();
    node.publish("news", String::from("two")).await.unwrap();
    node.publish("control", String::from("three"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, "control: three");
    assert!(rx.try_recv().is_err(), "nothing after unsubscribe");
    assert_eq!(
        node.unsubscribe(sub).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn retained_events_reach_a_late_subscriber() {
    let node = node().await;
    node.start().await.unwrap();
    let retain = PublishOptions::default().with_retain_for(Duration::from_secs(60));
    node.publish_with("sensors/temp", 20.5f64, retain.clone())
        .await
        .unwrap();
    node.publish_with("sensors/temp", 21.5f64, retain.clone())
        .await
        .unwrap(); // latest wins
    node.publish_with("sensors/hum", 40.0f64, retain)
        .await
        .unwrap();
    node.publish("sensors/wind", 3.0f64).await.unwrap(); // not retained
    node.publish_with(
        "sensors/old",
        1.0f64,
        PublishOptions::default().with_retain_for(Duration::ZERO),
    )
    .await
    .unwrap(); // expired at once

    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    node.subscribe_with(
        "sensors/>",
        SubscribeOptions::include_past(),
        move |v: f64, ctx| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.topic().to_owned(), v, ctx.is_retained()))
                    .unwrap();
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("sensors/hum".into(), 40.0, true),
            ("sensors/temp".into(), 21.5, true)
        ]
    );
    // Without include_past, retained events are not replayed.
    node.subscribe("sensors/>", move |v: f64, ctx| {
        let tx = tx2.clone();
        async move {
            tx.send((format!("plain {}", ctx.topic()), v, ctx.is_retained()))
                .unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    node.publish("sensors/live", 7.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("plain sensors/live".into(), 7.0, false),
            ("sensors/live".into(), 7.0, false)
        ]
    );
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn broadcast_modes_on_one_node() {
    let node = node().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for path in ["billing", "shipping"] {
        let (fixture, _) = Fixture::new("test-node");
        node.add_service(fixture.at(path).listening("orders/created", &tx))
            .await
            .unwrap();
    }
    node.start().await.unwrap();
    for mode in [
        BroadcastMode::All,
        BroadcastMode::OnePerService,
        BroadcastMode::LocalOnly,
    ] {
        node.publish_with(
            "orders/created",
            1u64,
            PublishOptions::default().with_broadcast(mode),
        )
        .await
        .unwrap();
        let mut got = [next(&mut rx).await.1, next(&mut rx).await.1];
        got.sort();
        assert_eq!(got, ["billing", "shipping"], "{mode:?}");
    }
    assert!(rx.try_recv().is_err());
    // A removed service's subscriptions go with it.
    node.remove_service("billing").await.unwrap();
    node.publish("orders/created", 2u64).await.unwrap();
    assert_eq!(next(&mut rx).await.1, "shipping");
}

#[tokio::test]
async fn a_failing_or_panicking_event_handler_does_not_end_the_subscription() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("jobs", move |n: u64, _| {
        let tx = tx.clone();
        async move {
            match n {
                0 => Err(Error::internal("bad job")),
                1 => panic!("worse job"),
                n => {
                    tx.send(n).unwrap();
                    Ok(())
                }
            }
        }
    })
    .await
    .unwrap();
    for n in 0..3u64 {
        node.publish("jobs", n).await.unwrap();
    }
    assert_eq!(next(&mut rx).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Across nodes

#[tokio::test]
async fn events_cross_nodes_with_the_publisher_identity_and_retained_replay() {
    let (a, b, _) = pair().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    // Subscribing returns once peers know of the subscription.
    b.subscribe("news/{kind}", move |text: String, ctx| {
        let tx = tx.clone();
        async move {
            let from = match ctx.publisher() {
                Caller::Remote(id) => id.to_string(),
                _ => "local".into(),
            };
            tx.send((ctx.param("kind").unwrap().to_owned(), text, from))
                .unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    for i in 0..20 {
        a.publish("news/sport", format!("goal {i}")).await.unwrap();
    }
    for i in 0..20 {
        let (kind, text, from) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (kind.as_str(), text),
            ("sport", format!("goal {i}")),
            "in order"
        );
        assert_eq!(from, a.node_id().to_string());
    }

    // Retained on a, replayed to a subscription made later on b.
    let retain = PublishOptions::default().with_retain_for(Duration::from_secs(60));
    a.publish_with("status/a", String::from("ready"), retain)
        .await
        .unwrap();
    b.subscribe_with(
        "status/>",
        SubscribeOptions::include_past(),
        move |s: String, ctx| {
            let tx = tx2.clone();
            async move {
                tx.send((ctx.topic().to_owned(), s, ctx.is_retained().to_string()))
                    .unwrap();
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("status/a".into(), "ready".into(), "true".into()));
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn broadcast_modes_across_three_nodes() {
    common::init_tracing();
    let key = key();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    let listener = |node, path| {
        Fixture::new(node)
            .0
            .at(path)
            .listening("orders/created", &tx)
    };
    b.add_service(listener("b", "billing")).await.unwrap();
    b.start().await.unwrap();
    let c = common::node("c", &key, DiscoveryOptions::none()).await;
    c.add_service(listener("c", "billing")).await.unwrap();
    c.add_service(listener("c", "shipping")).await.unwrap();
    c.start().await.unwrap();
    let a = started("a", &key, &[&b, &c]).await;
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;

    let mut collect = async |n: usize| {
        let mut got = std::collections::HashMap::new();
        for _ in 0..n {
            let key = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            *got.entry(key).or_insert(0) += 1;
        }
        got
    };

    // All: every subscription on every node.
    for _ in 0..10 {
        a.publish("orders/created", 1u64).await.unwrap();
    }
    let got = collect(30).await;
    assert_eq!(got[&("b", "billing")], 10);
    assert_eq!(got[&("c", "billing")], 10);
    assert_eq!(got[&("c", "shipping")], 10);

    // OnePerService: exactly one billing instance per event, rotating; shipping every time.
    let one = PublishOptions::default().with_broadcast(BroadcastMode::OnePerService);
    for _ in 0..10 {
        a.publish_with("orders/created", 2u64, one.clone())
            .await
            .unwrap();
    }
    let got = collect(20).await;
    assert_eq!(
        got[&("b", "billing")] + got[&("c", "billing")],
        10,
        "{got:?}"
    );
    assert_eq!(got[&("b", "billing")], 5, "rotates: {got:?}");
    assert_eq!(got[&("c", "shipping")], 10);

    // LocalOnly from a: a has no subscribers, so nothing arrives; a control event proves it.
    let local = PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly);
    a.publish_with("orders/created", 3u64, local).await.unwrap();
    c.publish_with(
        "orders/created",
        4u64,
        PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly),
    )
    .await
    .unwrap();
    let got = collect(2).await;
    assert_eq!(got.get(&("b", "billing")), None, "{got:?}");
    assert!(rx.try_recv().is_err());
    for n in [&a, &b, &c] {
        n.stop().await.unwrap();
    }
}
