//! The QUIC transport: one quinn endpoint per node, both server and client, admitting only
//! peers of the node's networks (each connection is in exactly one) and telling each side who
//! the other is.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use quinn::{
    Connection, Endpoint, IdleTimeout, Runtime, VarInt,
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
};

use super::{
    admission::NetworkKey,
    error::TransportError,
    log_limit::warn_limited,
    tls::{self, peer_node_id},
    udp::GroCapped,
};
use crate::identity::{NodeId, NodeKeypair};

/// Transport settings. [`Default`] suits a LAN; set `bind_addr` for a fixed port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// The UDP address to bind. Default `0.0.0.0:0` (all interfaces, ephemeral port).
    pub bind_addr: SocketAddr,
    /// The largest frame, in bytes, either side may send. Default 4 MiB.
    pub max_message_size: usize,
    /// How often to send keep-alives on a quiet connection. Default 400 ms (see
    /// `NetworkConfig::keep_alive_interval`).
    pub keep_alive_interval: Duration,
    /// How long without hearing from a peer before its connection is closed. Default 1 s: a
    /// vanished peer is noticed within 1 s, and a live one is heard from every 400 ms. Must
    /// exceed `keep_alive_interval`.
    pub idle_timeout: Duration,
    /// How long to wait for a handshake (dialing or accepting). Default 5 s.
    pub connect_timeout: Duration,
    /// The number of bidirectional streams a peer may have open at once on one connection.
    /// Default 1024. QUIC keeps a table entry per stream a peer may open, so a connection
    /// starts with [`INITIAL_BIDI_STREAMS`] and its owner raises the limit towards this one as
    /// the peer uses them ([`BidiStreamCredit`]): an idle connection stays small.
    pub max_concurrent_bidi_streams: u32,
    /// The most established connections (incoming and outgoing) this transport holds, not
    /// counting handshakes in progress. Default 256.
    pub max_connections: usize,
    /// The most handshakes (incoming and outgoing) in progress at once, counted apart from
    /// established connections. Beyond half of it, an incoming attempt from an address QUIC has
    /// not validated is asked to retry (a Retry packet proves the address); at the limit,
    /// attempts are refused. Default 64.
    pub max_pending_handshakes: usize,
    /// How long a probing dial ([`Transport::probe_pending`]) waits for a peer that answers
    /// nothing, or the idle timeout if that is longer. Default 1 s. A probe sends its first
    /// QUIC Initial at once and one retransmission a third of the way through; once the peer
    /// answers, the handshake goes on as any other (the real round-trip time takes over).
    pub unreachable_probe_interval: Duration,
    /// The flow-control window of each connection and of each stream, in bytes: the most a
    /// peer can make this endpoint buffer on one connection before it is read. Default 256 KiB;
    /// at least 16 KiB.
    pub receive_window: u64,
    /// The most bytes kept per connection of what was written until the peer acknowledges
    /// them. Default 512 KiB; at least 16 KiB.
    pub send_window: u64,
    /// The largest UDP payload (one QUIC packet) this endpoint sends or accepts; path MTU
    /// discovery probes up to it. Default 16,375 (`DEFAULT_UDP_PAYLOAD`), at most 65,500
    /// (`MAX_UDP_PAYLOAD`), at least 1,200.
    /// See `NetworkConfig::max_udp_payload_size`.
    pub max_udp_payload_size: u16,
    /// The receive and send buffer sizes asked of the kernel for the UDP socket; 0 keeps the
    /// system's defaults. Default 4 MiB. See `NetworkConfig::socket_buffer_size`.
    pub socket_buffer_size: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            bind_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            max_message_size: 4 * 1024 * 1024,
            keep_alive_interval: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(5),
            max_concurrent_bidi_streams: 1024,
            max_connections: 256,
            max_pending_handshakes: 64,
            unreachable_probe_interval: Duration::from_secs(1),
            receive_window: 256 * 1024,
            send_window: 512 * 1024,
            max_udp_payload_size: DEFAULT_UDP_PAYLOAD,
            socket_buffer_size: 4 * 1024 * 1024,
        }
    }
}

impl TransportConfig {
    /// The bidirectional streams a peer may open on a new connection, before
    /// [`BidiStreamCredit`] raises it.
    pub(crate) fn initial_bidi_streams(&self) -> u32 {
        self.max_concurrent_bidi_streams.min(INITIAL_BIDI_STREAMS)
    }

