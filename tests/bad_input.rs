//! Bad input from a peer that holds the network key: malformed, truncated, oversized frames and
//! garbage on every kind of stream give errors, never a panic, and the node keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::{WAIT, key, started, wait_for};
use prost::Message;
use runar::__private::{NodeKeypair, Transport, TransportConfig, read_frame, wire, write_frame};
use runar::{Code, DiscoveryOptions, Node};

const MAX: usize = 4 * 1024 * 1024;

/// A raw QUIC client admitted to the network (it holds the key).
async fn raw_client(target: &Node) -> (Transport, quinn::Connection, NodeKeypair) {
    let keypair = NodeKeypair::generate().unwrap();
    let config = TransportConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        ..TransportConfig::default()
    };
    let transport = Transport::bind(config, &keypair, &key()).unwrap();
    let (conn, _) = transport
        .connect(target.local_addr().unwrap(), Some(&target.node_id()))
        .await
        .unwrap();
    (transport, conn, keypair)
}

/// Completes the hello on a control stream, so request streams are served.
async fn hello(
    conn: &quinn::Connection,
    keypair: &NodeKeypair,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let hello = wire::Hello {
        protocol_version: 1,
        node_id: keypair.node_id().to_string(),
        node_name: "raw".into(),
        network_id: key().network_id(),
        capabilities: Some(wire::Capabilities::default()),
        instance: 1,
    };
    write_frame(&mut send, &hello.encode_to_vec(), MAX)
        .await
        .unwrap();
    let theirs = read_frame(&mut recv, MAX).await.unwrap().unwrap();
    wire::Hello::decode(theirs).unwrap();
    (send, recv)
}

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
        timeout_ms: 5_000,
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
        let (_t, conn, _) = raw_client(&a).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(garbage).await;
        let _ = send.finish();
        tokio::time::timeout(WAIT, conn.closed())
            .await
            .expect("the node should close it");
        still_serves(&b).await;
    }
    // A hello that lies about the sender's id is refused too.
    let (_t, conn, _) = raw_client(&a).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let liar = wire::Hello {
        protocol_version: 1,
        node_id: b.node_id().to_string(),
        node_name: "liar".into(),
        network_id: key().network_id(),
        capabilities: None,
        instance: 2,
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
    let (_t, conn, keypair) = raw_client(&a).await;
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
    let (_t, conn, keypair) = raw_client(&a).await;
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
