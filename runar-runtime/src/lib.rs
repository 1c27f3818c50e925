//! Runar's runtime: the Node, routing, the registry, type-erased values, the QUIC transport,
//! discovery and security.
//!
//! Most users depend on the `runar` facade crate, which re-exports everything here.

mod error;
pub mod network;

pub use error::{Code, Error, Result};
pub use network::{NetworkKey, NodeId, NodeKeypair, Transport, TransportConfig, TransportError};
