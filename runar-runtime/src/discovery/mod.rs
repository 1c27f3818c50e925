//! How a node finds peers. (Static peers only, until multicast and memory discovery land.)

use std::net::SocketAddr;

/// How a node finds peers. Several may be combined with [`and`](Self::and).
#[derive(Debug, Clone, Default)]
pub struct DiscoveryOptions {
    static_peers: Vec<SocketAddr>,
}

impl DiscoveryOptions {
    /// No discovery.
    pub fn none() -> Self {
        Self::default()
    }

    /// Peers at fixed addresses, dialed and redialed with backoff.
    pub fn static_peers(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        DiscoveryOptions {
            static_peers: addrs.into_iter().collect(),
        }
    }

    /// Both sets of options.
    pub fn and(mut self, other: DiscoveryOptions) -> Self {
        self.static_peers.extend(other.static_peers);
        self
    }

    /// The static peers' addresses.
    pub fn static_peer_addrs(&self) -> Vec<SocketAddr> {
        self.static_peers.clone()
    }
}