    /// quinn's transport parameters for this configuration, for the side that dialed.
    ///
    /// Only the dialing side sends keep-alives: the answer to each (an acknowledgement) keeps
    /// the dialer's idle timer running as the keep-alive keeps the other side's, so one side
    /// detects a vanished peer as fast as both would, with half the packets.
    fn quinn_transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        if self.idle_timeout <= self.keep_alive_interval {
            return Err(TransportError::InvalidConfig(format!(
                "idle_timeout ({:?}) must exceed keep_alive_interval ({:?})",
                self.idle_timeout, self.keep_alive_interval
            )));
        }
        if u32::try_from(self.max_message_size).is_err() {
            return Err(TransportError::InvalidConfig(format!(
                "max_message_size ({}) exceeds u32::MAX",
                self.max_message_size
            )));
        }
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::InvalidConfig("idle_timeout is too long".into()))?;

        // Flow control: what a peer can make this endpoint buffer is one window per connection
        // (a stream's window is the connection's), whatever the message size; a larger message
        // flows through as it is read. What is kept for sending is bounded the same way.
        if self.receive_window < MIN_WINDOW || self.send_window < MIN_WINDOW {
            return Err(TransportError::InvalidConfig(format!(
                "receive_window ({}) and send_window ({}) must be at least {MIN_WINDOW}",
                self.receive_window, self.send_window
            )));
        }
        let window = varint(self.receive_window)?;
        self.check_udp_payload_size()?;
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload_size);

        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.initial_bidi_streams()))
            .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
            .stream_receive_window(window)
            .receive_window(window)
            .send_window(self.send_window)
            .mtu_discovery_config(Some(mtu))
            .datagram_receive_buffer_size(None);
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(MAX_ACK_DELAY));
        t.ack_frequency_config(Some(ack));
        Ok(t)
    }

    fn check_udp_payload_size(&self) -> Result<(), TransportError> {
        if !(MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&self.max_udp_payload_size) {
            return Err(TransportError::InvalidConfig(format!(
                "max_udp_payload_size ({}) must be from {MIN_UDP_PAYLOAD} to {MAX_UDP_PAYLOAD}",
                self.max_udp_payload_size
            )));
        }
        Ok(())
    }

    /// quinn's endpoint settings: the largest UDP payload accepted (announced to peers, which
    /// send no larger).
    fn quinn_endpoint(&self) -> Result<quinn::EndpointConfig, TransportError> {
        self.check_udp_payload_size()?;
        let mut endpoint = quinn::EndpointConfig::default();
        endpoint
            .max_udp_payload_size(self.max_udp_payload_size)
            .map_err(|e| TransportError::InvalidConfig(format!("max_udp_payload_size: {e}")))?;
        Ok(endpoint)
    }

    /// Binds the UDP socket, with the socket buffers asked for.
    fn bind_socket(&self) -> Result<std::net::UdpSocket, TransportError> {
        let addr = self.bind_addr;
        let bind_error = |source| TransportError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
        if self.socket_buffer_size > 0 {
            let sock = socket2::SockRef::from(&socket);
            sock.set_recv_buffer_size(self.socket_buffer_size)
                .and_then(|()| sock.set_send_buffer_size(self.socket_buffer_size))
                .map_err(bind_error)?;
            // Linux reports twice what it grants (the other half is its bookkeeping).
            let granted = |size: std::io::Result<usize>| size.map_or(0, |n| n / 2);
            let (recv, send) = (
                granted(sock.recv_buffer_size()),
                granted(sock.send_buffer_size()),
            );
            if recv < self.socket_buffer_size || send < self.socket_buffer_size {
                tracing::info!(
                    asked = self.socket_buffer_size,
                    recv,
                    send,
                    "the UDP socket got smaller buffers than asked (the kernel caps them at \
                     net.core.rmem_max and wmem_max); large messages may be slower"
                );
            }
        }
        Ok(socket)
    }

    /// `transport` for a connection on loopback (see [`Loopback`]): packets of the largest
    /// payload from the start, no path MTU discovery, and the initial congestion window RFC
    /// 9002 gives that packet size ([`initial_window`]).
    fn on_loopback(&self, mut transport: quinn::TransportConfig) -> quinn::TransportConfig {
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(initial_window(self.max_udp_payload_size));
        transport
            .mtu_discovery_config(None)
            .initial_mtu(self.max_udp_payload_size)
            .congestion_controller_factory(Arc::new(cubic));
        transport
    }

    /// The transport parameters of a probing dial: the same, with an initial round-trip time
    /// guess of a ninth of the probe interval. Before the peer answers, QUIC retransmits its
    /// Initial after three round-trip guesses (a PTO) and gives the handshake up after three
    /// PTOs (or the idle timeout, if longer): so a probe retransmits at a third of the interval
    /// and ends at the interval.
    fn quinn_probe_transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        let mut t = self.quinn_transport()?;
        let guess = self.unreachable_probe_interval / 9;
        if guess.is_zero() {
            return Err(TransportError::InvalidConfig(
                "unreachable_probe_interval is too short".into(),
            ));
        }
        t.initial_rtt(guess);
        Ok(t)
    }
}

