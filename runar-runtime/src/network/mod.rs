//! The network layer: identity and admission, QUIC transport, framing.
//!
//! The transport knows nothing of services: it moves frames between authenticated nodes.

pub mod admission;
mod error;
mod framing;
mod identity;
mod tls;

pub use admission::NetworkKey;
pub use error::TransportError;
pub use framing::{FRAME_HEADER_LEN, read_frame, write_frame};
pub use identity::{NodeId, NodeKeypair, ParseNodeIdError, verify};
pub use tls::peer_node_id;
