//! A raw peer: a QUIC client that holds the network key and speaks the protocol by hand, for
//! tests of what a broken or hostile peer can do.

use prost::Message;
use runar::__private::{NodeKeypair, Transport, TransportConfig, read_frame, wire, write_frame};
use runar::{Node, NodeId};

use super::{key, wait_for};

const MAX: usize = 4 * 1024 * 1024;

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
    // The hello is built with `..Default::default()` so that new protocol fields need no edit.
    #[allow(clippy::needless_update)]
    pub async fn connect_with(
        target: &Node,
        config: TransportConfig,
        subscriptions: Vec<wire::SubscriptionDescriptor>,
    ) -> RawPeer {
        let keypair = NodeKeypair::generate().unwrap();
        let config = TransportConfig {
            bind_addr: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let transport = Transport::bind(config, &keypair, &key()).unwrap();
        let (conn, _) = transport
            .connect(target.local_addr().unwrap(), Some(&target.node_id()))
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[1]).await.unwrap();
        let hello = wire::Hello {
            protocol_version: 1,
            node_id: keypair.node_id().to_string(),
            node_name: "raw".into(),
            network_id: key().network_id(),
            capabilities: Some(wire::Capabilities {
                version: 1,
                subscriptions,
                ..Default::default()
            }),
            instance: 1,
            ..Default::default()
        };
        write_frame(&mut send, &hello.encode_to_vec(), MAX)
            .await
            .unwrap();
        let theirs = read_frame(&mut recv, MAX).await.unwrap().unwrap();
        let theirs = wire::Hello::decode(theirs).unwrap();
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
