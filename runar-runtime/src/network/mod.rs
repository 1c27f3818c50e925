//! The network layer: identity and admission, QUIC transport, framing.
//!
//! The transport knows nothing of services: it moves frames between authenticated nodes.

mod error;
mod identity;

pub use error::TransportError;
pub use identity::{NodeId, NodeKeypair, ParseNodeIdError, verify};
