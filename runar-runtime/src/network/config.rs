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
    /// The key that admits nodes to the network. Required: a networked node without a key
    /// fails at `Node::new`, unless [`insecure_dev_key`](Self::insecure_dev_key) is set.
    pub key: Option<NetworkKey>,
    /// Opts into a key derived from the network name when no key is set (default `false`).
    /// Anyone who knows or guesses the name can join, and a guess can be checked offline
    /// against the network id that discovery broadcasts: for local development only.
    pub insecure_dev_key: bool,
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
    /// How often an idle connection is probed (default 400 ms), by the side that dialed it;
    /// the other side's acknowledgements (sent at once) keep the dialer's idle timer running.
    /// What an idle mesh costs goes with the number of probes: a 60-node mesh in one process
    /// spends 34–39% of a core at 200 ms, 20–21% at 400 ms (BENCHMARKS.md). A live peer may go
    /// unheard for `idle_timeout` less this (600 ms by default) before it is dropped: the
    /// margin for a runtime starved on a loaded machine.
    pub keep_alive_interval: Duration,
    /// How long a peer may go unheard before it is dropped with its services (default 1 s, so
    /// a vanished peer is gone within 1 s of the last packet heard from it; a live one is heard
    /// from every `keep_alive_interval`, 2.5 times within this).
    pub idle_timeout: Duration,
    /// The most connections the node keeps; more are refused and logged (default 256).
    pub max_connections: usize,
    /// The most requests one peer may have in flight at once (default 1024). A connection
    /// starts by letting its peer open 64 streams and doubles that as half are in use, up to
    /// this plus [`max_concurrent_streams`](Self::max_concurrent_streams): QUIC keeps a table
    /// entry per stream a peer may open, so an idle connection stays small.
    pub max_concurrent_requests: u32,
    /// The most streaming calls one peer may have open on this node at once (default 1024);
    /// one more is refused with `ResourceExhausted`. QUIC's limit of bidirectional streams a
    /// peer may open (past which opening one waits) is this plus
    /// [`max_concurrent_requests`](Self::max_concurrent_requests), so a peer's open streaming
    /// calls (a watch may stay open for hours) never take the places of its unary requests.
    pub max_concurrent_streams: u32,
    /// Requests whose payload is at most this many bytes share one long-lived QUIC stream to
    /// their peer (the call stream), answers coming back on it as they are ready; larger ones
    /// open a stream of their own, so that a small request never waits to be sent behind a
    /// large one. Default 16 KiB; 0 sends every request on a stream of its own. Opening and
    /// finishing a stream per call costs about twice the rest of a small call's transport
    /// work (see BENCHMARKS.md).
    pub small_request_size: usize,
    /// The longest wait between two attempts to reach a static peer that refuses or fails the
    /// connection; attempts start at 100 ms and double up to this (default 5 s). A peer that
    /// answers nothing at all (down, or cut off) is probed instead, see
    /// [`unreachable_probe_interval`](Self::unreachable_probe_interval).
    pub reconnect_backoff_max: Duration,
    /// How often a static peer that answers nothing (its connection idled out, or the last
    /// attempt heard nothing back) is probed with a new connection attempt (default 1 s), so
    /// that a link that heals is used again within about this long, however long it was down.
    /// A probe costs the peer's address one QUIC Initial (1200 bytes) and one retransmission,
    /// about 2.4 KB per interval for as long as the peer stays silent; it gives up after this
    /// interval (or `idle_timeout`, if longer) unless the peer answers, and a peer that answers
    /// gets the whole `connect_timeout`. A peer that answers but refuses is redialed with the
    /// backoff instead (`reconnect_backoff_max`).
    pub unreachable_probe_interval: Duration,
    /// How long a peer that discovery reported, that cannot be reached and that discovery has
    /// not reported again, is still redialed (default 60 s). Until then, and for as long as
    /// discovery keeps reporting it (multicast announcements repeat) and it has not said
    /// goodbye, a peer that is not connected is redialed with backoff.
    pub forget_unreachable_after: Duration,
    /// How long `Node::stop` lets requests in flight with peers finish after saying goodbye
    /// (default 5 s). Peers stop routing to the node at the goodbye and close each connection
    /// once nothing is in flight on it; what is still in flight after this is cut and counted
    /// (`Node::requests_dropped_at_stop`).
    pub shutdown_grace: Duration,
    /// How long a change of this node's services or subscriptions waits for connected peers to
    /// acknowledge it before the call that made it returns anyway (default 1 s).
    pub announce_timeout: Duration,
    /// The most handshakes in progress at once (incoming and outgoing, counted apart from
    /// `max_connections`); past half of it, incoming attempts must first prove their address
    /// (a QUIC Retry), at it they are refused (default 64). The whole admission of a connection
    /// (TLS handshake, stream kind, hello) must finish within `connect_timeout`.
    pub max_pending_handshakes: usize,
    /// How long a peer may take to send a whole request (stream kind, header, body) once it
    /// opens the stream, a frame's body once its header arrived on the control or event
    /// stream, and to take an answer it asked for; a peer slower than this has the stream cut
    /// (default 10 s).
    pub read_timeout: Duration,
    /// The most bytes of requests all peers together may have buffered on this node at once
    /// (from a request's header until its answer is written), whatever the number of peers or
    /// identities (default 64 MiB). Requests that find no room wait, in arrival order, until
    /// `read_timeout`, and are then cut. Small requests of a peer also have that peer's
    /// [`request_reserve_per_peer`](Self::request_reserve_per_peer), outside this pool, so
    /// peers that fill the pool cannot keep another peer's small calls waiting. Worst case
    /// held for requests: `max_request_bytes + max_connections × request_reserve_per_peer`
    /// (64 MiB + 256 × 64 KiB = 80 MiB by default).
    pub max_request_bytes: usize,
    /// The most bytes of the node-wide [`max_request_bytes`](Self::max_request_bytes) pool one
    /// peer may hold at once (default 32 MiB: eight maximal requests, and never the whole
    /// pool). A request larger than this is served alone.
    pub max_request_bytes_per_peer: usize,
    /// Bytes of requests each peer may hold outside the node-wide pool (default 64 KiB): a
    /// request that fits in what is left of its peer's reserve is read at once, so a peer with
    /// few small calls in flight is served even while others hold the whole pool.
    pub request_reserve_per_peer: usize,
    /// The QUIC flow-control window of each connection and of each stream, in bytes (default
    /// 256 KiB): the most a peer can make this node buffer on one connection before the node
    /// reads it. Every open connection, admitted or still in its handshake, can hold this much,
    /// so the node-wide worst case is `(max_connections + max_pending_handshakes) ×
    /// receive_window` (320 × 256 KiB = 80 MiB by default). Ample for loopback and a LAN
    /// (the window limits one connection's throughput to about `receive_window` per round
    /// trip); raise it for long fat links.
    pub receive_window: u64,
    /// The most bytes this node keeps of what it wrote on one connection until the peer
    /// acknowledges them (default 512 KiB), so that a peer that does not acknowledge holds at
    /// most this much per connection (`(max_connections + max_pending_handshakes) ×
    /// send_window` node-wide: 160 MiB by default). 512 KiB rather than 256 KiB: a 1 MiB echo
    /// on loopback took 18% less time on the multi-thread runtime (fewer waits for
    /// acknowledgements), the same on the current-thread one (BENCHMARKS.md).
    pub send_window: u64,
    /// The largest UDP payload (one QUIC packet) this node sends or accepts, in bytes (default
    /// 16,375; at least 1,200, at most 65,500). A connection between two addresses of one host
    /// (loopback, MTU 65,536) uses this size from the start and probes nothing. Others start
    /// at 1,200 bytes and QUIC's path MTU discovery probes up to this (about nine probes): on
    /// a 1,500-byte Ethernet link discovery settles at about 1,472 bytes after a few lost probes
    /// (a lost probe is not taken for congestion), and when large packets later go missing in
    /// bursts the connection drops to 1,200 bytes for a minute (black-hole detection). At 6,550
    /// a 1 MiB message on loopback costs about half the CPU it does at 1,452 (quinn's default),
    /// and a stream of small messages needs a fifth of the packets; at 16,375 a stream of small
    /// messages takes about a fifth less CPU per message again. The endpoint's receive batch is
    /// sized for 64 KiB per read whatever this is (about 2.5 MiB at the default). quinn sends as
    /// many packets in one segmentation-offload (GSO) write as fit in 65,500 bytes (four at
    /// the default), as the kernel refuses a write over 64 KiB; the most is one such packet.
    pub max_udp_payload_size: u16,
    /// The UDP socket's receive and send buffers asked of the kernel (`SO_RCVBUF`,
    /// `SO_SNDBUF`), in bytes (default 4 MiB; 0 keeps the system's defaults). A receive buffer
    /// smaller than what peers have in flight drops datagrams, which QUIC resends and takes for
    /// congestion. Linux grants at most `net.core.rmem_max` / `wmem_max` (raise them with
    /// `sysctl` for full speed; the node logs what it got when that is less than asked). Kernel
    /// memory, one pair per node, used only while datagrams wait.
    pub socket_buffer_size: usize,
    /// The most control messages queued for one peer; a peer that does not read its control
    /// stream until this many are queued is disconnected, with a logged reason (default 1024).
    pub control_queue_capacity: usize,
    /// What one peer may announce (services, actions, subscriptions, schema bytes, string
    /// sizes). A hello over them refuses the peer; a later announcement over them disconnects it.
    pub peer_limits: PeerLimits,
    /// The most dials to peers discovery reported that may be in progress at once (default 8):
    /// a node that discovers many peers at once dials them a few at a time, so that the
    /// handshakes finish within `connect_timeout` even on a loaded machine; the others wait.
    pub max_discovery_dials: usize,
    /// The most dials (first dials and redials) to discovered peers started per second
    /// (default 20).
    pub discovery_dials_per_second: u32,
    /// How many discovery events (a peer announced, a peer's goodbye) may wait for the node to
    /// take them (default 1024). Discovery never waits: an event that finds the queue full is
    /// dropped, counted and logged (rate-limited), so a flood of announcements with fresh ids
    /// (anyone on the LAN can send them) cannot grow the node's memory. Multicast
    /// announcements repeat, so a dropped one is made up for by the next; a
    /// [`MemoryHub`](crate::MemoryHub) reports each peer once, so keep this above the hub's
    /// size. At least 1.
    pub discovery_queue_capacity: usize,
    /// A refused handshake (wrong network key, another network name, another protocol version)
    /// is logged at most once per this interval and reason, with the number not logged since
    /// (default 10 s). Every refusal is still counted and published as a registry event.
    pub refusal_log_interval: Duration,
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

