//! Bad input from a peer that holds the network key: malformed, truncated, oversized frames and
//! garbage on every kind of stream give errors, never a panic, and the node keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::raw::{self, MAX, deep_capabilities, hello, hello_announcing};
use common::{WAIT, key, started, wait_for};
use prost::Message;
use runar::__private::{NodeKeypair, read_frame, wire, write_frame};
use runar::{Code, DiscoveryOptions, Node};

/// Sends `bytes` on a new request stream and returns the error code of the answer, if any.
async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Option<Code> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let frame = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX))
        .await
        .expect("no answer")
        .ok()??;
    match wire::Response::decode(frame).ok()?.result? {
        wire::response::Result::Error(e) => Some(Code::from_u32(e.code)),
        wire::response::Result::Payload(_) => None,
    }
}

fn request_frame(path: &str, payload: &[u8]) -> Vec<u8> {
    let request = wire::Request {
        network: "test".into(),
        path: path.into(),
        payload: payload.to_vec().into(),
        metadata: [("runar-timeout".into(), "5000".into())].into(),
        ..Default::default()
    };
    let body = request.encode_to_vec();
    let mut bytes = vec![2];
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

async fn server() -> (Node, Node) {
    common::init_tracing();
    let a = common::node("a", &key(), DiscoveryOptions::none()).await;
    a.add_service(Fixture::new("a").0).await.unwrap();
    a.start().await.unwrap();
    let b = started("b", &key(), &[&a]).await;
    wait_for("b to connect", || b.peers() == [a.node_id()]).await;
    (a, b)
}

async fn still_serves(b: &Node) {
    let n: u64 = b.request("echo/double", 21u64).await.unwrap();
    assert_eq!(n, 42);
}

#[tokio::test]
async fn garbage_instead_of_a_hello_closes_only_that_connection() {
    let (a, b) = server().await;
    for garbage in [
        &b"\x01\xff\xff\xff\xff"[..],
        b"\x02hello",
        b"\x01\x00\x00\x00\x03abc",
        b"",
    ] {
        let (_t, conn, _) = raw::client(&a).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(garbage).await;
        let _ = send.finish();
        tokio::time::timeout(WAIT, conn.closed())
            .await
            .expect("the node should close it");
        still_serves(&b).await;
    }
    // A hello that lies about the sender's id is refused too.
    let (_t, conn, _) = raw::client(&a).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let liar = wire::Hello {
        protocol_version: 2,
        node_id: b.node_id().to_string(),
        node_name: "liar".into(),
        network_id: key().network_id(),
        capabilities: None,
        instance: 2,
        ..Default::default()
    };
    write_frame(&mut send, &liar.encode_to_vec(), MAX)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("a lying hello is refused");
    still_serves(&b).await;
    assert_eq!(a.peers(), [b.node_id()]);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_request_streams_get_errors_not_panics() {
    let (a, b) = server().await;
    let (_t, conn, keypair) = raw::client(&a).await;
    let _control = hello(&conn, &keypair).await;

    // A well-formed request works on the raw connection.
    let ok = request_frame("echo/double", &prost::Message::encode_to_vec(&21u64));
    assert_eq!(send_raw(&conn, &ok).await, None);

    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "unknown stream kind",
            vec![9, 0, 0, 0, 1, 0],
            Code::InvalidArgument,
        ),
        ("truncated header", vec![2, 0, 0], Code::InvalidArgument),
        (
            "truncated body",
            vec![2, 0, 0, 0, 100, 1, 2, 3],
            Code::InvalidArgument,
        ),
        (
            "oversized frame",
            vec![2, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            Code::ResourceExhausted,
        ),
        (
            "garbage protobuf",
            vec![2, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
            Code::InvalidArgument,
        ),
        ("no frame at all", vec![2], Code::InvalidArgument),
        (
            "garbage payload",
            request_frame("echo/double", &[0xff; 12]),
            Code::InvalidArgument,
        ),
        (
            "invalid path",
            request_frame("echo//double", &[]),
            Code::InvalidArgument,
        ),
        (
            "two networks",
            request_frame("a:b:c", &[]),
            Code::InvalidArgument,
        ),
        (
            "missing action",
            request_frame("echo/nothing", &[]),
            Code::NotFound,
        ),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(send_raw(&conn, &bytes).await, Some(code), "{what}");
    }
    // An empty stream is simply dropped.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.finish().unwrap();

    // Garbage event streams and garbage control frames are dropped without harm.
    for garbage in [
        &b"\x03\x00\x00\x00\x02\xff\xff"[..],
        b"\x07junk",
        b"\x03\xff\xff\xff\xff",
    ] {
        let mut uni = conn.open_uni().await.unwrap();
        let _ = uni.write_all(garbage).await;
        let _ = uni.finish();
    }
    assert_eq!(
        send_raw(&conn, &ok).await,
        None,
        "the raw connection still serves"
    );
    still_serves(&b).await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_control_stream_drops_only_that_peer() {
    let (a, b) = server().await;
    let (_t, conn, keypair) = raw::client(&a).await;
    let (mut control, _recv) = hello(&conn, &keypair).await;
    // A malformed control message is skipped...
    write_frame(&mut control, &[0xff, 0xff, 0xff], MAX)
        .await
        .unwrap();
    let ok = request_frame("echo/double", &prost::Message::encode_to_vec(&21u64));
    assert_eq!(send_raw(&conn, &ok).await, None);
    // ...an oversized one ends the connection.
    control.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the node should close it");
    still_serves(&b).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// Closes the raw connection and waits until `node` has dropped the peer.
async fn leave(node: &Node, conn: quinn::Connection, raw: &NodeKeypair) {
    wait_for("the raw peer to be admitted", || {
        node.peers().contains(&raw.node_id())
    })
    .await;
    conn.close(0u32.into(), b"bye");
    wait_for("the raw peer to be dropped", || {
        !node.peers().contains(&raw.node_id())
    })
    .await;
}

/// A hello announcing paths far over the limits is refused entry by entry; the node neither
/// aborts nor stops serving when that peer comes and goes.
#[tokio::test]
async fn a_hello_announcing_huge_paths_does_not_abort_the_node() {
    let (a, b) = server().await;
    let (_t, conn, keypair) = raw::client(&a).await;
    let _control = hello_announcing(&conn, &keypair, deep_capabilities()).await;
    still_serves(&b).await;
    leave(&a, conn, &keypair).await;
    still_serves(&b).await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// With the limits raised, the same hello is taken: the deep subscription gets events, and is
/// removed without overflowing the stack when the peer leaves.
#[tokio::test]
async fn deep_announced_paths_within_raised_limits_are_routed_and_removed() {
    common::init_tracing();
    let config = runar::NodeConfig::new("a", "test")
        .with_path_limits(1 << 20, 300_000)
        .with_network_config(common::network(&key(), DiscoveryOptions::none()));
    let a = Node::new(config).await.unwrap();
    a.add_service(Fixture::new("a").0).await.unwrap();
    a.start().await.unwrap();
    let (_t, conn, keypair) = raw::client(&a).await;
    let _control = hello_announcing(&conn, &keypair, deep_capabilities()).await;

    let topic = format!("{}a", "a/".repeat(200_000));
    let mut events = None;
    let started = std::time::Instant::now();
    while events.is_none() {
        assert!(started.elapsed() < WAIT, "no event reached the raw peer");
        a.publish(topic.as_str(), 5u64).await.unwrap();
        events = tokio::time::timeout(Duration::from_millis(100), conn.accept_uni())
            .await
            .ok();
    }
    let mut uni = events.unwrap().unwrap();
    let mut kind = [0u8];
    uni.read_exact(&mut kind).await.unwrap();
    assert_eq!(kind, [3]);
    let event = wire::Event::decode(read_frame(&mut uni, MAX).await.unwrap().unwrap()).unwrap();
    assert_eq!(event.subscription_ids, [9]);
    assert_eq!(event.topic, topic);

    leave(&a, conn, &keypair).await;
    let n: u64 = a.request("echo/double", 4u64).await.unwrap();
    assert_eq!(n, 8);
    a.stop().await.unwrap();
}

/// An event from a peer whose topic is over the depth limit is dropped before it is routed;
/// the next, valid event on the same stream is delivered.
#[tokio::test]
async fn an_inbound_event_with_a_topic_over_the_limits_is_dropped() {
    let (a, b) = server().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = a
        .subscribe("t/>", move |n: u64, ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((ctx.topic().to_owned(), n));
                Ok(())
            }
        })
        .await
        .unwrap();
    let id: u64 = sub.to_string().trim_start_matches("sub-").parse().unwrap();
    let (_t, conn, keypair) = raw::client(&a).await;
    let _control = hello(&conn, &keypair).await;
    wait_for("the raw peer to be admitted", || {
        a.peers().contains(&keypair.node_id())
    })
    .await;

    let deep = format!("t/{}", vec!["s"; 32].join("/")); // 33 segments, the default is 32
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[3]).await.unwrap();
    for (topic, n) in [(deep.as_str(), 1u64), ("t/ok", 2)] {
        let event = wire::Event {
            network: "test".into(),
            topic: topic.into(),
            payload: n.encode_to_vec().into(),
            subscription_ids: vec![id],
            retained: false,
            ..Default::default()
        };
        write_frame(&mut uni, &event.encode_to_vec(), MAX)
            .await
            .unwrap();
    }
    // Events on one stream are handled in order: once the second arrives, the first was dropped.
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the valid event never arrived")
        .unwrap();
    assert_eq!(got, ("t/ok".to_owned(), 2));
    assert!(rx.try_recv().is_err());
    still_serves(&b).await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A goodbye announcing more event frames than the peer will ever send: the node drops the
/// peer's routes at once and closes the connection after its drain timeout (the request
/// timeout), not never.
#[tokio::test]
async fn a_goodbye_announcing_events_that_never_come_is_waited_for_only_the_drain_timeout() {
    common::init_tracing();
    let config = runar::NodeConfig::new("a", "test")
        .with_request_timeout(Duration::from_millis(300))
        .with_network_config(common::network(&key(), DiscoveryOptions::none()));
    let a = Node::new(config).await.unwrap();
    a.start().await.unwrap();
    let (_t, conn, keypair) = raw::client(&a).await;
    let (mut control, _recv) = hello(&conn, &keypair).await;
    wait_for("the raw peer to be admitted", || {
        a.peers().contains(&keypair.node_id())
    })
    .await;
    let goodbye = wire::Control {
        kind: Some(wire::control::Kind::Goodbye(wire::Goodbye {
            reason: "lying".into(),
            events: u64::MAX,
        })),
    };
    write_frame(&mut control, &goodbye.encode_to_vec(), MAX)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the node closes the connection after its drain timeout");
    wait_for("the raw peer to be dropped", || a.peers().is_empty()).await;
    a.stop().await.unwrap();
}
