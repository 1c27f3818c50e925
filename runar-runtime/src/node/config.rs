//! The node's configuration and per-call options.

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::{DEFAULT_MAX_METADATA_ENTRIES, DEFAULT_MAX_METADATA_SIZE, Metadata};
use crate::network::{NetworkConfig, NetworkKey};
use crate::node::service::{Interceptor, Interceptors};
use crate::routing::{DEFAULT_MAX_PATH_DEPTH, DEFAULT_MAX_PATH_LEN, PathLimits};

/// The default [`NodeConfig::stream_buffer`].
const DEFAULT_STREAM_BUFFER: usize = 1024;

/// The default [`NodeConfig::stream_buffer_max`].
const DEFAULT_STREAM_BUFFER_MAX: usize = 8 * DEFAULT_STREAM_BUFFER;

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
    /// The most bytes of peers' events that may wait in this node's local subscription
    /// queues, all subscriptions together (default 64 MiB). A peer's events are held as the
    /// frame they came in (what their payloads, slices of it, keep in memory), counted once
    /// until the last of them has been handled; a frame that does not fit has its events
    /// copied out and held one by one, each as its encoded bytes. An event that would still go
    /// past this bound is dropped for that subscription and counted as a full queue's would
    /// be, so a slow handler and a peer sending large events (or small ones in large frames)
    /// cannot make the node buffer `event_queue_capacity` × the maximum message size per
    /// subscription.
    pub max_queued_event_bytes: usize,
    /// How long a publish waits, at most, for subscribers whose queues are full, when its
    /// [`PublishOptions`] do not say (default zero: it never waits, and a full subscriber
    /// loses the event). Every subscriber with room gets the event first, so a waiting
    /// publisher only holds back the full ones. Events from peers wait as
    /// [`peer_event_wait`](Self::peer_event_wait) says.
    pub publish_wait: Duration,
    /// How long an event from a peer waits, at most, for room in a full local subscription
    /// queue before it is dropped for that subscription (default 100 ms). While it waits, that
    /// peer's later events wait behind it (they stay in order), and once QUIC's flow control
    /// window is full the peer's writer, and so its publishers' queues for this node, wait
    /// too: a subscriber that is only momentarily behind loses nothing, nor does one whose
    /// handler is about as quick as the node takes events in, however long a peer floods it.
    /// This is a budget per subscription, which half of the time passing refills: since its
    /// queue was last empty, a subscription may keep peers waiting this long more than half
    /// that time. One that has used it up, or whose one wait ran out, is stalled: until it
    /// empties its queue, events from peers that find it full are dropped at once. So a stuck
    /// subscriber holds peers back for one wait, not one per event, and a slow one (keeping
    /// the node's reader waiting most of the time) paces their events for about twice this at
    /// most at a stretch, never for good. Zero: events from peers never wait.
    pub peer_event_wait: Duration,
    /// How the node joins a network; `None` (the default) for a local-only node.
    pub network: Option<NetworkConfig>,
    /// The node's other networks, each with its own name and key (default none): see
    /// [`with_additional_network`](Self::with_additional_network).
    pub additional_networks: Vec<(String, NetworkKey)>,
    /// The longest path or pattern, in bytes with its `network:` prefix, that the node accepts
    /// from its user or a peer (default 1024). Longer ones are refused with `InvalidArgument`.
    pub max_path_len: usize,
    /// The most segments a path or pattern may have (default 32). Deeper ones are refused with
    /// `InvalidArgument`.
    pub max_path_depth: usize,
    /// How long the balancer avoids a remote instance that let a call time out, while another
    /// instance of the action exists (default 5 s); then it is tried again.
    pub timeout_penalty: Duration,
    /// The most bytes (keys plus values) one request's or event's metadata may hold (default
    /// 8 KiB; the reserved `runar-` entries on the wire are not counted). Enforced on what this
    /// node sends and on what it receives: a request over it fails with `ResourceExhausted`,
    /// an event from a peer over it is dropped.
    pub max_metadata_size: usize,
    /// The most entries one request's or event's metadata may hold (default 64), enforced like
    /// [`max_metadata_size`](Self::max_metadata_size).
    pub max_metadata_entries: usize,
    /// How many messages of one streaming call may wait, on each side, between the producer
    /// and the consumer (default 1024): a local call's replies wait in a channel of this size,
    /// and each side of a remote call grants the other this many messages of credit (more as
    /// its consumer takes them) and buffers at most that many. A producer's stream is polled
    /// only when there is room, so a consumer that stops reading stops the producer, and a
    /// stalled remote stream holds no more than this (never QUIC's connection window, which
    /// other calls share). The messages a peer sent that wait here hold their bytes in that
    /// peer's request budget (`NetworkConfig::max_request_bytes_per_peer` within
    /// `max_request_bytes`) until taken, so their bytes stay bounded per peer whatever their
    /// size. A remote stream's rate grows with this up to about a thousand small messages:
    /// the sender writes what its credit allows in one batch of up to 64 KiB (about 900
    /// messages of 64 bytes), and the batch's costs (a write, wake-ups on both sides, a grant
    /// back once half the buffer is taken) are shared by its messages; 64-byte messages went
    /// from about 1.8M to 2.9M a second between 256 and 1024. At least 1. A remote stream's
    /// credit grows from this towards [`stream_buffer_max`](Self::stream_buffer_max) while
    /// its consumer keeps up.
    pub stream_buffer: usize,
    /// The most messages of one remote streaming call that may wait on each side (default
    /// 8192; less than [`stream_buffer`](Self::stream_buffer) counts as `stream_buffer`: no
    /// growth; at most 2^24, as is `stream_buffer`). A side starts by granting
    /// `stream_buffer` messages of credit and grants more as its consumer takes them; a grant
    /// that finds the peer out of credit (it has sent everything it was allowed, so it waits
    /// for the grant) doubles the credit, up to this. A consumer that stalls from the start
    /// holds `stream_buffer` messages; one that took messages as fast as they came and then
    /// stalls holds at most this many, their bytes in the peer's request budget as above. On
    /// two threads, server streaming of 64-byte messages went from about 2.5M to 3.6M a second
    /// between a fixed 1024 and 8192: a grant's round trip crosses five tasks.
    pub stream_buffer_max: usize,
    /// Whether the node serves the built-in `$runar/…` introspection actions (node info,
    /// services and schemas, peers, stats, ping) to itself and its peers (default on). A
    /// transient node such as the `runar` CLI turns it off: it hosts nothing.
    pub introspection: bool,
    /// One local call in how many is timed for the per-action latency histogram of
    /// `$runar/stats` (default 16; rounded up to a power of two; 1 times every call, 0 none).
    /// Every call is counted (requests, errors, in flight) whatever this says: the two clock
    /// reads of a timed call cost more than the rest of the bookkeeping, so sampling keeps
    /// the stats under 20 ns per call on average.
    pub latency_sample_every: u32,
    /// How often a running node hands its metrics to the `metrics` facade (default every
    /// second; `None`: only when [`Node::record_metrics`](crate::Node::record_metrics) is
    /// called). Feature `metrics`.
    #[cfg(feature = "metrics")]
    pub metrics_interval: Option<Duration>,
    /// What this node seals labelled fields to and opens them with (see [`crate::seal`]);
    /// set with [`with_key_resolver`](Self::with_key_resolver). Without one, labelled fields
    /// leave the node redacted and none are opened.
    pub(crate) key_resolver: Option<Resolver>,
    /// The node's X25519 sealing key (set with [`with_sealing_key`](Self::with_sealing_key);
    /// default: a fresh one per node).
    pub(crate) sealing_key: Option<crate::seal::KeyPair>,
    /// Runs, in order, before each request this node makes leaves it or reaches a local handler.
    pub(crate) outgoing: Interceptors,
    /// Runs, in order, before a local handler serves a request (from this node or a peer).
    pub(crate) incoming: Interceptors,
}