/// What one peer may announce in its hello and capability updates. Checked before anything is
/// stored. The defaults are far above what a real node offers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLimits {
    /// Services (default 1024).
    pub max_services: usize,
    /// Actions, over all services (default 16,384).
    pub max_actions: usize,
    /// Subscriptions (default 16,384).
    pub max_subscriptions: usize,
    /// Schema bytes, over all services (default 4 MiB).
    pub max_schema_bytes: usize,
    /// The longest string (a network, a service path, a name, a version, a group), in bytes
    /// (default 1024); a description may be four times as long. Action paths and subscription
    /// patterns are held to the node's path limits instead (`NodeConfig::max_path_len`).
    pub max_string_len: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_services: 1024,
            max_actions: 16 * 1024,
            max_subscriptions: 16 * 1024,
            max_schema_bytes: 4 * 1024 * 1024,
            max_string_len: 1024,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let transport = TransportConfig::default();
        NetworkConfig {
            bind_address: transport.bind_addr,
            key: None,
            insecure_dev_key: false,
            keypair_path: None,
            discovery: DiscoveryOptions::none(),
            max_message_size: transport.max_message_size,
            connect_timeout: transport.connect_timeout,
            keep_alive_interval: transport.keep_alive_interval,
            idle_timeout: transport.idle_timeout,
            max_connections: transport.max_connections,
            max_concurrent_requests: transport.max_concurrent_bidi_streams,
            max_concurrent_streams: 1024,
            small_request_size: 16 * 1024,
            reconnect_backoff_max: Duration::from_secs(5),
            unreachable_probe_interval: transport.unreachable_probe_interval,
            announce_timeout: Duration::from_secs(1),
            max_pending_handshakes: transport.max_pending_handshakes,
            read_timeout: Duration::from_secs(10),
            max_request_bytes: 64 * 1024 * 1024,
            max_request_bytes_per_peer: 32 * 1024 * 1024,
            request_reserve_per_peer: 64 * 1024,
            receive_window: transport.receive_window,
            send_window: transport.send_window,
            max_udp_payload_size: transport.max_udp_payload_size,
            socket_buffer_size: transport.socket_buffer_size,
            control_queue_capacity: 1024,
            peer_limits: PeerLimits::default(),
            max_discovery_dials: 8,
            discovery_dials_per_second: 20,
            discovery_queue_capacity: 1024,
            forget_unreachable_after: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            refusal_log_interval: Duration::from_secs(10),
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

    /// Without a key, derives one from the network name instead of failing: **insecure**,
    /// anyone who guesses the name joins. For local development only; a key set with
    /// [`with_key`](Self::with_key) wins.
    pub fn with_insecure_dev_key(mut self) -> Self {
        self.insecure_dev_key = true;
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

    /// Sets [`small_request_size`](Self::small_request_size): requests with a payload of at
    /// most this many bytes share the call stream to their peer; 0 gives every request a
    /// stream of its own.
    pub fn with_small_request_size(mut self, bytes: usize) -> Self {
        self.small_request_size = bytes;
        self
    }

    /// Sets the most streaming calls one peer may have open on this node at once.
    pub fn with_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// Sets the longest wait between attempts to reach a static peer.
    pub fn with_reconnect_backoff_max(mut self, max: Duration) -> Self {
        self.reconnect_backoff_max = max;
        self
    }

    /// Sets how often a static peer that answers nothing is probed.
    pub fn with_unreachable_probe_interval(mut self, interval: Duration) -> Self {
        self.unreachable_probe_interval = interval;
        self
    }

    /// Sets how long a change waits for peers' acknowledgements.
    pub fn with_announce_timeout(mut self, timeout: Duration) -> Self {
        self.announce_timeout = timeout;
        self
    }

    /// Sets how often refused handshakes are logged (per reason).
    pub fn with_refusal_log_interval(mut self, interval: Duration) -> Self {
        self.refusal_log_interval = interval;
        self
    }

    /// Sets how long an unreachable, no longer reported peer is still redialed.
    pub fn with_forget_unreachable_after(mut self, after: Duration) -> Self {
        self.forget_unreachable_after = after;
        self
    }

    /// Sets how long `Node::stop` lets requests in flight finish.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets the most handshakes in progress at once.
    pub fn with_max_pending_handshakes(mut self, handshakes: usize) -> Self {
        self.max_pending_handshakes = handshakes;
        self
    }

    /// Sets how long a peer may take to send a request or a frame.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets the most request bytes one peer may have buffered.
    pub fn with_max_request_bytes_per_peer(mut self, bytes: usize) -> Self {
        self.max_request_bytes_per_peer = bytes;
        self
    }

    /// Sets the most request bytes all peers together may have buffered.
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Sets the request bytes each peer may hold outside the node-wide pool.
    pub fn with_request_reserve_per_peer(mut self, bytes: usize) -> Self {
        self.request_reserve_per_peer = bytes;
        self
    }

    /// Sets the QUIC flow-control window of each connection and stream.
    pub fn with_receive_window(mut self, bytes: u64) -> Self {
        self.receive_window = bytes;
        self
    }

    /// Sets the most unacknowledged bytes kept per connection.
    pub fn with_send_window(mut self, bytes: u64) -> Self {
        self.send_window = bytes;
        self
    }

    /// Sets the largest UDP payload (QUIC packet) sent or accepted.
    pub fn with_max_udp_payload_size(mut self, bytes: u16) -> Self {
        self.max_udp_payload_size = bytes;
        self
    }

    /// Sets the UDP socket's receive and send buffer sizes (0: the system's defaults).
    pub fn with_socket_buffer_size(mut self, bytes: usize) -> Self {
        self.socket_buffer_size = bytes;
        self
    }

    /// Sets the most control messages queued for one peer.
    pub fn with_control_queue_capacity(mut self, capacity: usize) -> Self {
        self.control_queue_capacity = capacity;
        self
    }

    /// Sets what one peer may announce.
    pub fn with_peer_limits(mut self, limits: PeerLimits) -> Self {
        self.peer_limits = limits;
        self
    }

    /// Sets the most dials to discovered peers in progress at once, and per second.
    pub fn with_discovery_dials(mut self, at_once: usize, per_second: u32) -> Self {
        self.max_discovery_dials = at_once;
        self.discovery_dials_per_second = per_second;
        self
    }

    /// Sets how many discovery events may wait for the node to take them.
    pub fn with_discovery_queue_capacity(mut self, events: usize) -> Self {
        self.discovery_queue_capacity = events;
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

    /// Checks the settings that [`Transport`](super::Transport) does not: the event and
    /// discovery queues, the request budgets and the slow-consumer timeout.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.discovery_queue_capacity == 0 {
            return Err(Error::invalid_argument(
                "discovery_queue_capacity must be at least 1",
            ));
        }
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
        if self.max_request_bytes == 0 || self.max_request_bytes_per_peer == 0 {
            return Err(Error::invalid_argument(
                "max_request_bytes and max_request_bytes_per_peer must be at least 1",
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
            max_concurrent_bidi_streams: self
                .max_concurrent_requests
                .saturating_add(self.max_concurrent_streams),
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_pending_handshakes,
            unreachable_probe_interval: self.unreachable_probe_interval,
            receive_window: self.receive_window,
            send_window: self.send_window,
            max_udp_payload_size: self.max_udp_payload_size,
            socket_buffer_size: self.socket_buffer_size,
        }
    }
}