/// The transport settings of connections between two addresses of this host. Loopback carries
/// packets of any size up to 64 KiB, so such a connection starts at `max_udp_payload_size`
/// and probes nothing: path MTU discovery took about nine probes (and their acknowledgements)
/// per connection from 1,200 bytes up to 6,550 (then the largest), which more than doubled the
/// time a 60-node mesh in one process took to form (2.2 s → 6.1 s).
#[derive(Debug)]
struct Loopback {
    client: Arc<quinn::TransportConfig>,
    probe: Arc<quinn::TransportConfig>,
    server: Arc<quinn::ServerConfig>,
}

/// Whether `addr` is a loopback address (IPv4-mapped IPv6 ones included).
fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// How long a peer may hold back an acknowledgement, asked of it by QUIC's
/// acknowledgement-frequency extension (QUIC's default is 25 ms). A sender whose send or
/// congestion window is full waits for the acknowledgement of a lone packet, on any path whose
/// round trip is well under 25 ms: on loopback a 1 MiB echo on the multi-thread runtime had
/// 28, 55 and 110 ms stalls in its slowest 1% of calls, and averaged 117–270 MiB/s at a p50
/// of 1.8–2.1 ms; asking for 1 ms took the slowest of 300 calls to about 10 ms. Packets still
/// go acknowledged in pairs; only a lone one is acknowledged sooner.
const MAX_ACK_DELAY: Duration = Duration::from_millis(1);

/// RFC 9002's initial congestion window for `mtu`-byte packets: ten packets, but at most the
/// larger of two packets and 14,720 bytes. quinn's default (14,720 bytes, made for 1,200-byte
/// packets) would not let one packet over 14,720 bytes leave.
fn initial_window(mtu: u16) -> u64 {
    let mtu = u64::from(mtu);
    (10 * mtu).min((2 * mtu).max(14_720))
}

/// The smallest flow-control window accepted, in bytes.
const MIN_WINDOW: u64 = 16 * 1024;

/// The smallest UDP payload QUIC allows, in bytes.
const MIN_UDP_PAYLOAD: u16 = 1200;

/// The default [`TransportConfig::max_udp_payload_size`]: four packets of it fill one
/// segmentation-offload write (65,500 bytes; see `vendor/README.md`). On loopback, where
/// connections use it from the start, a stream of 64-byte messages took about 20% less CPU per
/// message than at 6,550 (the per-packet work of QUIC, its encryption and the kernel's is
/// spread over 2.5 times the messages), with the endpoint's receive batch at about 2.5 MiB
/// (`network/udp.rs`).
pub(crate) const DEFAULT_UDP_PAYLOAD: u16 = 16_375;

/// The largest [`TransportConfig::max_udp_payload_size`]: one packet and a UDP header within
/// IPv4's limit on a datagram (65,507 bytes of payload). quinn puts as many packets in one
/// segmentation-offload write as fit in 65,500 bytes (`vendor/README.md`): a write over the
/// kernel's 64 KiB fails (`EMSGSIZE`), which QUIC took for loss and then for a black hole.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 65_500;

/// The bidirectional streams a peer may open on a new connection (or
/// `max_concurrent_bidi_streams` if lower); raised as they are used.
pub(crate) const INITIAL_BIDI_STREAMS: u32 = 64;

