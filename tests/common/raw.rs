//! A raw peer: a QUIC client that holds the network key and speaks the protocol by hand, for
//! tests of what a broken or hostile peer can do.

use std::net::SocketAddr;

use prost::Message;
use runar::__private::{NodeKeypair, Transport, TransportConfig, read_frame, wire, write_frame};
use runar::{Code, Node, NodeId};

use super::{WAIT, key, wait_for};

/// The default maximum message size, which raw peers use for their frames.
pub const MAX: usize = 4 * 1024 * 1024;

/// A raw endpoint on 127.0.0.1 holding the test key, with `max_message_size` (its
/// flow-control window too, at least 16 KiB).
pub fn transport(max_message_size: usize) -> (Transport, NodeKeypair) {
    transport_with(TransportConfig {
        max_message_size,
        receive_window: (max_message_size as u64).max(16 * 1024),
        ..TransportConfig::default()
    })
}

/// A raw endpoint on 127.0.0.1 holding the test key, with `config` (its bind address is set
/// here).
pub fn transport_with(config: TransportConfig) -> (Transport, NodeKeypair) {
    let keypair = NodeKeypair::generate().unwrap();
    let config = TransportConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    (Transport::bind(config, &keypair, &key()).unwrap(), keypair)
}

/// A raw QUIC connection to `target`, not yet past the hello (it holds the key).
pub async fn client(target: &Node) -> (Transport, quinn::Connection, NodeKeypair) {
    let (transport, keypair) = transport(MAX);
    let (conn, _) = transport
        .connect(target.local_addr().unwrap(), Some(&target.node_id()))
        .await
        .unwrap();
    (transport, conn, keypair)
}

/// [`client`] to the node `id` at `addr`, or `None` when it does not connect (for attackers,
/// which go on when the node refuses them).
pub async fn try_client(
    addr: SocketAddr,
    id: &NodeId,
    max_message_size: usize,
) -> Option<(Transport, quinn::Connection, NodeKeypair)> {
    let (transport, keypair) = transport(max_message_size);
    let (conn, _) = transport.connect(addr, Some(id)).await.ok()?;
    Some((transport, conn, keypair))
}

/// The hello of the raw peer `keypair` in the test network, announcing `capabilities`.
// Built with `..Default::default()` so that new protocol fields need no edit.
#[allow(clippy::needless_update)]
pub fn hello_with(keypair: &NodeKeypair, capabilities: wire::Capabilities) -> wire::Hello {
    wire::Hello {
        protocol_version: 2,
        node_id: keypair.node_id().to_string(),
        node_name: "raw".into(),
        network_id: key().network_id(),
        capabilities: Some(capabilities),
        instance: 1,
        ..Default::default()
    }
}

/// Sends `hello` on a new control stream; returns the stream and the node's hello, if it
/// answered within [`WAIT`].
pub async fn send_hello(
    conn: &quinn::Connection,
    hello: &wire::Hello,
) -> (quinn::SendStream, quinn::RecvStream, Option<wire::Hello>) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let _ = write_frame(&mut send, &hello.encode_to_vec(), MAX).await;
    let theirs = match tokio::time::timeout(WAIT, read_frame(&mut recv, MAX)).await {
        Ok(Ok(Some(frame))) => wire::Hello::decode(frame).ok(),
        _ => None,
    };
    (send, recv, theirs)
}

/// Completes the hello on a control stream, announcing `capabilities`; fails the test if the
/// node does not answer. Returns the control stream, kept open (and never read).
pub async fn hello_announcing(
    conn: &quinn::Connection,
    keypair: &NodeKeypair,
    capabilities: wire::Capabilities,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (send, recv, theirs) = send_hello(conn, &hello_with(keypair, capabilities)).await;
    theirs.expect("the node answers the hello");
    (send, recv)
}

/// [`hello_announcing`] nothing, so that request streams are served.
pub async fn hello(
    conn: &quinn::Connection,
    keypair: &NodeKeypair,
) -> (quinn::SendStream, quinn::RecvStream) {
    hello_announcing(conn, keypair, wire::Capabilities::default()).await
}

