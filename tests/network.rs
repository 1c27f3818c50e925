//! The mesh over QUIC on 127.0.0.1: admission by network key, a vanished peer noticed and
//! failed over, the connection limit, and a static peer retried until it comes up.
//! (Requests and events across nodes are in `requests.rs` and `events.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::{key, pair, started, wait_for};
use runar::{Code, DiscoveryOptions, NetworkKey, Node};

#[tokio::test]
async fn a_node_with_the_wrong_key_is_refused() {
    let (a, b, _) = pair().await;
    let intruder = started("intruder", &NetworkKey::from_secret("wrong secret"), &[&a]).await;
    // A legitimate node that dials after the intruder is admitted; the intruder still is not.
    let late = started("late", &key(), &[&a]).await;
    wait_for("late to connect", || late.peers() == [a.node_id()]).await;
    assert!(intruder.peers().is_empty());
    assert!(!a.peers().contains(&intruder.node_id()));
    let err = intruder
        .request::<(), String>("echo/who", ())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    for n in [&intruder, &late, &b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_vanished_node_is_removed_within_three_seconds_and_calls_fail_over() {
    common::init_tracing();
    let key = key();
    let b = common::node("b", &key, DiscoveryOptions::none()).await;
    let (fixture, _) = Fixture::new("b");
    b.add_service(fixture).await.unwrap();
    b.start().await.unwrap();

    // c runs on a runtime of its own, so it can vanish without `stop` (no goodbye, no close).
    let (c_tx, c_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let c_key = key.clone();
    let c_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = common::node("c", &c_key, DiscoveryOptions::none()).await;
            let (fixture, _) = Fixture::new("c");
            c.add_service(fixture).await.unwrap();
            c.start().await.unwrap();
            c_tx.send((c.local_addr().unwrap(), c.node_id())).unwrap();
            // Keep serving until told to vanish.
            tokio::task::spawn_blocking(move || kill_rx.recv())
                .await
                .unwrap()
                .ok();
            std::mem::forget(c);
        });
        rt.shutdown_background();
    });
    let (c_addr, c_id) = c_rx.recv().unwrap();

    let a = common::node(
        "a",
        &key,
        DiscoveryOptions::static_peers([b.local_addr().unwrap(), c_addr]),
    )
    .await;
    a.start().await.unwrap();
    wait_for("a to connect to b and c", || a.peers().len() == 2).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(a.request::<(), String>("echo/who", ()).await.unwrap());
    }
    assert_eq!(seen.len(), 2);

    kill_tx.send(()).unwrap();
    c_thread.join().unwrap();
    let vanished = Instant::now();
    wait_for("c to be removed", || !a.peers().contains(&c_id)).await;
    let took = vanished.elapsed();
    println!("vanished peer removed after {took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    for _ in 0..10 {
        let who: String = a.request("echo/who", ()).await.unwrap();
        assert_eq!(who, "b");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn max_connections_refuses_the_excess() {
    common::init_tracing();
    let key = key();
    let a = Node::new(runar::NodeConfig::new("a", "test").with_network_config(
        common::network(&key, DiscoveryOptions::none()).with_max_connections(1),
    ))
    .await
    .unwrap();
    let (fixture, _) = Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key, &[&a]).await;
    wait_for("b to connect", || b.peers().len() == 1).await;
    let c = started("c", &key, &[&a]).await;
    let d = started("d", &key, &[&a]).await;
    wait_for("d to connect to nobody (refused)", || d.peers().is_empty()).await;
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    assert!(c.request::<(), String>("echo/who", ()).await.is_err());
    assert_eq!(a.peers(), [b.node_id()]);
    for n in [&d, &c, &b, &a] {
        n.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_static_peer_that_is_down_is_retried_until_it_comes_up() {
    common::init_tracing();
    let key = key();
    // An address nobody listens on yet.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = common::node("b", &key, DiscoveryOptions::static_peers([addr])).await;
    b.start().await.unwrap();
    // Let a few attempts fail (backoff 100 ms, 200 ms, ...).
    let _: () = tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.peers().is_empty());

    let a = runar::Node::new(runar::NodeConfig::new("a", "test").with_network_config(
        common::network(&key, DiscoveryOptions::none()).with_bind_address(addr),
    ))
    .await
    .unwrap();
    let (fixture, _) = Fixture::new("a");
    a.add_service(fixture).await.unwrap();
    a.start().await.unwrap();
    let up = Instant::now();
    wait_for("b to reach a once it is up", || b.peers() == [a.node_id()]).await;
    println!("static peer reached {:?} after it came up", up.elapsed());
    let who: String = b.request("echo/who", ()).await.unwrap();
    assert_eq!(who, "a");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// The protocol as a peer sees it: a node's small requests to that peer share one call stream
/// (kind 5), each `Request` carrying its own `call` id and each answered by the `Response`
/// carrying that id, in whatever order the peer answers; a large request gets a stream of its
/// own (kind 2).
#[tokio::test]
async fn small_requests_share_one_call_stream_and_a_large_one_gets_its_own() {
    use prost::Message as _;
    use runar::__private::{read_frame, wire, write_frame};

    let a = started("a", &key(), &[]).await;
    let (_t, conn, keypair) = common::raw::client(&a).await;
    let capabilities = wire::Capabilities {
        version: 1,
        services: vec![wire::ServiceDescriptor {
            path: "raw".into(),
            name: "Raw".into(),
            version: "1".into(),
            network: "test".into(),
            actions: vec!["raw/echo".into()],
            ..Default::default()
        }],
        subscriptions: vec![],
    };
    let _control = common::raw::hello_announcing(&conn, &keypair, capabilities).await;
    common::wait_for_action(&a, "raw/echo").await;

    // The raw peer: echoes every call, the later calls sooner (each answer waits 100 µs times
    // 255 less the last byte of the call's number); counts the streams of each kind.
    let serving = conn.clone();
    let kinds = tokio::spawn(async move {
        let mut kinds = Vec::new();
        while let Ok(Ok((mut send, mut recv))) =
            tokio::time::timeout(Duration::from_secs(1), serving.accept_bi()).await
        {
            let mut kind = [0u8; 1];
            recv.read_exact(&mut kind).await.unwrap();
            kinds.push(kind[0]);
            let (answers, mut to_write) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            tokio::spawn(async move {
                while let Some(answer) = to_write.recv().await {
                    if write_frame(&mut send, &answer, common::raw::MAX)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut recv, common::raw::MAX).await {
                    let request = wire::Request::decode(frame).unwrap();
                    let last = request.payload.get(3).copied().unwrap_or(0);
                    let wait = Duration::from_micros(100 * u64::from(255 - last));
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let answer = wire::Response {
                            call: request.call,
                            result: Some(wire::response::Result::Payload(request.payload)),
                        };
                        let _ = answers.send(answer.encode_to_vec());
                    });
                }
            });
        }
        kinds
    });

    let calls = (0..200u32).map(|i| {
        let a = a.clone();
        async move {
            let payload = i.to_be_bytes().repeat(25);
            let echoed: Vec<u8> = a.request("raw/echo", payload.clone()).await.unwrap();
            assert_eq!(echoed, payload, "call {i} got another call's answer");
        }
    });
    futures::future::join_all(calls).await;
    let large = vec![7u8; 100_000];
    let echoed: Vec<u8> = a.request("raw/echo", large.clone()).await.unwrap();
    assert_eq!(echoed, large);

    let mut kinds = kinds.await.unwrap();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [2, 5],
        "200 small calls on one call stream, the large one on its own"
    );
    a.stop().await.unwrap();
}
