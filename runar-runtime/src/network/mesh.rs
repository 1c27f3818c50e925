//! The mesh: this node's connections to its peers.
//!
//! It accepts and dials connections, exchanges hellos (capabilities), keeps one connection per
//! peer, tells peers when this node's services or subscriptions change, and tells the node (its
//! [`NodeHandler`]) what peers offer, which peers come and go, and what they send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use quinn::Connection;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::framing::{encode_frame, read_frame};
use super::interface::{NodeHandler, Offer, PeerChange, PeerNotice, PeerOffer};
use super::peer::{
    KIND_CONTROL, PROTOCOL_VERSION, Peer, PeerIdentity, PeerQueues, codes, read_events, read_kind,
    serve_request, write_control, write_events,
};
use super::{NetworkConfig, NetworkKey, PeerLink, Transport, TransportError};
use crate::discovery::{Discovery, DiscoveryEvent, LocalPeer};
use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::lock::lock;
use crate::wire;

/// How long a duplicate connection stays open after the decision to drop it, at least.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// How long the node with the larger id waits before dialing a peer that discovery reported,
/// so that usually only one of the two dials (the smaller id dials at once).
const DIAL_DEFER: Duration = Duration::from_millis(300);

/// What [`Mesh::keep`] decided for a new connection.
enum Kept {
    /// The first connection to that peer.
    New,
    /// Kept instead of an older connection, which is to be retired.
    Replacing(Arc<Peer>),
    /// Not kept: a preferred connection exists.
    No,
}

/// What the mesh takes from the node's configuration.
pub(crate) struct MeshSettings {
    /// The node's name, sent in hellos.
    pub(crate) name: String,
    /// Events queued per peer before a publisher waits.
    pub(crate) event_queue_capacity: usize,
    /// The longest a superseded connection waits for its requests in flight (the node's
    /// request timeout).
    pub(crate) drain_timeout: Duration,
}

/// This node's view of the network.
pub(crate) struct Mesh<H> {
    node: H,
    transport: Transport,
    keypair: Arc<NodeKeypair>,
    discovery: Mutex<Option<Discovery>>,
    /// Peers being dialed after discovery reported them.
    dialing: Mutex<FxHashSet<NodeId>>,
    config: NetworkConfig,
    node_id: NodeId,
    name: String,
    network_id: String,
    event_queue_capacity: usize,
    drain_timeout: Duration,
    peers: Mutex<FxHashMap<NodeId, Arc<Peer>>>,
    next_link: AtomicU64,
    /// The version of this node's capabilities last sent.
    version: AtomicU64,
    /// Random, new at each start (see `Hello::instance`).
    instance: u64,
    shutdown: CancellationToken,
}

impl<H: NodeHandler> Mesh<H> {
    /// Binds the QUIC endpoint. Nothing is accepted or dialed until [`run`](Self::run).
    pub(crate) fn bind(
        node: H,
        settings: MeshSettings,
        config: NetworkConfig,
        keypair: Arc<NodeKeypair>,
        key: NetworkKey,
    ) -> Result<Arc<Self>> {
        let transport = Transport::bind(config.transport(), &keypair, &key)?;
        Ok(Arc::new(Mesh {
            node,
            transport,
            keypair: keypair.clone(),
            discovery: Mutex::default(),
            dialing: Mutex::default(),
            node_id: keypair.node_id(),
            name: settings.name,
            network_id: key.network_id(),
            event_queue_capacity: settings.event_queue_capacity,
            drain_timeout: settings.drain_timeout,
            config,
            peers: Mutex::default(),
            next_link: AtomicU64::new(1),
            version: AtomicU64::new(0),
            instance: random_u64()?,
            shutdown: CancellationToken::new(),
        }))
    }