/// The unidirectional streams a peer may have open at once: a peer sends its events on one
/// stream at a time (a new one after a failed write), so a few suffice.
const MAX_UNI_STREAMS: u32 = 8;

/// Raises the number of bidirectional streams a peer may open on a connection as it uses them:
/// the grant doubles, up to the configured most, when half of it is in use at once, or when the
/// peer has opened as many streams as it grants since it last grew. QUIC keeps a table entry
/// (about 80 bytes) per stream a peer may open, so granting the most to every connection up
/// front cost ~170 KiB per idle connection end at 2,048 streams; and QUIC tells the peer of
/// each eighth of the grant its closed streams free (a `MAX_STREAMS` frame, in a packet of its
/// own when no answer carries it), so a small grant on a busy connection cost a packet every
/// few calls (64 streams: 2.22 packets per sequential call against 2.03 with 512).
#[derive(Debug)]
pub(crate) struct BidiStreamCredit {
    granted: u32,
    most: u32,
    /// Streams opened since the grant last grew.
    opened: u32,
    open: Arc<std::sync::atomic::AtomicU32>,
}

/// One stream counted by [`BidiStreamCredit`]: held while it is served.
#[derive(Debug)]
pub(crate) struct OpenBidiStream(Arc<std::sync::atomic::AtomicU32>);

impl Drop for OpenBidiStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl BidiStreamCredit {
    /// The credit of a new connection made with `config`.
    pub(crate) fn new(config: &TransportConfig) -> Self {
        BidiStreamCredit {
            granted: config.initial_bidi_streams(),
            most: config.max_concurrent_bidi_streams,
            opened: 0,
            open: Arc::default(),
        }
    }

    /// Counts a stream the peer opened, raising the peer's limit on `connection` when it is
    /// due (see the type); the stream counts as open until the returned guard drops.
    pub(crate) fn opened(&mut self, connection: &quinn::Connection) -> OpenBidiStream {
        let open = self
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1);
        if let Some(granted) = self.counted(open) {
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(granted));
        }
        OpenBidiStream(self.open.clone())
    }

    /// Counts one more stream opened, `open` being open now with it: the new grant when it
    /// grows.
    fn counted(&mut self, open: u32) -> Option<u32> {
        self.opened = self.opened.saturating_add(1);
        let due = open.saturating_mul(2) >= self.granted || self.opened >= self.granted;
        if !due || self.granted >= self.most {
            return None;
        }
        self.granted = self.granted.saturating_mul(2).min(self.most);
        self.opened = 0;
        Some(self.granted)
    }
}

fn varint(n: u64) -> Result<VarInt, TransportError> {
    VarInt::from_u64(n).map_err(|_| TransportError::InvalidConfig(format!("{n} is too large")))
}

/// A node's QUIC endpoint: accepts connections from, and dials, nodes of its networks.
///
/// Cheap to clone; clones share the endpoint. One endpoint serves every network of a node; a
/// clone made with [`Transport::in_network`] dials in another of them.
#[derive(Debug, Clone)]
pub struct Transport {
    endpoint: Endpoint,
    /// The network this handle dials in (an index into `clients`).
    network: usize,
    /// Per network, the client configuration of dials.
    clients: Arc<[quinn::ClientConfig]>,
    /// Per network, the client configuration of probing dials (see [`Transport::probe_pending`]).
    probes: Arc<[quinn::ClientConfig]>,
    /// The transport settings of connections to and from loopback addresses (see
    /// [`Loopback`]).
    loopback: Arc<Loopback>,
    /// Per network, what the server side checks after a handshake.
    networks: Arc<[tls::NetworkTls]>,
    node_id: NodeId,
    config: Arc<TransportConfig>,
    /// Handshakes in progress (see [`Pending`]).
    pending: Arc<AtomicUsize>,
}

