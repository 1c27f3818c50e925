//! [`NetworkConfig`]: how a node joins a network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{NetworkKey, TransportConfig};
use crate::discovery::DiscoveryOptions;
use crate::error::{Error, Result};

/// How a node joins a network: where it listens, the key that admits it, how it finds peers,
/// and the limits of its connections. Every field is used; the defaults suit a LAN.
///
/// ```
/// use runar_runtime::{DiscoveryOptions, NetworkConfig, NetworkKey};
/// let config = NetworkConfig::default()
///     .with_bind_address("127.0.0.1:0".parse().unwrap())
///     .with_key(NetworkKey::from_secret("a long, random, shared secret"))
///     .with_discovery(DiscoveryOptions::static_peers(["127.0.0.1:7000".parse().unwrap()]));
/// assert_eq!(config.max_message_size, 4 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetworkConfig {
    /// The UDP address the QUIC endpoint binds (default `0.0.0.0:0`: every interface, an
    /// ephemeral port).
    pub bind_address: SocketAddr,
    /// The key that admits nodes to the network. Without one, a key is derived from the network
    /// name, which anyone who knows the name can do: set a key for anything but a demo.
    pub key: Option<NetworkKey>,
    /// Where the node's Ed25519 key is kept (created if missing), so its id survives restarts.
    /// Without it, the node gets a new key and id each time it starts.
    pub keypair_path: Option<PathBuf>,
    /// How the node finds peers.
    pub discovery: DiscoveryOptions,
    /// The largest request, response or event, encoded (default 4 MiB). A larger message gives
    /// `ResourceExhausted` and the connection carries on.
    pub max_message_size: usize,
    /// How long dialing a peer, including the TLS handshake and the hello, may take (default 5 s).
    pub connect_timeout: Duration,
    /// How often an idle connection is probed (default 500 ms).
    pub keep_alive_interval: Duration,
    /// How long a silent peer is kept before it is dropped with its services (default 2.5 s, so
    /// a vanished peer is gone within 3 s).
    pub idle_timeout: Duration,
    /// The most connections the node keeps; more are refused and logged (default 256).
    pub max_connections: usize,
    /// The most requests one peer may have in flight at once (default 1024).
    pub max_concurrent_requests: u32,
    /// The longest wait between two attempts to reach a static peer that is down; attempts
    /// start at 100 ms and double up to this (default 5 s).
    pub reconnect_backoff_max: Duration,
    /// How long a change of this node's services or subscriptions waits for connected peers to
    /// acknowledge it before the call that made it returns anyway (default 1 s).
    pub announce_timeout: Duration,
    /// How many events may wait to be sent to one peer (default 1024). The queue is shared by
    /// all of that peer's subscriptions, and never makes a publisher wait: an event that finds
    /// it full (or over [`peer_event_queue_bytes`](Self::peer_event_queue_bytes)) is dropped
    /// for that peer and counted in [`NodeStats::events_dropped`](crate::NodeStats), unless
    /// the publish asked to wait ([`PublishOptions::with_wait`](crate::PublishOptions::with_wait)).
    pub peer_event_queue_capacity: usize,
    /// How many bytes of events may wait to be sent to one peer (default 8 MiB), counting the
    /// batch being written. Bounds the memory a peer that reads slowly can hold on this node;
    /// one event larger than this is still sent when the queue is otherwise empty.
    pub peer_event_queue_bytes: usize,
    /// How long a peer's event stream may stay stuck (a write that makes no progress because
    /// the peer does not read) before the peer is disconnected as a slow consumer, with a logged
    /// reason, and counted in [`NodeStats::slow_consumers`](crate::NodeStats) (default 5 s).
    /// A peer that reads slowly but keeps reading only loses the events its queue cannot hold.
    pub slow_consumer_timeout: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let transport = TransportConfig::default();
        NetworkConfig {
            bind_address: transport.bind_addr,
            key: None,
            keypair_path: None,
            discovery: DiscoveryOptions::none(),
            max_message_size: transport.max_message_size,
            connect_timeout: transport.connect_timeout,
            keep_alive_interval: transport.keep_alive_interval,
            idle_timeout: transport.idle_timeout,
            max_connections: transport.max_connections,
            max_concurrent_requests: transport.max_concurrent_bidi_streams,
            reconnect_backoff_max: Duration::from_secs(5),
            announce_timeout: Duration::from_secs(1),
            peer_event_queue_capacity: 1024,
            peer_event_queue_bytes: 8 * 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(5),
        }
    }
}

impl NetworkConfig {
    /// Sets the address to bind.
    pub fn with_bind_address(mut self, address: SocketAddr) -> Self {
        self.bind_address = address;
        self
    }

    /// Sets the network key.
    pub fn with_key(mut self, key: NetworkKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Keeps the node's key at `path`.
    pub fn with_keypair_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.keypair_path = Some(path.into());
        self
    }

    /// Adds a way to find peers; calls accumulate.
    pub fn with_discovery(mut self, discovery: DiscoveryOptions) -> Self {
        self.discovery = self.discovery.and(discovery);
        self
    }

    /// Sets the maximum message size.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the keep-alive interval.
    pub fn with_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// Sets the idle timeout (how soon a silent peer is dropped).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the maximum number of connections.
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Sets the maximum number of requests in flight per peer.
    pub fn with_max_concurrent_requests(mut self, requests: u32) -> Self {
        self.max_concurrent_requests = requests;
        self
    }

    /// Sets the longest wait between attempts to reach a static peer.
    pub fn with_reconnect_backoff_max(mut self, max: Duration) -> Self {
        self.reconnect_backoff_max = max;
        self
    }

    /// Sets how long a change waits for peers' acknowledgements.
    pub fn with_announce_timeout(mut self, timeout: Duration) -> Self {
        self.announce_timeout = timeout;
        self
    }

    /// Sets how many events may wait to be sent to one peer.
    pub fn with_peer_event_queue_capacity(mut self, events: usize) -> Self {
        self.peer_event_queue_capacity = events;
        self
    }

    /// Sets how many bytes of events may wait to be sent to one peer.
    pub fn with_peer_event_queue_bytes(mut self, bytes: usize) -> Self {
        self.peer_event_queue_bytes = bytes;
        self
    }

    /// Sets how long a peer's event stream may stay stuck before the peer is disconnected.
    pub fn with_slow_consumer_timeout(mut self, timeout: Duration) -> Self {
        self.slow_consumer_timeout = timeout;
        self
    }

    /// Checks the settings that [`Transport`](super::Transport) does not: the event queues
    /// and the slow-consumer timeout.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.peer_event_queue_capacity == 0 {
            return Err(Error::invalid_argument(
                "peer_event_queue_capacity must be at least 1",
            ));
        }
        if self.peer_event_queue_bytes == 0 {
            return Err(Error::invalid_argument(
                "peer_event_queue_bytes must be at least 1",
            ));
        }
        if self.slow_consumer_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "slow_consumer_timeout must be more than zero",
            ));
        }
        Ok(())
    }

    pub(crate) fn transport(&self) -> TransportConfig {
        TransportConfig {
            bind_addr: self.bind_address,
            max_message_size: self.max_message_size,
            keep_alive_interval: self.keep_alive_interval,
            idle_timeout: self.idle_timeout,
            connect_timeout: self.connect_timeout,
            max_concurrent_bidi_streams: self.max_concurrent_requests,
            max_connections: self.max_connections,
        }
    }
}
