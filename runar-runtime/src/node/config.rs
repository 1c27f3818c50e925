//! The node's configuration and per-call options.

use std::time::Duration;

use crate::network::NetworkConfig;

/// How a node is configured. Build one with [`NodeConfig::new`] and the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use runar_runtime::NodeConfig;
/// let config = NodeConfig::new("node-a", "shop-net").with_request_timeout(Duration::from_secs(5));
/// assert_eq!(config.request_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// A human-readable name for the node, used in logs.
    pub name: String,
    /// The network that paths without a `network:` prefix belong to.
    pub default_network: String,
    /// How long a request waits for its answer unless the call says otherwise (default 30 s).
    pub request_timeout: Duration,
    /// How many events may wait in one subscription's queue before publishers wait for the
    /// subscriber to catch up (default 1024). Also the depth of each peer's outgoing event queue.
    pub event_queue_capacity: usize,
    /// How the node joins a network; `None` (the default) for a local-only node.
    pub network: Option<NetworkConfig>,
}

impl NodeConfig {
    /// A local-only node named `name` whose default network is `default_network`.
    pub fn new(name: impl Into<String>, default_network: impl Into<String>) -> Self {
        NodeConfig {
            name: name.into(),
            default_network: default_network.into(),
            request_timeout: Duration::from_secs(30),
            event_queue_capacity: 1024,
            network: None,
        }
    }

    /// Joins a network: QUIC between nodes, admission by key, discovery.
    pub fn with_network_config(mut self, network: NetworkConfig) -> Self {
        self.network = Some(network);
        self
    }

    /// Sets the default request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the capacity of each subscription's event queue.
    pub fn with_event_queue_capacity(mut self, capacity: usize) -> Self {
        self.event_queue_capacity = capacity;
        self
    }
}

/// Options for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the node's request timeout for this call.
    pub timeout: Option<Duration>,
}

impl RequestOptions {
    /// Options with a timeout for this call.
    pub fn timeout(timeout: Duration) -> Self {
        Self::default().with_timeout(timeout)
    }

    /// Sets the timeout for this call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Which subscribers an event reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BroadcastMode {
    /// Every matching subscription, local and remote.
    #[default]
    All,
    /// One instance of each subscribing service (queue-group semantics), rotating between
    /// instances from one event to the next. A subscription made directly on a node (not by a
    /// service) counts as a service of its own.
    OnePerService,
    /// Only subscriptions on this node.
    LocalOnly,
}

/// Options for one publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Which subscribers the event reaches.
    pub broadcast: BroadcastMode,
    /// Keep the event this long for subscriptions made later with
    /// [`SubscribeOptions::include_past`]. The latest event per topic is kept.
    pub retain_for: Option<Duration>,
}

impl PublishOptions {
    /// Sets the broadcast mode.
    pub fn with_broadcast(mut self, mode: BroadcastMode) -> Self {
        self.broadcast = mode;
        self
    }

    /// Retains the event for `duration`.
    pub fn with_retain_for(mut self, duration: Duration) -> Self {
        self.retain_for = Some(duration);
        self
    }
}

/// Options for one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Deliver retained events (published with [`PublishOptions::retain_for`] and not yet
    /// expired) that match the pattern before live ones.
    pub include_past: bool,
}

impl SubscribeOptions {
    /// Options that ask for retained events.
    pub fn include_past() -> Self {
        Self::default().with_include_past(true)
    }

    /// Sets whether retained events are delivered.
    pub fn with_include_past(mut self, include_past: bool) -> Self {
        self.include_past = include_past;
        self
    }
}