impl NodeConfig {
    /// A local-only node named `name` whose default network is `default_network`.
    pub fn new(name: impl Into<String>, default_network: impl Into<String>) -> Self {
        NodeConfig {
            name: name.into(),
            default_network: default_network.into(),
            request_timeout: Duration::from_secs(30),
            event_queue_capacity: 1024,
            max_queued_event_bytes: 64 * 1024 * 1024,
            publish_wait: Duration::ZERO,
            peer_event_wait: Duration::from_millis(100),
            network: None,
            additional_networks: Vec::new(),
            timeout_penalty: Duration::from_secs(5),
            max_path_len: DEFAULT_MAX_PATH_LEN,
            max_path_depth: DEFAULT_MAX_PATH_DEPTH,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
            stream_buffer: DEFAULT_STREAM_BUFFER,
            stream_buffer_max: DEFAULT_STREAM_BUFFER_MAX,
            introspection: true,
            latency_sample_every: 16,
            #[cfg(feature = "metrics")]
            metrics_interval: Some(Duration::from_secs(1)),
            key_resolver: None,
            sealing_key: None,
            outgoing: Interceptors::default(),
            incoming: Interceptors::default(),
        }
    }

    /// Seals labelled fields to, and opens them with, the keys `resolver` gives (see
    /// [`crate::seal`]; [`Keyring`](crate::seal::Keyring) is the default implementation).
    pub fn with_key_resolver(mut self, resolver: Arc<dyn crate::seal::KeyResolver>) -> Self {
        self.key_resolver = Some(Resolver(resolver));
        self
    }