/// Capabilities with a 200,000-segment subscription and a 200,000-segment templated action.
pub fn deep_capabilities() -> wire::Capabilities {
    wire::Capabilities {
        version: 1,
        services: vec![wire::ServiceDescriptor {
            path: "deep".into(),
            name: "Deep".into(),
            network: "test".into(),
            actions: vec![format!("deep/{}{{x}}", "a/".repeat(199_998))],
            ..Default::default()
        }],
        subscriptions: vec![wire::SubscriptionDescriptor {
            id: 9,
            network: "test".into(),
            pattern: format!("{}>", "a/".repeat(199_999)),
            ..Default::default()
        }],
    }
}

/// An admitted connection to one node, past the hello.
pub struct RawPeer {
    /// Keeps the endpoint alive.
    pub transport: Transport,
    pub conn: quinn::Connection,
    pub id: NodeId,
    /// The node's hello (its capabilities list its subscriptions and their ids).
    pub theirs: wire::Hello,
    /// The control stream, kept open (and never read).
    pub control: (quinn::SendStream, quinn::RecvStream),
}

/// A subscription as a raw peer announces it, in the test network.
pub fn subscription(id: u64, pattern: &str) -> wire::SubscriptionDescriptor {
    wire::SubscriptionDescriptor {
        id,
        network: "test".into(),
        pattern: pattern.into(),
        ..Default::default()
    }
}

impl RawPeer {
    /// Connects to `target` with transport settings `config` (its bind address is set here),
    /// announces `subscriptions` in its hello, and waits until `target` lists it as a peer.
    pub async fn connect_with(
        target: &Node,
        config: TransportConfig,
        subscriptions: Vec<wire::SubscriptionDescriptor>,
    ) -> RawPeer {
        let (transport, keypair) = transport_with(config);
        let (conn, _) = transport
            .connect(target.local_addr().unwrap(), Some(&target.node_id()))
            .await
            .unwrap();
        let capabilities = wire::Capabilities {
            version: 1,
            subscriptions,
            ..Default::default()
        };
        let (send, recv, theirs) = send_hello(&conn, &hello_with(&keypair, capabilities)).await;
        let theirs = theirs.expect("the node answers the hello");
        let id = keypair.node_id();
        wait_for("the raw peer to be admitted", || {
            target.peers().contains(&id)
        })
        .await;
        RawPeer {
            transport,
            conn,
            id,
            theirs,
            control: (send, recv),
        }
    }

    /// [`connect_with`](Self::connect_with) default transport settings.
    pub async fn connect(
        target: &Node,
        subscriptions: Vec<wire::SubscriptionDescriptor>,
    ) -> RawPeer {
        Self::connect_with(target, TransportConfig::default(), subscriptions).await
    }

    /// The id the node announced for its subscription to `pattern`, if it announced one.
    pub fn subscription_id(&self, pattern: &str) -> Option<u64> {
        self.theirs
            .capabilities
            .as_ref()?
            .subscriptions
            .iter()
            .find(|s| s.pattern == pattern)
            .map(|s| s.id)
    }

    /// Sends `events` on a new event stream, in order.
    pub async fn send_events(&self, events: &[wire::Event]) {
        let mut stream = self.conn.open_uni().await.unwrap();
        stream.write_all(&[3]).await.unwrap();
        for event in events {
            write_frame(&mut stream, &event.encode_to_vec(), MAX)
                .await
                .unwrap();
        }
        stream.finish().unwrap();
    }
}

/// An event in the test network.
pub fn event(topic: &str, payload: impl Message, ids: Vec<u64>) -> wire::Event {
    wire::Event {
        network: "test".into(),
        topic: topic.into(),
        payload: payload.encode_to_vec().into(),
        subscription_ids: ids,
        ..Default::default()
    }
}

/// Sends a request for `path` in `network` on a new stream of `conn`; the payload bytes, or
/// the error's code and message.
pub async fn call(
    conn: &quinn::Connection,
    network: &str,
    path: &str,
    payload: &[u8],
) -> Result<Vec<u8>, (Code, String)> {
    let request = wire::Request {
        network: network.into(),
        path: path.into(),
        payload: payload.to_vec().into(),
        metadata: [("runar-timeout".into(), "5000".into())].into(),
        ..Default::default()
    };
    let body = request.encode_to_vec();
    let mut bytes = vec![2];
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    let frame = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX))
        .await
        .expect("no answer")
        .unwrap()
        .expect("an answer");
    match wire::Response::decode(frame).unwrap().result.unwrap() {
        wire::response::Result::Error(e) => Err((Code::from_u32(e.code), e.message)),
        wire::response::Result::Payload(p) => Ok(p.to_vec()),
    }
}