    /// Starts accepting connections, dialing static peers and discovery. Fails when discovery
    /// cannot start (invalid options, sockets that cannot be set up).
    pub(crate) async fn run(self: &Arc<Self>) -> Result<()> {
        let (events, discovered) = mpsc::unbounded_channel();
        let local = LocalPeer {
            keypair: self.keypair.clone(),
            network_id: self.network_id.clone(),
            addresses: vec![self.local_addr()?],
        };
        let discovery = Discovery::start(&self.config.discovery, local, events).await?;
        *lock(&self.discovery) = Some(discovery);
        let mesh = self.clone();
        tokio::spawn(async move { mesh.accept_loop().await });
        let mesh = self.clone();
        tokio::spawn(async move { mesh.discovery_loop(discovered).await });
        for addr in self.config.discovery.static_peer_addrs() {
            let mesh = self.clone();
            tokio::spawn(async move { mesh.dial_loop(addr).await });
        }
        Ok(())
    }

    /// Connects to discovered peers and drops the ones that say goodbye.
    async fn discovery_loop(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<DiscoveryEvent>) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = self.shutdown.cancelled() => break,
            };
            match event {
                None => break,
                Some(DiscoveryEvent::Discovered { node_id, addresses }) => {
                    if self.is_connected(&node_id) || !lock(&self.dialing).insert(node_id) {
                        continue;
                    }
                    self.node
                        .peer_changed(PeerNotice {
                            peer: node_id,
                            change: PeerChange::Discovered,
                            name: "",
                            addresses: &addresses,
                        })
                        .await;
                    let mesh = self.clone();
                    let defer = if self.node_id < node_id {
                        Duration::ZERO
                    } else {
                        DIAL_DEFER
                    };
                    tokio::spawn(async move {
                        if !defer.is_zero() {
                            tokio::time::sleep(defer).await;
                        }
                        for addr in addresses
                            .iter()
                            .take_while(|_| !mesh.is_connected(&node_id))
                        {
                            // The TLS identity must be the announced node id.
                            match mesh.connect(*addr, Some(&node_id)).await {
                                Ok(_) => break,
                                Err(e) => {
                                    tracing::debug!(peer = %node_id, %addr, error = %e, "discovered peer unreachable")
                                }
                            }
                        }
                        lock(&mesh.dialing).remove(&node_id);
                    });
                }
                Some(DiscoveryEvent::Goodbye { node_id }) => {
                    let peer = lock(&self.peers).get(&node_id).cloned();
                    if let Some(peer) = peer {
                        peer.connection.close(codes::GOODBYE, b"goodbye");
                    }
                }
            }
        }
    }

    fn is_connected(&self, id: &NodeId) -> bool {
        lock(&self.peers)
            .get(id)
            .is_some_and(|p| p.connection.close_reason().is_none())
    }

    /// The bound QUIC address.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.transport.local_addr()?)
    }

    /// The peers currently connected.
    pub(crate) fn peer_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = lock(&self.peers).keys().copied().collect();
        ids.sort();
        ids
    }

    async fn accept_loop(self: Arc<Self>) {
        loop {
            let incoming = tokio::select! {
                incoming = self.transport.accept() => incoming,
                _ = self.shutdown.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            let mesh = self.clone();
            tokio::spawn(async move {
                let from = incoming.remote_address();
                match incoming.handshake().await {
                    Ok((connection, peer)) => {
                        if let Err(e) = mesh.attach(connection, peer, false).await {
                            tracing::debug!(%from, %peer, error = %e, "inbound connection dropped");
                        }
                    }
                    // The transport logs refused handshakes itself.
                    Err(e) => tracing::debug!(%from, error = %e, "inbound handshake failed"),
                }
            });
        }
    }

    /// Keeps a connection to the static peer at `addr`: dials with backoff while it is down,
    /// then waits for the connection (ours or the peer's) to close, and starts again.
    async fn dial_loop(self: Arc<Self>, addr: SocketAddr) {
        let initial = Duration::from_millis(100);
        let mut backoff = initial;
        let mut known: Option<NodeId> = None;
        loop {
            // Already connected to this peer (perhaps it dialed us): wait for that to end. A
            // closed connection whose cleanup has not run yet does not count.
            let current = known
                .and_then(|id| lock(&self.peers).get(&id).cloned())
                .filter(|peer| peer.connection.close_reason().is_none());
            if let Some(peer) = current {
                tokio::select! {
                    _ = peer.connection.closed() => {}
                    _ = self.shutdown.cancelled() => return,
                }
                backoff = initial;
                continue;
            }
            match self.connect(addr, None).await {
                Ok(id) => {
                    known = Some(id);
                    backoff = initial;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, retry_in = ?backoff, "static peer unreachable")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(self.config.reconnect_backoff_max);
        }
    }

    /// Dials `addr` (checking the peer's id when `expected` is given) and attaches the
    /// connection. Returns the peer's id.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<NodeId> {
        let (connection, peer) = self.transport.connect(addr, expected).await?;
        self.attach(connection, peer, true).await?;
        Ok(peer)
    }

    /// Admits a verified connection (see [`Mesh::admit`]); a connection that fails admission
    /// is closed with the protocol code, whatever the failure.
    async fn attach(
        self: &Arc<Self>,
        connection: Connection,
        peer_id: NodeId,
        dialed: bool,
    ) -> Result<()> {
        let admitted = self.admit(connection.clone(), peer_id, dialed).await;
        if admitted.is_err() {
            connection.close(codes::PROTOCOL, b"admission failed");
        }
        admitted
    }

    /// Runs the hello exchange on a verified connection, keeps it unless a preferred
    /// connection to the same peer exists, and starts its tasks.
    async fn admit(
        self: &Arc<Self>,
        connection: Connection,
        peer_id: NodeId,
        dialed: bool,
    ) -> Result<()> {
        if peer_id == self.node_id {
            connection.close(codes::DUPLICATE, b"self");
            return Err(Error::invalid_argument("dialed itself"));
        }
        let ours = self.hello();
        let (send, recv, theirs) = self
            .exchange_hellos(&connection, peer_id, dialed, &ours)
            .await?;
        let peer = self.start_peer(connection, peer_id, dialed, &theirs, send, recv);
        match self.keep(&peer, theirs.capabilities.unwrap_or_default()) {
            Kept::Replacing(old) => self.retire(old),
            Kept::New => {}
            Kept::No => {
                self.retire(peer);
                return Ok(());
            }
        }
        self.connected(&peer, &ours).await;
        Ok(())
    }

    /// Opens (as the dialer) or accepts the control stream and swaps hellos on it: the dialer
    /// speaks first, the other side answers once it has checked the dialer's hello. Returns the
    /// control stream and the peer's (checked) hello.
    async fn exchange_hellos(
        &self,
        connection: &Connection,
        peer_id: NodeId,
        dialed: bool,
        ours: &wire::Hello,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, wire::Hello)> {
        let max = self.config.max_message_size;
        let (mut send, mut recv) = if dialed {
            let (mut send, recv) = connection.open_bi().await.map_err(TransportError::from)?;
            let frame = encode_frame(Some(KIND_CONTROL), ours, max)?;
            send.write_chunk(frame)
                .await
                .map_err(TransportError::from)?;
            (send, recv)
        } else {
            self.accept_control(connection, peer_id).await?
        };
        let theirs = self.read_hello(&mut recv, peer_id).await?;
        if let Err(e) = self.check_hello(&theirs, peer_id) {
            connection.close(codes::PROTOCOL, e.message().as_bytes());
            return Err(e);
        }
        if !dialed {
            let frame = encode_frame(None, ours, max)?;
            send.write_chunk(frame)
                .await
                .map_err(TransportError::from)?;
        }
        Ok((send, recv, theirs))
    }

    /// Accepts the dialer's control stream (within the connect timeout) and checks its kind.
    async fn accept_control(
        &self,
        connection: &Connection,
        peer_id: NodeId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let accepted = tokio::time::timeout(self.config.connect_timeout, connection.accept_bi())
            .await
            .map_err(|_| Error::unavailable(format!("{peer_id} sent no hello in time")))?;
        let (send, mut recv) = accepted.map_err(TransportError::from)?;
        if read_kind(&mut recv).await? != KIND_CONTROL {
            connection.close(codes::PROTOCOL, b"expected a control stream");
            return Err(Error::invalid_argument(
                "the first stream was not a control stream",
            ));
        }
        Ok((send, recv))
    }

    /// Reads and decodes the peer's hello (within the connect timeout).
    async fn read_hello(
        &self,
        recv: &mut quinn::RecvStream,
        peer_id: NodeId,
    ) -> Result<wire::Hello> {
        let max = self.config.max_message_size;
        let frame = tokio::time::timeout(self.config.connect_timeout, read_frame(recv, max))
            .await
            .map_err(|_| Error::unavailable(format!("{peer_id} sent no hello in time")))??
            .ok_or_else(|| Error::unavailable(format!("{peer_id} closed before its hello")))?;
        wire::Hello::decode(frame)
            .map_err(|e| Error::invalid_argument(format!("malformed hello from {peer_id}: {e}")))
    }

    /// Makes the [`Peer`] for an admitted connection and starts its tasks: every connection
    /// serves what is sent on it until it closes, kept or not.
    fn start_peer(
        self: &Arc<Self>,
        connection: Connection,
        peer_id: NodeId,
        dialed: bool,
        theirs: &wire::Hello,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> Arc<Peer> {
        let link = PeerLink {
            node: peer_id,
            link: self.next_link.fetch_add(1, Ordering::Relaxed),
        };
        let identity = PeerIdentity {
            id: peer_id,
            link,
            name: theirs.node_name.clone(),
            instance: theirs.instance,
            dialer: if dialed { self.node_id } else { peer_id },
        };
        let max = self.config.max_message_size;
        let (peer, queues) = Peer::new(identity, connection, max, self.event_queue_capacity);
        self.spawn_peer_tasks(&peer, queues, send, recv);
        peer
    }

    /// A kept peer is connected: log it, send it what changed during the hello, tell the node.
    async fn connected(&self, peer: &Arc<Peer>, ours: &wire::Hello) {
        let addr = peer.connection.remote_address();
        tracing::info!(node = %self.name, peer = %peer.id, name = %peer.name, %addr, "peer connected");
        // Changes made during the hello went to the other peers only: catch up.
        let sent = ours.capabilities.as_ref().map_or(0, |c| c.version);
        if self.version.load(Ordering::Acquire) > sent {
            peer.send_control(wire::control::Kind::Capabilities(self.capabilities()));
        }
        self.node
            .peer_changed(PeerNotice {
                peer: peer.id,
                change: PeerChange::Connected,
                name: &peer.name,
                addresses: &[addr],
            })
            .await;
    }

    fn check_hello(&self, hello: &wire::Hello, peer_id: NodeId) -> Result<()> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Error::unimplemented(format!(
                "{peer_id} speaks protocol version {}, this node {PROTOCOL_VERSION}",
                hello.protocol_version
            )));
        }
        if hello.node_id != peer_id.to_string() {
            return Err(Error::permission_denied(format!(
                "{peer_id} claimed to be {}",
                hello.node_id
            )));
        }
        if hello.network_id != self.network_id {
            return Err(Error::permission_denied(format!(
                "{peer_id} is in network {}, not {}",
                hello.network_id, self.network_id
            )));
        }
        Ok(())
    }

    /// Keeps `peer` (registering what it offers) unless a preferred connection to the same node
    /// exists. Of two live connections between the same nodes, both sides keep the one dialed by
    /// the node with the smaller id; a newer connection from the same dialer replaces an older
    /// one, and a connection from a restarted peer (another instance) replaces a stale one.
    fn keep(&self, peer: &Arc<Peer>, capabilities: wire::Capabilities) -> Kept {
        let preferred = self.node_id.min(peer.id);
        let mut peers = lock(&self.peers);
        if let Some(existing) = peers.get(&peer.id) {
            let existing_alive = existing.connection.close_reason().is_none();
            let same_instance = existing.instance == peer.instance;
            if existing_alive
                && same_instance
                && existing.dialer == preferred
                && peer.dialer != preferred
            {
                return Kept::No;
            }
        }
        // Registered before it is listed, so a peer listed as connected is routable.
        self.node.peer_offers(peer, peer_offer(capabilities));
        match peers.insert(peer.id, peer.clone()) {
            Some(old) => Kept::Replacing(old),
            None => Kept::New,
        }
    }

    /// Stops routing to `peer`'s connection and closes it once what is in flight on it is done
    /// (after a grace that lets the peer reach the same decision and its requests land).
    fn retire(&self, peer: Arc<Peer>) {
        peer.retire();
        if !self.node.is_alive() {
            peer.connection
                .close(codes::DUPLICATE, b"duplicate connection");
            return;
        }
        self.node.link_removed(peer.link);
        let longest = self.drain_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_GRACE).await;
            peer.drained(longest).await;
            peer.connection
                .close(codes::DUPLICATE, b"duplicate connection");
        });
    }

    fn spawn_peer_tasks(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        queues: PeerQueues,
        control_send: quinn::SendStream,
        control_recv: quinn::RecvStream,
    ) {
        let max = self.config.max_message_size;
        tokio::spawn(write_control(control_send, queues.control, max));
        tokio::spawn(write_events(peer.connection.clone(), queues.events, max));
        let mesh = self.clone();
        let p = peer.clone();
        tokio::spawn(async move { mesh.read_control(p, control_recv).await });
        let mesh = self.clone();
        let p = peer.clone();
        tokio::spawn(async move { mesh.accept_streams(p).await });
        let mesh = self.clone();
        let p = peer.clone();
        tokio::spawn(async move {
            let reason = p.connection.closed().await;
            mesh.detach(&p, &reason).await;
        });
    }

    /// Serves the peer's request streams and reads its event streams, each in its own task.
    async fn accept_streams(self: Arc<Self>, peer: Arc<Peer>) {
        let max = self.config.max_message_size;
        // Two loops rather than one `select!` over both accepts, so that a request does not
        // create and drop an `accept_uni` future (and the reverse).
        let requests = async {
            while let Ok((send, recv)) = peer.connection.accept_bi().await {
                if !self.node.is_alive() {
                    break;
                }
                let node = self.node.clone();
                tokio::spawn(serve_request(node, peer.clone(), send, recv, max));
            }
        };
        let events = async {
            while let Ok(recv) = peer.connection.accept_uni().await {
                if !self.node.is_alive() {
                    break;
                }
                let node = self.node.clone();
                tokio::spawn(read_events(node, peer.id, recv, max));
            }
        };
        // Either ending (the connection closed, or the node is gone) ends both.
        tokio::select! {
            _ = requests => {}
            _ = events => {}
        }
    }

    async fn read_control(self: Arc<Self>, peer: Arc<Peer>, mut recv: quinn::RecvStream) {
        use wire::control::Kind;
        let max = self.config.max_message_size;
        loop {
            let frame = match read_frame(&mut recv, max).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %peer.id, error = %e, "control stream failed");
                    break;
                }
            };
            match wire::Control::decode(frame) {
                Ok(wire::Control { kind: Some(kind) }) => match kind {
                    Kind::Capabilities(capabilities) => {
                        let version = capabilities.version;
                        self.node.peer_offers(&peer, peer_offer(capabilities));
                        peer.send_control(Kind::CapabilitiesAck(version));
                    }
                    Kind::CapabilitiesAck(version) => peer.acknowledged(version),
                    Kind::Ping(nonce) => peer.send_control(Kind::Pong(nonce)),
                    Kind::Pong(_) => {}
                    Kind::Goodbye(goodbye) => {
                        tracing::info!(peer = %peer.id, reason = %goodbye.reason, "peer said goodbye");
                        peer.connection.close(codes::GOODBYE, b"goodbye");
                        return;
                    }
                },
                Ok(_) => tracing::debug!(peer = %peer.id, "empty control message"),
                Err(e) => tracing::debug!(peer = %peer.id, error = %e, "malformed control message"),
            }
        }
        // Without its control stream a peer cannot stay in sync: drop the connection.
        peer.connection
            .close(codes::PROTOCOL, b"control stream closed");
    }

    /// Removes everything learned over the peer's connection.
    async fn detach(&self, peer: &Arc<Peer>, reason: &quinn::ConnectionError) {
        let was_current = {
            let mut peers = lock(&self.peers);
            let current = peers.get(&peer.id).is_some_and(|p| p.link == peer.link);
            if current {
                peers.remove(&peer.id);
            }
            current
        };
        if !self.node.is_alive() {
            return;
        }
        self.node.link_removed(peer.link);
        // A connection replaced by a newer one is no departure.
        if was_current {
            tracing::info!(node = %self.name, peer = %peer.id, name = %peer.name, %reason, "peer disconnected");
            let addr = peer.connection.remote_address();
            self.node
                .peer_changed(PeerNotice {
                    peer: peer.id,
                    change: PeerChange::Disconnected,
                    name: &peer.name,
                    addresses: &[addr],
                })
                .await;
        }
    }

    fn hello(&self) -> wire::Hello {
        wire::Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.node_id.to_string(),
            node_name: self.name.clone(),
            network_id: self.network_id.clone(),
            capabilities: Some(self.capabilities()),
            instance: self.instance,
        }
    }

    /// A snapshot of what this node offers, with a new version number.
    fn capabilities(&self) -> wire::Capabilities {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let Offer {
            services,
            subscriptions,
        } = self.node.offer();
        wire::Capabilities {
            version,
            services,
            subscriptions,
        }
    }

    /// Tells every peer this node's current capabilities and waits (up to the announce timeout)
    /// until they have applied them.
    pub(crate) async fn announce(&self) {
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        if peers.is_empty() {
            return;
        }
        let capabilities = self.capabilities();
        let version = capabilities.version;
        for peer in &peers {
            peer.send_control(wire::control::Kind::Capabilities(capabilities.clone()));
        }
        let timeout = self.config.announce_timeout;
        let waits = peers.iter().map(|peer| async move {
            if !peer.wait_acknowledged(version, timeout).await {
                tracing::debug!(peer = %peer.id, version, "peer did not acknowledge capabilities in time");
            }
        });
        futures::future::join_all(waits).await;
    }

    /// Says goodbye to every peer, closes the connections and the endpoint, stops discovery.
    pub(crate) async fn stop(&self) {
        self.shutdown.cancel();
        let peers: Vec<Arc<Peer>> = lock(&self.peers).drain().map(|(_, p)| p).collect();
        // Closing first: the close code tells each peer at once (the goodbye message says why,
        // if it gets out first), so they drop this node without waiting for discovery.
        for peer in &peers {
            peer.send_control(wire::control::Kind::Goodbye(wire::Goodbye {
                reason: "node stopped".into(),
            }));
            peer.connection.close(codes::GOODBYE, b"goodbye");
        }
        self.transport.close();
        let discovery = lock(&self.discovery).take();
        if let Some(discovery) = discovery {
            discovery.stop().await;
        }
        // Let the endpoint send the close frames before the caller moves on (or exits).
        let _ = tokio::time::timeout(Duration::from_millis(100), self.transport.wait_idle()).await;
    }
}

/// A peer's announced capabilities, as the node takes them.
fn peer_offer(capabilities: wire::Capabilities) -> PeerOffer {
    PeerOffer {
        version: capabilities.version,
        offer: Offer {
            services: capabilities.services,
            subscriptions: capabilities.subscriptions,
        },
    }
}

/// A random number from the system's generator.
fn random_u64() -> Result<u64> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system's random generator failed"))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
impl<H> Mesh<H> {
    /// The number of open QUIC connections.
    pub(crate) fn connection_count(&self) -> usize {
        self.transport.connection_count()
    }

    /// Which side dialed the connection kept to `peer`.
    pub(crate) fn dialer_of(&self, peer: &NodeId) -> Option<NodeId> {
        lock(&self.peers).get(peer).map(|p| p.dialer)
    }
}
