//! The node's configuration and per-call options.

use std::time::Duration;

use crate::network::NetworkConfig;
use crate::routing::{DEFAULT_MAX_PATH_DEPTH, DEFAULT_MAX_PATH_LEN, PathLimits};

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
    /// How many events may wait in one local subscription's queue (default 1024). An event
    /// that finds the queue full is dropped for that subscription (the publisher never waits
    /// for it, unless it asked to: [`publish_wait`](Self::publish_wait)) and counted in
    /// [`NodeStats::events_dropped`](crate::NodeStats) and the subscription's
    /// [`SubscriptionStats::dropped`](crate::SubscriptionStats). Peers' queues are set in
    /// [`NetworkConfig::peer_event_queue_capacity`](crate::NetworkConfig).
    pub event_queue_capacity: usize,
    /// How long a publish waits, at most, for subscribers whose queues are full, when its
    /// [`PublishOptions`] do not say (default zero: it never waits, and a full subscriber
    /// loses the event). Every subscriber with room gets the event first, so a waiting
    /// publisher only holds back the full ones. Events from peers never wait.
    pub publish_wait: Duration,
    /// How the node joins a network; `None` (the default) for a local-only node.
    pub network: Option<NetworkConfig>,
    /// The longest path or pattern, in bytes with its `network:` prefix, that the node accepts
    /// from its user or a peer (default 1024). Longer ones are refused with `InvalidArgument`.
    pub max_path_len: usize,
    /// The most segments a path or pattern may have (default 32). Deeper ones are refused with
    /// `InvalidArgument`.
    pub max_path_depth: usize,
    /// How long the balancer avoids a remote instance that let a call time out, while another
    /// instance of the action exists (default 5 s); then it is tried again.
    pub timeout_penalty: Duration,
}

impl NodeConfig {
    /// A local-only node named `name` whose default network is `default_network`.
    pub fn new(name: impl Into<String>, default_network: impl Into<String>) -> Self {
        NodeConfig {
            name: name.into(),
            default_network: default_network.into(),
            request_timeout: Duration::from_secs(30),
            event_queue_capacity: 1024,
            publish_wait: Duration::ZERO,
            network: None,
            timeout_penalty: Duration::from_secs(5),
            max_path_len: DEFAULT_MAX_PATH_LEN,
            max_path_depth: DEFAULT_MAX_PATH_DEPTH,
        }
    }

    /// Sets the longest path (in bytes) and the most segments the node accepts.
    pub fn with_path_limits(mut self, max_len: usize, max_depth: usize) -> Self {
        self.max_path_len = max_len;
        self.max_path_depth = max_depth;
        self
    }

    /// The path limits as the routing layer takes them.
    pub(crate) fn path_limits(&self) -> PathLimits {
        PathLimits {
            max_len: self.max_path_len,
            max_depth: self.max_path_depth,
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

    /// Sets how long a remote instance that let a call time out is avoided.
    pub fn with_timeout_penalty(mut self, penalty: Duration) -> Self {
        self.timeout_penalty = penalty;
        self
    }

    /// Sets the capacity of each subscription's event queue.
    pub fn with_event_queue_capacity(mut self, capacity: usize) -> Self {
        self.event_queue_capacity = capacity;
        self
    }

    /// Sets how long a publish waits, by default, for subscribers whose queues are full.
    pub fn with_publish_wait(mut self, wait: Duration) -> Self {
        self.publish_wait = wait;
        self
    }
}

/// Options for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the node's request timeout for this call.
    pub timeout: Option<Duration>,
    /// When no instance serves the path yet, wait (within the call's timeout) for one to
    /// appear instead of failing at once with `NotFound`, as gRPC's wait-for-ready. The call
    /// then fails with `DeadlineExceeded` if none appears in time. Default off.
    pub wait_for_ready: bool,
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

    /// Sets whether the call waits for an instance to appear (see
    /// [`wait_for_ready`](Self::wait_for_ready)).
    pub fn with_wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
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
    /// How long this publish waits, at most, for subscribers (local, or a peer's queue) that
    /// have no room; `None` takes [`NodeConfig::publish_wait`] (by default, no wait). Every
    /// subscriber with room gets the event first; the full ones then share this one deadline,
    /// and those still full when it passes lose the event (counted in the node's stats).
    /// `Duration::MAX` waits as long as it takes.
    pub wait: Option<Duration>,
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

    /// Waits up to `wait` for subscribers whose queues are full, rather than dropping the
    /// event for them; the others are served first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use runar_runtime::PublishOptions;
    /// let lossless = PublishOptions::default().with_wait(Duration::from_secs(1));
    /// assert_eq!(lossless.wait, Some(Duration::from_secs(1)));
    /// ```
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
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
