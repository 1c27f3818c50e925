//! The network layer: admission, QUIC transport, framing, the peers and the mesh.
//!
//! It knows nothing of services, the registry or the node: it moves frames between authenticated
//! nodes, and talks to the node above it only through [`NodeHandler`] (see `interface.rs`), with
//! decoded values.
//!
//! * [`NetworkKey`]: the shared secret that admits nodes to a network (see [`admission`] for the
//!   scheme); identities ([`NodeId`](crate::NodeId)) live in `identity.rs`, below.
//! * [`Transport`]: one QUIC endpoint per node, mutual TLS 1.3 with ALPN `runar/1`; every
//!   connection comes with the peer's verified node id.
//! * [`write_frame`] / [`read_frame`]: length-delimited frames on QUIC streams.
//! * [`Mesh`]: this node's connections to its peers.

pub mod admission;
mod budget;
mod config;
mod error;
mod event_queue;
pub(crate) mod frames;
pub(crate) mod framing;
mod interface;
mod lane;
mod mesh;
mod peer;
mod stream;
pub(crate) use stream::{
    MAX_CREDIT, MessageStream, Messages, StreamBuffer, ValueStream, value_messages,
};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use stream::{StreamItem, decode_for_fuzzing, decode_stream_frame};
mod tls;
mod transport;
mod udp;

#[cfg(test)]
mod tests;

/// The log rate limits, one level down (discovery uses them too); here for the network's paths.
pub(crate) use crate::log_limit;
pub use admission::NetworkKey;
pub use config::{NetworkConfig, PeerLimits};
pub use error::TransportError;
pub(crate) use frames::MorePayloads;
pub use framing::{FRAME_HEADER_LEN, read_frame, write_frame};
pub use interface::RefusalReason;
pub(crate) use interface::{
    EventPayload, EventRef, EventSink, InboundEvent, InboundRequest, InboundStream, NodeHandler,
    Offer, OutboundEvent, PeerChange, PeerEventCounters, PeerHandle, PeerLink, PeerNotice,
    PeerOffer, PeerRefusal, QueueRefusal, SubscriptionIds, Text,
};
pub(crate) use mesh::{Mesh, MeshSettings};
pub use tls::peer_node_id;
pub use transport::{Incoming, Pending, Transport, TransportConfig};
