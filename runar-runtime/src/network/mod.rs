//! The network layer: identity and admission, QUIC transport, framing.
//!
//! The transport knows nothing of services: it moves frames between authenticated nodes.
//!
//! * [`NodeKeypair`] / [`NodeId`]: a node's Ed25519 identity and the id derived from it.
//! * [`NetworkKey`]: the shared secret that admits nodes to a network (see [`admission`] for the
//!   scheme).
//! * [`Transport`]: one QUIC endpoint per node, mutual TLS 1.3 with ALPN `runar/1`; every
//!   connection comes with the peer's verified [`NodeId`].
//! * [`write_frame`] / [`read_frame`]: length-delimited frames on QUIC streams.

pub mod admission;
mod config;
mod error;
pub(crate) mod frames;
pub(crate) mod framing;
mod identity;
pub(crate) mod mesh;
mod peer;
mod tls;
mod transport;

#[cfg(test)]
mod tests;

pub use admission::NetworkKey;
pub use config::NetworkConfig;
pub use error::TransportError;
pub use framing::{FRAME_HEADER_LEN, read_frame, write_frame};
pub use identity::{NodeId, NodeKeypair, ParseNodeIdError, verify};
pub use tls::peer_node_id;
pub use transport::{Incoming, Transport, TransportConfig};