    /// Sets the node's X25519 sealing key, which the nodes that open its envelopes must know
    /// (default: a fresh key per node; `Node::sealing_key` gives its public half).
    pub fn with_sealing_key(mut self, key: crate::seal::KeyPair) -> Self {
        self.sealing_key = Some(key);
        self
    }

    /// Sets the most bytes (keys plus values) one request's or event's metadata may hold.
    pub fn with_max_metadata_size(mut self, bytes: usize) -> Self {
        self.max_metadata_size = bytes;
        self
    }

    /// Turns the built-in `$runar/…` introspection actions on or off (see
    /// [`introspection`](Self::introspection)).
    pub fn with_introspection(mut self, on: bool) -> Self {
        self.introspection = on;
        self
    }

    /// Sets how many local calls in one are timed for the latency histogram (see
    /// [`latency_sample_every`](Self::latency_sample_every)).
    pub fn with_latency_sample_every(mut self, calls: u32) -> Self {
        self.latency_sample_every = calls;
        self
    }

    /// Sets how often the node hands its metrics to the `metrics` facade (`None`: never by
    /// itself). Feature `metrics`.
    #[cfg(feature = "metrics")]
    pub fn with_metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// Sets the most entries one request's or event's metadata may hold.
    pub fn with_max_metadata_entries(mut self, entries: usize) -> Self {
        self.max_metadata_entries = entries;
        self
    }