/// Counts one handshake in progress while it lives: from an incoming attempt or a dial until
/// the handshake ends, or, when the caller holds it longer (see [`Incoming::handshake_pending`]),
/// until the caller's admission ends.
#[derive(Debug)]
pub struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(counter: &Arc<AtomicUsize>) -> Pending {
        counter.fetch_add(1, Ordering::AcqRel);
        Pending(counter.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Transport {
    /// Binds a UDP socket and starts the endpoint for `node` in `network`.
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind(
        config: TransportConfig,
        node: &NodeKeypair,
        network: &NetworkKey,
    ) -> Result<Transport, TransportError> {
        Self::bind_networks(config, node, std::slice::from_ref(network))
    }

    /// Binds one endpoint for `node` in every network of `networks` (not empty): the first is
    /// the default, which this handle dials in (see [`Transport::in_network`]). Each connection
    /// belongs to one network, named by ALPN and proven by the peer's certificate.
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind_networks(
        config: TransportConfig,
        node: &NodeKeypair,
        networks: &[NetworkKey],
    ) -> Result<Transport, TransportError> {
        let transport = Arc::new(config.quinn_transport()?);
        let probe_transport = Arc::new(config.quinn_probe_transport()?);
        let tls = tls::build(node, networks)?;
        let no_initial =
            |e: quinn::crypto::rustls::NoInitialCipherSuite| TransportError::Tls(e.to_string());

        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(tls.server).map_err(no_initial)?,
        ));
        // Only the dialer sends keep-alives (see `quinn_transport`).
        let accepted = || {
            let mut accepted = config.quinn_transport()?;
            accepted.keep_alive_interval(None);
            Ok::<_, TransportError>(accepted)
        };
        let mut loopback_server = server.clone();
        loopback_server.transport_config(Arc::new(config.on_loopback(accepted()?)));
        server.transport_config(Arc::new(accepted()?));
        let loopback = Arc::new(Loopback {
            client: Arc::new(config.on_loopback(config.quinn_transport()?)),
            probe: Arc::new(config.on_loopback(config.quinn_probe_transport()?)),
            server: Arc::new(loopback_server),
        });
        let mut clients = Vec::with_capacity(tls.clients.len());
        let mut probes = Vec::with_capacity(tls.clients.len());
        for client in tls.clients {
            let crypto = Arc::new(QuicClientConfig::try_from(client).map_err(no_initial)?);
            let mut client = quinn::ClientConfig::new(crypto.clone());
            client.transport_config(transport.clone());
            clients.push(client);
            let mut probe = quinn::ClientConfig::new(crypto);
            probe.transport_config(probe_transport.clone());
            probes.push(probe);
        }

        let bind_error = |source| TransportError::Bind {
            addr: config.bind_addr,
            source,
        };
        let runtime = Arc::new(quinn::TokioRuntime);
        let socket = runtime
            .wrap_udp_socket(config.bind_socket()?)
            .map_err(bind_error)?;
        let socket = Arc::new(GroCapped::new(socket, config.max_udp_payload_size));
        let endpoint = Endpoint::new_with_abstract_socket(
            config.quinn_endpoint()?,
            Some(server),
            socket,
            runtime,
        )
        .map_err(bind_error)?;
        Ok(Transport {
            endpoint,
            network: 0,
            clients: clients.into(),
            probes: probes.into(),
            loopback,
            networks: tls.networks.into(),
            node_id: node.node_id(),
            config: Arc::new(config),
            pending: Arc::default(),
        })
    }

    /// A handle on the same endpoint that dials in network `index` (in the order given to
    /// [`Transport::bind_networks`]), or `None` when there is no such network.
    pub fn in_network(&self, index: usize) -> Option<Transport> {
        (index < self.clients.len()).then(|| Transport {
            network: index,
            ..self.clone()
        })
    }

    /// The network (its index) of an accepted connection, as its handshake named and proved
    /// it; `None` for a connection this transport did not accept.
    pub fn network_of(&self, connection: &Connection) -> Option<usize> {
        tls::network_of(connection, &self.networks).ok()
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint
            .local_addr()
            .map_err(|source| TransportError::Io {
                context: "reading the local address".into(),
                source,
            })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The configuration the transport was bound with.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The number of open connections, incoming and outgoing.
    pub fn connection_count(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// The number of handshakes in progress (see [`TransportConfig::max_pending_handshakes`]).
    pub fn pending_count(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Established connections: open ones whose handshake (and admission) is over.
    fn established(&self) -> usize {
        self.endpoint
            .open_connections()
            .saturating_sub(self.pending_count())
    }

    /// Dials `addr` and completes a verified handshake within the connect timeout.
    ///
    /// With `expected`, the peer must prove it is that node; without, any node of the network is
    /// accepted. Returns the connection and the peer's verified id.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<(Connection, NodeId), TransportError> {
        self.connect_pending(addr, expected)
            .await
            .map(|(connection, peer, _)| (connection, peer))
    }

    /// [`Transport::connect`], still counted as a handshake in progress until the returned
    /// [`Pending`] is dropped (when the caller's own admission of the connection is over).
    pub async fn connect_pending(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<(Connection, NodeId, Pending), TransportError> {
        self.dial(addr, expected, None).await
    }

    /// [`Transport::connect_pending`] for a peer that answered nothing lately (it went silent,
    /// or the last dial was unanswered): gives up after
    /// [`unreachable_probe_interval`](TransportConfig::unreachable_probe_interval) (or the idle
    /// timeout, if longer) if the peer still answers nothing, so that the caller can try again
    /// about that often and reach the peer soon after its link heals. A peer that answers gets
    /// the whole connect timeout, as with `connect_pending`.
    pub async fn probe_pending(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<(Connection, NodeId, Pending), TransportError> {
        let probe = self
            .probes
            .get(self.network)
            .cloned()
            .ok_or_else(|| TransportError::InvalidConfig("no such network".into()))?;
        self.dial(addr, expected, Some(probe)).await
    }

    /// Dials with this handle's network's client configuration, or `config`.
    async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        config: Option<quinn::ClientConfig>,
    ) -> Result<(Connection, NodeId, Pending), TransportError> {
        if self.established() >= self.config.max_connections {
            return Err(TransportError::TooManyConnections(
                self.config.max_connections,
            ));
        }
        if self.pending_count() >= self.config.max_pending_handshakes {
            return Err(TransportError::TooManyConnections(
                self.config.max_pending_handshakes,
            ));
        }
        let pending = Pending::new(&self.pending);
        let name = tls::server_name(expected);
        let probing = config.is_some();
        let mut config = match config {
            Some(config) => config,
            None => self
                .clients
                .get(self.network)
                .cloned()
                .ok_or_else(|| TransportError::InvalidConfig("no such network".into()))?,
        };
        if is_loopback(addr) {
            let loopback = &self.loopback;
            config.transport_config(if probing {
                loopback.probe.clone()
            } else {
                loopback.client.clone()
            });
        }
        let connecting = self.endpoint.connect_with(config, addr, &name)?;
        let after = self.config.connect_timeout;
        let connection = tokio::time::timeout(after, connecting)
            .await
            .map_err(|_| TransportError::Timeout { addr, after })??;
        let peer = peer_node_id(&connection)?;
        if let Some(expected) = expected
            && *expected != peer
        {
            // The verifier already refused this; never trust a mismatch regardless.
            connection.close(VarInt::from_u32(1), b"unexpected node");
            return Err(TransportError::PeerIdentity(format!(
                "expected node {expected}, reached {peer}"
            )));
        }
        Ok((connection, peer, pending))
    }

    /// The next incoming connection attempt, or `None` once the endpoint is closed.
    ///
    /// Attempts beyond `max_connections` established connections, or beyond
    /// `max_pending_handshakes` in progress, are refused (and logged) here; past half the
    /// pending limit, an attempt from an address not yet validated is asked to retry (QUIC
    /// address validation) instead. Complete the handshake with [`Incoming::handshake`],
    /// typically in a task of its own so a slow peer does not hold up the accept loop.
    pub async fn accept(&self) -> Option<Incoming> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let remote = incoming.remote_address();
            let limit = self.config.max_connections;
            if self.established() >= limit {
                warn_limited!(%remote, limit, "refusing connection: connection limit reached");
                incoming.refuse();
                continue;
            }
            let pending = self.pending_count();
            let max_pending = self.config.max_pending_handshakes;
            if pending >= max_pending {
                warn_limited!(%remote, limit = max_pending, "refusing connection: too many handshakes in progress");
                incoming.refuse();
                continue;
            }
            if pending >= max_pending / 2 && !incoming.remote_address_validated() {
                // Costs the peer a round trip and proves it receives at that address.
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            return Some(Incoming {
                inner: incoming,
                loopback: self.loopback.server.clone(),
                networks: self.networks.clone(),
                timeout: self.config.connect_timeout,
                pending: Pending::new(&self.pending),
            });
        }
    }

    /// Closes every connection (peers see an application close) and stops the endpoint.
    /// Pending and later [`Transport::accept`] calls return `None`.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(0), b"node shutting down");
    }

    /// Waits until every connection is fully closed (peers notified), e.g. after
    /// [`Transport::close`] before exiting.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// An incoming connection attempt, not yet authenticated.
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
    /// The server configuration for an attempt from a loopback address (see [`Loopback`]).
    loopback: Arc<quinn::ServerConfig>,
    networks: Arc<[tls::NetworkTls]>,
    timeout: Duration,
    pending: Pending,
}

impl Incoming {
    /// The address the attempt comes from (not yet validated).
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Refuses the attempt.
    pub fn refuse(self) {
        self.inner.refuse();
    }

    /// Completes the handshake within the connect timeout. On success the peer has proven it
    /// holds the key of the network it asked for (see [`Transport::network_of`]) and the
    /// returned id is derived from its certificate. Failures are
    /// logged with `tracing::debug!` (remote address and reason).
    pub async fn handshake(self) -> Result<(Connection, NodeId), TransportError> {
        self.handshake_pending()
            .await
            .map(|(connection, peer, _)| (connection, peer))
    }

    /// [`Incoming::handshake`], still counted as a handshake in progress until the returned
    /// [`Pending`] is dropped (when the caller's own admission of the connection is over).
    pub async fn handshake_pending(self) -> Result<(Connection, NodeId, Pending), TransportError> {
        let pending = self.pending;
        let addr = self.inner.remote_address();
        let after = self.timeout;
        let result = async {
            let connecting = if is_loopback(addr) {
                self.inner.accept_with(self.loopback)?
            } else {
                self.inner.accept()?
            };
            let connection = tokio::time::timeout(after, connecting)
                .await
                .map_err(|_| TransportError::Timeout { addr, after })??;
            let verified = tls::network_of(&connection, &self.networks)
                .and_then(|_| peer_node_id(&connection));
            match verified {
                Ok(peer) => Ok((connection, peer)),
                Err(e) => {
                    connection.close(VarInt::from_u32(1), b"bad identity");
                    Err(e)
                }
            }
        }
        .await;
        if let Err(error) = &result {
            // Peer-triggered: the node logs refusals in its own words, rate-limited.
            tracing::debug!(remote = %addr, %error, "refused incoming connection");
        }
        result.map(|(connection, peer)| (connection, peer, pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit(most: u32) -> BidiStreamCredit {
        BidiStreamCredit::new(&TransportConfig {
            max_concurrent_bidi_streams: most,
            ..TransportConfig::default()
        })
    }

    #[test]
    fn the_initial_window_is_rfc_9002s_for_the_packet_size() {
        // min(10 packets, max(2 packets, 14,720 bytes)), at least one whole packet.
        assert_eq!(initial_window(1200), 12_000);
        assert_eq!(initial_window(6550), 14_720);
        assert_eq!(initial_window(DEFAULT_UDP_PAYLOAD), 32_750);
        assert_eq!(initial_window(MAX_UDP_PAYLOAD), 131_000);
        for mtu in [
            MIN_UDP_PAYLOAD,
            1452,
            7360,
            7361,
            DEFAULT_UDP_PAYLOAD,
            MAX_UDP_PAYLOAD,
        ] {
            assert!(initial_window(mtu) >= u64::from(mtu) * 2, "{mtu}");
        }
    }

    #[test]
    fn the_grant_doubles_when_half_of_it_is_open_at_once() {
        let mut credit = credit(1024);
        let half = INITIAL_BIDI_STREAMS / 2;
        for open in 1..half {
            assert_eq!(credit.counted(open), None);
        }
        assert_eq!(credit.counted(half), Some(INITIAL_BIDI_STREAMS * 2));
    }

    #[test]
    fn the_grant_doubles_once_as_many_streams_were_opened_one_at_a_time() {
        let mut credit = credit(1024);
        let mut grants = Vec::new();
        for _ in 0..4096 {
            grants.extend(credit.counted(1));
        }
        // 64 streams, then 128 more, 256, 512: the most, never more.
        assert_eq!(grants, [128, 256, 512, 1024]);
    }

    #[test]
    fn the_grant_never_passes_the_configured_most() {
        let mut credit = credit(16);
        for open in 1..100 {
            assert_eq!(credit.counted(open), None);
        }
    }
}
