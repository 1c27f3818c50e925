//! [`TransportError`]: the network layer's typed error, and its mapping to [`crate::Error`].

use std::{io, net::SocketAddr, time::Duration};

use crate::Error;
use crate::identity::IdentityError;

/// A failure in the network layer: identity, admission, the QUIC transport or framing.
///
/// Converts into [`crate::Error`] with a fitting [`crate::Code`]; match on the variants when the
/// kind of failure matters (for example [`TransportError::FrameTooLarge`], to reset the stream).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A frame's declared (or, when sending, actual) length exceeds the maximum. When reading,
    /// the body has not been read: the caller should stop or reset the stream.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's length in bytes.
        len: u64,
        /// The maximum allowed length in bytes.
        max: usize,
    },
    /// The stream finished in the middle of a frame.
    #[error("stream finished mid-frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// The number of bytes the frame header (or body) required.
        expected: usize,
        /// The number of bytes received before the stream finished.
        got: usize,
    },
    /// Reading from a stream failed (reset by the peer, connection lost).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to a stream failed (stopped by the peer, connection lost).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The connection failed or closed; includes handshakes refused for a bad certificate.
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A connection could not be started.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake did not complete within the connect timeout.
    #[error("handshake with {addr} timed out after {after:?}")]
    Timeout {
        /// The remote address.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The peer's identity could not be established or was not the one expected.
    #[error("peer identity: {0}")]
    PeerIdentity(String),
    /// A peer started a frame and did not finish it in time.
    #[error("a frame did not arrive within {0:?}")]
    ReadTimeout(Duration),
    /// A peer's frame of this many bytes found no room in the node's budget of buffered
    /// peer bytes (`NetworkConfig::max_request_bytes`).
    #[error("no room for a frame of {0} bytes in the node's budget")]
    OverBudget(usize),
    /// The transport already has its maximum number of connections.
    #[error("connection limit of {0} reached")]
    TooManyConnections(usize),
    /// A key (node keypair, PKCS#8 document) is malformed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The transport configuration is invalid.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// Building certificates or TLS configuration failed.
    #[error("tls setup: {0}")]
    Tls(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// A file operation (reading or writing a key file) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl From<IdentityError> for TransportError {
    fn from(err: IdentityError) -> Self {
        match err {
            IdentityError::InvalidKey(msg) => TransportError::InvalidKey(msg),
            IdentityError::Io { context, source } => TransportError::Io { context, source },
        }
    }
}

/// True for QUIC transport error codes that carry a TLS alert (0x100..=0x1ff, RFC 9001 §4.8):
/// the handshake was refused because of a certificate or identity problem.
fn is_crypto_code(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}

impl TransportError {
    /// True when the failure is a refused TLS handshake: a bad or foreign certificate, a peer
    /// without the network key, or a peer that is not the node we expected.
    pub fn is_handshake_refused(&self) -> bool {
        match self {
            TransportError::PeerIdentity(_) => true,
            TransportError::Connection(quinn::ConnectionError::TransportError(e)) => {
                is_crypto_code(e.code)
            }
            TransportError::Connection(quinn::ConnectionError::ConnectionClosed(c)) => {
                is_crypto_code(c.error_code)
            }
            _ => false,
        }
    }

    /// True when a dial heard nothing from the peer before it gave up (the handshake idled
    /// out, or the connect timeout passed): the peer is down or unreachable, not refusing.
    pub fn is_unanswered(&self) -> bool {
        matches!(
            self,
            TransportError::Connection(quinn::ConnectionError::TimedOut)
                | TransportError::Timeout { .. }
        )
    }
}

#[doc(hidden)] // the transport is internal
impl From<TransportError> for Error {
    fn from(err: TransportError) -> Self {
        let msg = err.to_string();
        if err.is_handshake_refused() {
            return Error::permission_denied(msg);
        }
        match err {
            TransportError::FrameTooLarge { .. }
            | TransportError::TooManyConnections(_)
            | TransportError::OverBudget(_) => Error::resource_exhausted(msg),
            TransportError::Truncated { .. }
            | TransportError::InvalidKey(_)
            | TransportError::InvalidConfig(_)
            | TransportError::Connect(quinn::ConnectError::InvalidRemoteAddress(_)) => {
                Error::invalid_argument(msg)
            }
            TransportError::Tls(_) | TransportError::Io { .. } => Error::internal(msg),
            TransportError::PeerIdentity(_) => Error::permission_denied(msg),
            TransportError::Read(_)
            | TransportError::Write(_)
            | TransportError::Connection(_)
            | TransportError::Connect(_)
            | TransportError::Timeout { .. }
            | TransportError::ReadTimeout(_)
            | TransportError::Bind { .. } => Error::unavailable(msg),
        }
    }
}