    /// Adds an outgoing [`Interceptor`]: it runs (after the ones added before) on every request
    /// this node makes, before it leaves the node or reaches a local handler. It may add
    /// metadata, or refuse the call with an error the caller receives.
    pub fn with_outgoing_interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.outgoing = self.outgoing.with(Arc::new(interceptor));
        self
    }

    /// Adds an incoming [`Interceptor`]: it runs (after the ones added before) before a local
    /// handler serves a request, from this node or from a peer. It sees the path, the caller and
    /// the metadata; it may add metadata the handler reads, or refuse the call with an error
    /// that travels back to the caller with its code and message.
    pub fn with_incoming_interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.incoming = self.incoming.with(Arc::new(interceptor));
        self
    }

    /// Sets how many messages of one streaming call may wait on each side (see
    /// [`stream_buffer`](Self::stream_buffer)).
    pub fn with_stream_buffer(mut self, messages: usize) -> Self {
        self.stream_buffer = messages;
        self
    }

    /// Sets the most messages of one remote streaming call that may wait on each side, its
    /// credit grown to (see [`stream_buffer_max`](Self::stream_buffer_max)).
    pub fn with_stream_buffer_max(mut self, messages: usize) -> Self {
        self.stream_buffer_max = messages;
        self
    }

    /// The stream buffer settings as the network layer takes them.
    pub(crate) fn stream_buffers(&self) -> crate::network::StreamBuffer {
        crate::network::StreamBuffer::new(self.stream_buffer, self.stream_buffer_max)
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

    /// Joins another network, `name`, admitted by its own `key`. It needs the network
    /// configuration ([`with_network_config`](Self::with_network_config)), whose endpoint it
    /// shares: one address (`Node::local_addr`) reaches every network of the node, the peer
    /// naming the network in its handshake. It uses the same settings and discovery (each
    /// network is announced apart, signed as the default one; a static peer is dialed in every
    /// network, and one that is not in a network refuses that handshake).
    ///
    /// Each network is isolated: its own registry view and events, its peers (a peer of one
    /// network never completes a handshake for another), its services
    /// (`Node::add_service_to`), its access policy. A path or topic names a network with a
    /// prefix: `ops-net:admin/restart`.
    ///
    /// ```
    /// use runar_runtime::{NetworkConfig, NetworkKey, NodeConfig};
    /// let config = NodeConfig::new("gateway", "shop-net")
    ///     .with_network_config(NetworkConfig::default().with_key(NetworkKey::from_secret("shop")))
    ///     .with_additional_network("ops-net", NetworkKey::from_secret("ops"));
    /// assert_eq!(config.additional_networks.len(), 1);
    /// ```
    pub fn with_additional_network(mut self, name: impl Into<String>, key: NetworkKey) -> Self {
        self.additional_networks.push((name.into(), key));
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

    /// Sets the most bytes of peers' events that may wait in local subscription queues.
    pub fn with_max_queued_event_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_event_bytes = bytes;
        self
    }

    /// Sets how long a publish waits, by default, for subscribers whose queues are full.
    pub fn with_publish_wait(mut self, wait: Duration) -> Self {
        self.publish_wait = wait;
        self
    }

    /// Sets how long an event from a peer waits, at most, for room in a full local
    /// subscription queue (see [`peer_event_wait`](Self::peer_event_wait)).
    pub fn with_peer_event_wait(mut self, wait: Duration) -> Self {
        self.peer_event_wait = wait;
        self
    }
}

/// Options for one request.
///
/// ```
/// use runar_runtime::{Metadata, RequestOptions};
/// let mut md = Metadata::new();
/// md.insert("request-id", "42")?;
/// let options = RequestOptions::default().with_metadata(md);
/// assert_eq!(options.metadata.get("request-id"), Some("42"));
/// # Ok::<(), runar_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the node's request timeout for this call.
    pub timeout: Option<Duration>,
    /// When no instance serves the path yet, wait (within the call's timeout) for one to
    /// appear instead of failing at once with `NotFound`, as gRPC's wait-for-ready. The call
    /// then fails with `DeadlineExceeded` if none appears in time. Default off.
    pub wait_for_ready: bool,
    /// The request's metadata, which the handler reads with
    /// [`RequestContext::metadata`](crate::RequestContext::metadata).
    pub metadata: Metadata,
    /// The network a path without a `network:` prefix is in, for this call (the node's
    /// default network otherwise).
    pub network: Option<String>,
    /// Outgoing interceptors for this call, run after the node's.
    pub(crate) interceptors: Interceptors,
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

    /// Adds `metadata`'s entries to the call's (replacing entries with the same key).
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata.extend(&metadata);
        self
    }

    /// Adds an outgoing [`Interceptor`] for this call, run after the node's and the ones added
    /// before.
    pub fn with_interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors = self.interceptors.with(Arc::new(interceptor));
        self
    }

    /// Makes `network` the network of a path without a `network:` prefix (see
    /// [`network`](Self::network)): what generated clients' `with_network` sets.
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// `path` in this call's network: prefixed with it when the options name a network and
    /// `path` has no prefix of its own.
    pub fn path_in_network<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        crate::routing::in_network(self.network.as_deref(), path)
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
    /// The event's metadata, which handlers read with
    /// [`EventContext::metadata`](crate::EventContext::metadata).
    pub metadata: Metadata,
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

    /// Sets the event's metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
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

/// A node's [`KeyResolver`](crate::seal::KeyResolver), shown by name in the config's `Debug`.
#[derive(Clone)]
pub(crate) struct Resolver(pub(crate) Arc<dyn crate::seal::KeyResolver>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyResolver")
    }
}
