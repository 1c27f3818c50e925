//! Events the node publishes about itself, on `$registry/…` topics, to local subscribers only.
//!
//! - `$registry/peer/{id}/discovered` — discovery reported a node of the network;
//! - `$registry/peer/{id}/connected` — a connection to it is up and capabilities exchanged;
//! - `$registry/peer/{id}/disconnected` — it left (goodbye, vanished, or closed);
//! - `$registry/service/{path}/{state}` — a local service changed state (`running`, `stopped`,
//!   `failed`); `$registry/service/>` matches them all.
//!
//! Subscribe to them like any event: `node.subscribe("$registry/peer/>", |e: PeerEvent, ctx| …)`.

use super::{BroadcastMode, Node, PublishOptions};
use crate::identity::NodeId;
use crate::network::PeerChange;
use crate::node::service::ServiceState;
use crate::value::Value;

/// The payload of `$registry/peer/…` events.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeerEvent {
    /// The peer's node id.
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The peer's name, when known (connected, disconnected).
    #[prost(string, tag = "2")]
    pub name: String,
    /// The peer's addresses, when known.
    #[prost(string, repeated, tag = "3")]
    pub addresses: Vec<String>,
}

/// The payload of `$registry/service/…` events.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ServiceEvent {
    /// The service's path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// The service's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The new state: `running`, `stopped` or `failed`.
    #[prost(string, tag = "3")]
    pub state: String,
}

impl Node {
    /// Publishes `$registry/peer/{id}/{change}` on this node, in the peer's `network` (so a
    /// subscriber of one network's registry events hears of that network's peers only).
    pub(crate) async fn publish_peer_event(
        &self,
        network: &str,
        peer: NodeId,
        change: PeerChange,
        name: &str,
        addresses: &[std::net::SocketAddr],
    ) {
        let change = match change {
            PeerChange::Discovered => "discovered",
            PeerChange::Connected => "connected",
            PeerChange::Disconnected => "disconnected",
        };
        let event = PeerEvent {
            node_id: peer.to_string(),
            name: name.to_owned(),
            addresses: addresses.iter().map(ToString::to_string).collect(),
        };
        let topic = if network == &*self.inner.network {
            format!("$registry/peer/{peer}/{change}")
        } else {
            format!("{network}:$registry/peer/{peer}/{change}")
        };
        self.publish_registry_event(topic, Value::new(event)).await;
    }

    /// Publishes `$registry/service/{path}/{state}` on this node.
    pub(crate) async fn publish_service_event(&self, path: &str, name: &str, state: ServiceState) {
        let state = match state {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
            _ => return,
        };
        let event = ServiceEvent {
            path: path.to_owned(),
            name: name.to_owned(),
            state: state.to_owned(),
        };
        self.publish_registry_event(
            format!("$registry/service/{path}/{state}"),
            Value::new(event),
        )
        .await;
    }

    async fn publish_registry_event(&self, topic: String, event: Value) {
        let options = PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly);
        if let Err(e) = self.publish_value(&topic, event, options).await {
            tracing::debug!(%topic, error = %e, "registry event not published");
        }
    }
}
