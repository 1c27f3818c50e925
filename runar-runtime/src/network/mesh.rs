//! The mesh: this node's connections to its peers.
//!
//! It accepts and dials connections, exchanges hellos (capabilities), keeps one connection per
//! peer, tells peers when this node's services or subscriptions change, and tells the node (its
//! [`NodeHandler`]) what peers offer, which peers come and go, and what they send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use prost::Message;
use quinn::Connection;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::budget::RequestBudget;
use super::event_queue::{EventFlow, EventWriter, write_events};
use super::framing::LargeFrames;
use super::framing::{encode_frame, read_frame, read_frame_within};
use super::interface::{
    NodeHandler, Offer, PeerChange, PeerEventCounters, PeerNotice, PeerOffer, PeerRefusal,
    RefusalReason,
};
use super::log_limit::warn_limited;
use super::peer::{
    KIND_CONTROL, PROTOCOL_VERSION, Peer, PeerIdentity, PeerQueues, PeerSettings, codes,
    read_events, read_kind, write_control,
};
use super::stream::{StreamSlots, serve_bi};
use super::transport::BidiStreamCredit;
use super::{NetworkConfig, NetworkKey, PeerLimits, PeerLink, Transport, TransportError};
use crate::discovery::{Discovery, DiscoveryEvent, LocalPeer};
use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::lock::lock;
use crate::seal::PublicKey;
use crate::wire;

/// How long a duplicate connection stays open after the decision to drop it, at least.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// How long the node with the larger id waits before dialing a peer that discovery reported,
/// so that usually only one of the two dials (the smaller id dials at once).
const DIAL_DEFER: Duration = Duration::from_millis(1000);

/// The first wait before redialing a peer, doubled after each failed attempt.
const DIAL_RETRY_INITIAL: Duration = Duration::from_millis(100);

/// A peer discovery reported and has not said goodbye.
struct Wanted {
    /// Where it was last reported.
    addresses: Vec<SocketAddr>,
    /// When discovery last reported it.
    last_reported: Instant,
    /// Cancelled at its goodbye (or when the node stops): ends its dialing task.
    gone: CancellationToken,
    /// Since when every dial to it has failed (`None` while it is reached, or not yet tried).
    unreachable_since: Option<Instant>,
}

/// Makes room in a full `wanted` for a newly discovered peer by forgetting the one whose dials
/// have failed the longest (its task ends); false when every peer there was reached or not yet
/// tried. Announcements cost nothing to forge: peers that never answer must not keep newly
/// discovered ones from being dialed.
fn make_room(wanted: &mut FxHashMap<NodeId, Wanted>) -> bool {
    let stalest = wanted
        .iter()
        .filter_map(|(id, w)| w.unreachable_since.map(|since| (since, *id)))
        .min();
    match stalest.and_then(|(_, id)| wanted.remove(&id)) {
        Some(forgotten) => {
            forgotten.gone.cancel();
            true
        }
        None => false,
    }
}

/// A random duration in `[0, max)`, so that retries spread out.
fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    match (random_u64(), nanos) {
        (Ok(r), n) if n > 0 => Duration::from_nanos(r % n),
        _ => Duration::ZERO,
    }
}

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
    /// The node's default network name, sent in hellos and checked in the peer's.
    pub(crate) network: String,
    /// Where the peers' event writers count what they write and drop.
    pub(crate) event_counters: Arc<PeerEventCounters>,
    /// The longest a superseded connection waits for its requests in flight (the node's
    /// request timeout).
    pub(crate) drain_timeout: Duration,
    /// The node's sealing public key, announced in hellos.
    pub(crate) sealing_key: PublicKey,
}

/// The number of the next connection to a peer ([`PeerLink::link`]), shared by the meshes of
/// every network (and every node) in the process: a peer connected in two networks of a node
/// has two links, and what one connection's cleanup removes is never the other's.
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// This node's view of one of its networks. A node in several networks has one mesh per
/// network over one shared endpoint: the mesh of the default network accepts every connection
/// and hands each to the mesh of the network it was admitted to.
pub(crate) struct Mesh<H> {
    node: H,
    /// The shared endpoint, dialing in this mesh's network.
    transport: Transport,
    /// This mesh's network, as the transport numbers it (0: the default).
    index: usize,
    /// The meshes of all the node's networks, by index (weak: the node owns them).
    siblings: Mutex<Vec<std::sync::Weak<Mesh<H>>>>,
    keypair: Arc<NodeKeypair>,
    discovery: Mutex<Option<Discovery>>,
    /// The peers discovery reports (until their goodbye), each kept connected by its own task;
    /// at most `max_connections` of them.
    wanted: Mutex<FxHashMap<NodeId, Wanted>>,
    /// Dials to discovered peers in progress (`max_discovery_dials` permits), so that a node
    /// that discovers many peers at once completes handshakes instead of timing them all out.
    discovery_dials: Semaphore,
    /// When the next dial to a discovered peer may start (`discovery_dials_per_second`).
    next_discovery_dial: Mutex<Instant>,
    config: NetworkConfig,
    node_id: NodeId,
    name: String,
    /// The node's default network name, sent in the hello and checked in the peer's.
    network_name: String,
    network_id: String,
    /// The limits of each peer's outgoing events.
    events: EventFlow,
    /// The node-wide budget of peers' request bytes.
    request_budget: RequestBudget,
    /// The node's spare buffers for large frames, shared by its peers.
    large_frames: Arc<LargeFrames>,
    drain_timeout: Duration,
    peers: Mutex<FxHashMap<NodeId, Arc<Peer>>>,
    /// The version of this node's capabilities last sent.
    version: AtomicU64,
    /// Random, new at each start (see `Hello::instance`).
    instance: u64,
    /// The node's sealing public key, announced in hellos.
    sealing_key: PublicKey,
    shutdown: CancellationToken,
}

impl<H: NodeHandler> Mesh<H> {
    /// Binds one QUIC endpoint for several networks (the first is the default) and makes a
    /// mesh for each, in the same order. Nothing is accepted or dialed until
    /// [`run`](Self::run).
    pub(crate) fn bind_networks(
        config: NetworkConfig,
        keypair: Arc<NodeKeypair>,
        networks: Vec<(H, MeshSettings, NetworkKey)>,
    ) -> Result<Vec<Arc<Self>>> {
        let keys: Vec<NetworkKey> = networks.iter().map(|(_, _, key)| key.clone()).collect();
        let transport = Transport::bind_networks(config.transport(), &keypair, &keys)?;
        let mut meshes = Vec::with_capacity(networks.len());
        for (index, (node, settings, key)) in networks.into_iter().enumerate() {
            let transport = transport
                .in_network(index)
                .ok_or_else(|| Error::internal("the transport lacks a network"))?;
            meshes.push(Self::new(
                node,
                settings,
                config.clone(),
                keypair.clone(),
                key,
                transport,
                index,
            )?);
        }
        let all: Vec<std::sync::Weak<Self>> = meshes.iter().map(Arc::downgrade).collect();
        for mesh in &meshes {
            *lock(&mesh.siblings) = all.clone();
        }
        Ok(meshes)
    }

    fn new(
        node: H,
        settings: MeshSettings,
        config: NetworkConfig,
        keypair: Arc<NodeKeypair>,
        key: NetworkKey,
        transport: Transport,
        index: usize,
    ) -> Result<Arc<Self>> {
        Ok(Arc::new(Mesh {
            node,
            transport,
            index,
            siblings: Mutex::default(),
            keypair: keypair.clone(),
            discovery: Mutex::default(),
            wanted: Mutex::default(),
            discovery_dials: Semaphore::new(config.max_discovery_dials.max(1)),
            next_discovery_dial: Mutex::new(Instant::now()),
            node_id: keypair.node_id(),
            name: settings.name,
            network_name: settings.network,
            network_id: key.network_id(),
            events: EventFlow {
                queue_capacity: config.peer_event_queue_capacity,
                queue_bytes: config.peer_event_queue_bytes,
                slow_consumer_timeout: config.slow_consumer_timeout,
                counters: settings.event_counters,
            },
            drain_timeout: settings.drain_timeout,
            request_budget: RequestBudget::new(
                config.max_request_bytes,
                config.max_request_bytes_per_peer,
                config.request_reserve_per_peer,
            ),
            large_frames: Arc::default(),
            config,
            peers: Mutex::default(),
            version: AtomicU64::new(0),
            instance: random_u64()?,
            sealing_key: settings.sealing_key,
            shutdown: CancellationToken::new(),
        }))
    }

    /// Starts accepting connections, dialing static peers and discovery. Fails when discovery
    /// cannot start (invalid options, sockets that cannot be set up).
    pub(crate) async fn run(self: &Arc<Self>) -> Result<()> {
        // Bounded: discovery drops (and counts) what finds it full rather than grow it.
        let (events, discovered) = mpsc::channel(self.config.discovery_queue_capacity.max(1));
        let local = LocalPeer {
            keypair: self.keypair.clone(),
            network_id: self.network_id.clone(),
            addresses: vec![self.local_addr()?],
        };
        let discovery = Discovery::start(&self.config.discovery, local, events).await?;
        *lock(&self.discovery) = Some(discovery);
        if self.index == 0 {
            // One accept loop per endpoint: the default network's mesh runs it for all.
            let mesh = self.clone();
            tokio::spawn(async move { mesh.accept_loop().await });
        }
        let mesh = self.clone();
        tokio::spawn(async move { mesh.discovery_loop(discovered).await });
        let mut tried = Vec::new();
        for addr in self.config.discovery.static_peer_addrs() {
            let mesh = self.clone();
            let (first, done) = tokio::sync::oneshot::channel();
            tried.push(done);
            tokio::spawn(async move { mesh.dial_loop(addr, first).await });
        }
        // Return once each static peer has been tried (connected, or failed), so a request
        // made right after `start` finds what a reachable peer offers. Bounded: the dial and
        // the hello are each bounded by the connect timeout.
        let limit = self.config.connect_timeout.saturating_mul(2);
        let _ = tokio::time::timeout(limit, futures::future::join_all(tried)).await;
        Ok(())
    }

    /// Discovery reports dropped because the bounded discovery queue was full.
    pub(crate) fn discovery_reports_dropped(&self) -> u64 {
        lock(&self.discovery)
            .as_ref()
            .map_or(0, Discovery::events_dropped)
    }

    /// Keeps a connection to every peer discovery reports, until it says goodbye.
    ///
    /// Each reported peer gets one task ([`Mesh::keep_discovered`]) that dials it whenever it is
    /// not connected, with backoff: discovery may report a peer only once (the memory hub), and
    /// a dial can fail under load or lose the one-connection-per-pair race, so a single attempt
    /// per report could leave a pair unconnected for good.
    async fn discovery_loop(self: Arc<Self>, mut events: mpsc::Receiver<DiscoveryEvent>) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = self.shutdown.cancelled() => break,
            };
            match event {
                None => break,
                Some(DiscoveryEvent::Discovered { node_id, addresses }) => {
                    if node_id == self.node_id {
                        continue;
                    }
                    let is_new = {
                        let mut wanted = lock(&self.wanted);
                        let full = wanted.len() >= self.config.max_connections;
                        let known = wanted.get_mut(&node_id).map(|known| {
                            known.addresses = addresses.clone();
                            known.last_reported = Instant::now();
                        });
                        match known {
                            Some(()) => false,
                            None if full && !make_room(&mut wanted) => {
                                warn_limited!(peer = %node_id, "discovered peer not dialed: too many peers reported");
                                false
                            }
                            None => {
                                wanted.insert(
                                    node_id,
                                    Wanted {
                                        addresses: addresses.clone(),
                                        last_reported: Instant::now(),
                                        gone: self.shutdown.child_token(),
                                        unreachable_since: None,
                                    },
                                );
                                true
                            }
                        }
                    };
                    if !is_new {
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
                    tokio::spawn(async move { mesh.keep_discovered(node_id).await });
                }
                Some(DiscoveryEvent::Goodbye { node_id }) => {
                    if let Some(known) = lock(&self.wanted).remove(&node_id) {
                        known.gone.cancel();
                    }
                    let peer = lock(&self.peers).get(&node_id).cloned();
                    if let Some(peer) = peer {
                        peer.connection.close(codes::GOODBYE, b"goodbye");
                    }
                }
            }
        }
    }

    /// Waits for a permit to dial a discovered peer and for its start time under the rate
    /// limit. `None` once the node stops.
    async fn discovery_dial_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = tokio::select! {
            permit = self.discovery_dials.acquire() => permit.ok()?,
            _ = self.shutdown.cancelled() => return None,
        };
        let per_second = self.config.discovery_dials_per_second.max(1);
        let start = {
            let mut next = lock(&self.next_discovery_dial);
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs(1) / per_second;
            start
        };
        tokio::select! {
            _ = tokio::time::sleep_until(start) => Some(permit),
            _ = self.shutdown.cancelled() => None,
        }
    }

    /// Notes how the dials to the discovered peer `node_id` went: it was reached, or a round
    /// of them failed. Answers since when they have all failed (what lets a newly discovered
    /// peer take its place in a full `wanted`); `None` once it is reached, or no longer wanted.
    fn note_dials(&self, node_id: &NodeId, reached: bool) -> Option<Instant> {
        let mut wanted = lock(&self.wanted);
        let known = wanted.get_mut(node_id)?;
        if reached {
            known.unreachable_since = None;
            return None;
        }
        Some(*known.unreachable_since.get_or_insert_with(Instant::now))
    }

    /// Dials the discovered peer `node_id` whenever it is not connected (backing off from
    /// 100 ms to `reconnect_backoff_max`), until it says goodbye, the node stops, it has been
    /// unreachable and unreported for `forget_unreachable_after`, or a newly discovered peer
    /// took its place.
    async fn keep_discovered(self: Arc<Self>, node_id: NodeId) {
        let Some(gone) = lock(&self.wanted).get(&node_id).map(|w| w.gone.clone()) else {
            return;
        };
        let mut backoff = self.dial_delay(&node_id, Duration::ZERO);
        loop {
            if !backoff.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = gone.cancelled() => return,
                }
            }
            let current = lock(&self.peers)
                .get(&node_id)
                .filter(|peer| peer.connection.close_reason().is_none())
                .cloned();
            if let Some(peer) = current {
                self.note_dials(&node_id, true);
                tokio::select! {
                    _ = peer.connection.closed() => {}
                    _ = gone.cancelled() => return,
                }
                // Redial: soon, and as at first, usually from one side only, so that a mesh
                // losing links under load does not spend twice the handshakes to mend them.
                backoff =
                    self.dial_delay(&node_id, DIAL_RETRY_INITIAL + jitter(DIAL_RETRY_INITIAL));
                continue;
            }
            let Some((addresses, last_reported)) = lock(&self.wanted)
                .get(&node_id)
                .map(|w| (w.addresses.clone(), w.last_reported))
            else {
                return;
            };
            let Some(_permit) = self.discovery_dial_slot().await else {
                return;
            };
            let mut reached = false;
            for addr in addresses {
                if self.is_connected(&node_id) {
                    reached = true;
                    break;
                }
                // The TLS identity must be the announced node id.
                match self.connect(addr, Some(&node_id)).await {
                    Ok(_) => {
                        reached = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %node_id, %addr, error = %e, retry_in = ?backoff, "discovered peer unreachable")
                    }
                }
            }
            if reached {
                backoff = Duration::ZERO;
                continue;
            }
            let Some(since) = self.note_dials(&node_id, false) else {
                return;
            };
            let forget = self.config.forget_unreachable_after;
            if since.elapsed() >= forget && last_reported.elapsed() >= forget {
                tracing::debug!(peer = %node_id, "discovered peer forgotten: unreachable and no longer reported");
                let mut wanted = lock(&self.wanted);
                if wanted
                    .get(&node_id)
                    .is_some_and(|w| w.last_reported == last_reported)
                {
                    wanted.remove(&node_id);
                    return;
                }
                continue;
            }
            backoff = backoff
                .max(DIAL_RETRY_INITIAL)
                .saturating_mul(2)
                .min(self.config.reconnect_backoff_max.max(DIAL_RETRY_INITIAL));
            backoff = backoff.saturating_add(jitter(backoff));
        }
    }

    /// How long to wait before dialing the discovered `peer` while not connected to it: `soon`
    /// for the node with the smaller id, [`DIAL_DEFER`] and a jitter for the other, so that
    /// usually only the smaller id dials (its connection is the one both sides keep) and a pair
    /// costs one handshake, not two. The larger id still dials if the smaller does not (as when
    /// discovery reports only one way).
    fn dial_delay(&self, peer: &NodeId, soon: Duration) -> Duration {
        if self.node_id < *peer {
            soon
        } else {
            DIAL_DEFER + jitter(DIAL_DEFER)
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

    /// The connected peers, sorted by id (for introspection and requests to one chosen node).
    pub(crate) fn connected_peers(&self) -> Vec<Arc<Peer>> {
        let mut peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        peers.sort_by_key(|p| p.id);
        peers
    }

    /// The connection to `id`, when there is one.
    pub(crate) fn peer(&self, id: &NodeId) -> Option<Arc<Peer>> {
        lock(&self.peers).get(id).cloned()
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
                match incoming.handshake_pending().await {
                    Ok((connection, peer, _pending)) => {
                        // The network the handshake admitted the peer to picks the mesh.
                        let Some(mesh) = mesh.mesh_of(&connection) else {
                            connection.close(codes::PROTOCOL, b"network not served");
                            return;
                        };
                        if let Err(e) = mesh.attach(connection, peer, false).await {
                            tracing::debug!(%from, %peer, error = %e, "inbound connection dropped");
                        }
                    }
                    Err(e) => {
                        mesh.handshake_failed(from, &e).await;
                        tracing::debug!(%from, error = %e, "inbound handshake failed");
                    }
                }
            });
        }
    }

    /// The mesh (this one or a sibling) of the network an accepted connection is in; `None`
    /// when that network's mesh has stopped.
    fn mesh_of(self: &Arc<Self>, connection: &Connection) -> Option<Arc<Self>> {
        let index = self.transport.network_of(connection)?;
        if index == self.index {
            return Some(self.clone());
        }
        let mesh = lock(&self.siblings).get(index)?.upgrade()?;
        (!mesh.shutdown.is_cancelled()).then_some(mesh)
    }

    /// Keeps a connection to the static peer at `addr`: dials while it is down, then waits for
    /// the connection (ours or the peer's) to close, and starts again. `first` is told when the
    /// first attempt is over, whatever its outcome.
    ///
    /// A peer that answers nothing (its connection idled out, or an attempt heard nothing back:
    /// it is down or cut off) is probed, an attempt about every `unreachable_probe_interval`
    /// (each one QUIC Initial and one retransmission), so that a healed link is used again
    /// within about that long however long it was cut. A peer that answers but refuses or fails
    /// the connection is redialed with backoff, from 100 ms doubling to
    /// `reconnect_backoff_max`, so that it is not hammered.
    async fn dial_loop(self: Arc<Self>, addr: SocketAddr, first: tokio::sync::oneshot::Sender<()>) {
        let mut first = Some(first);
        let initial = DIAL_RETRY_INITIAL;
        let mut backoff = initial;
        let mut known: Option<NodeId> = None;
        let mut probe = false;
        loop {
            // Already connected to this peer (perhaps it dialed us): wait for that to end. A
            // closed connection whose cleanup has not run yet does not count.
            let current = known
                .and_then(|id| lock(&self.peers).get(&id).cloned())
                .filter(|peer| peer.connection.close_reason().is_none());
            if let Some(peer) = current {
                let reason = tokio::select! {
                    reason = peer.connection.closed() => reason,
                    _ = self.shutdown.cancelled() => return,
                };
                // Idled out: the peer went silent, and is probably cut off.
                probe = matches!(reason, quinn::ConnectionError::TimedOut);
                backoff = initial;
                continue;
            }
            let attempt = self.dial(addr, None, probe).await;
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            let wait = match attempt {
                Ok(id) => {
                    known = Some(id);
                    backoff = initial;
                    probe = false;
                    continue;
                }
                Err((e, unanswered)) => {
                    tracing::debug!(%addr, error = %e, unanswered, "static peer unreachable");
                    probe = unanswered;
                    if unanswered {
                        // The attempt itself took the probe interval: try again at once, with
                        // a little jitter so that peers probing each other spread out.
                        backoff = initial;
                        jitter(initial)
                    } else {
                        let wait = backoff;
                        backoff = backoff
                            .saturating_mul(2)
                            .min(self.config.reconnect_backoff_max.max(initial));
                        wait
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Dials `addr` (checking the peer's id when `expected` is given) and attaches the
    /// connection. Returns the peer's id.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<NodeId> {
        self.dial(addr, expected, false).await.map_err(|(e, _)| e)
    }

    /// [`connect`](Self::connect), probing when `probe` is set (see
    /// [`Transport::probe_pending`]). A failure comes with whether the peer answered nothing.
    async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<&NodeId>,
        probe: bool,
    ) -> std::result::Result<NodeId, (Error, bool)> {
        let dialed = if probe {
            self.transport.probe_pending(addr, expected).await
        } else {
            self.transport.connect_pending(addr, expected).await
        };
        let (connection, peer, _pending) = match dialed {
            Ok(connected) => connected,
            Err(e) => {
                self.handshake_failed(addr, &e).await;
                let unanswered = e.is_unanswered();
                return Err((e.into(), unanswered));
            }
        };
        self.attach(connection, peer, true)
            .await
            .map_err(|e| (e, false))?;
        Ok(peer)
    }

    /// Reports a TLS handshake with `addr` that failed because the peer's certificate was
    /// refused (or ours was): in Runar's words, a network key mismatch, or not the node that
    /// was expected.
    async fn handshake_failed(&self, addr: SocketAddr, error: &TransportError) {
        if !error.is_handshake_refused() {
            return;
        }
        let text = error.to_string();
        let reason = if matches!(error, TransportError::PeerIdentity(_))
            || text.contains("NotValidForName")
        {
            RefusalReason::Identity
        } else {
            RefusalReason::NetworkKey
        };
        let detail = format!("the TLS handshake failed ({text})");
        self.node
            .peer_refused(PeerRefusal {
                address: addr,
                peer: None,
                reason,
                detail: &detail,
            })
            .await;
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
            // Refused by the peer at its hello: say why, on this side too.
            if let Some((reason, detail)) = refusal_of(&connection) {
                self.node
                    .peer_refused(PeerRefusal {
                        address: connection.remote_address(),
                        peer: Some(peer_id),
                        reason,
                        detail: &format!("refused by the peer: {detail}"),
                    })
                    .await;
                return Err(Error::permission_denied(format!(
                    "{peer_id} refused the connection: {reason}: {detail}"
                )));
            }
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
        let ours = self.hello(&peer_id);
        // The whole exchange under one deadline: a peer that opens no stream, sends no kind
        // byte or no hello, or reads nothing, is dropped when it passes.
        let (send, recv, theirs) = tokio::time::timeout(
            self.config.connect_timeout,
            self.exchange_hellos(&connection, peer_id, dialed, &ours),
        )
        .await
        .map_err(|_| {
            Error::unavailable(format!("{peer_id} did not complete its hello in time"))
        })??;
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
            self.accept_control(connection).await?
        };
        let theirs = self.read_hello(&mut recv, peer_id).await?;
        if let Err((reason, e)) = self.check_hello(&theirs, peer_id) {
            let code = quinn::VarInt::from_u32(codes::REFUSED_BASE.saturating_add(reason as u32));
            connection.close(code, e.message().as_bytes());
            self.node
                .peer_refused(PeerRefusal {
                    address: connection.remote_address(),
                    peer: Some(peer_id),
                    reason,
                    detail: e.message(),
                })
                .await;
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

    /// Accepts the dialer's control stream and checks its kind.
    async fn accept_control(
        &self,
        connection: &Connection,
    ) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let accepted = connection.accept_bi().await;
        let (send, mut recv) = accepted.map_err(TransportError::from)?;
        if read_kind(&mut recv).await? != KIND_CONTROL {
            connection.close(codes::PROTOCOL, b"expected a control stream");
            return Err(Error::invalid_argument(
                "the first stream was not a control stream",
            ));
        }
        Ok((send, recv))
    }

    /// Reads and decodes the peer's hello.
    async fn read_hello(
        &self,
        recv: &mut quinn::RecvStream,
        peer_id: NodeId,
    ) -> Result<wire::Hello> {
        let max = self.config.max_message_size;
        let frame = read_frame(recv, max)
            .await?
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
            link: NEXT_LINK.fetch_add(1, Ordering::Relaxed),
        };
        let identity = PeerIdentity {
            id: peer_id,
            link,
            name: theirs.node_name.clone(),
            instance: theirs.instance,
            sealing_key: announced_sealing_key(theirs, peer_id),
            dialer: if dialed { self.node_id } else { peer_id },
        };
        let settings = PeerSettings {
            max_message_size: self.config.max_message_size,
            control_queue_capacity: self.config.control_queue_capacity,
            read_timeout: self.config.read_timeout,
            request_bytes: self.request_budget.peer(),
            large_frames: self.large_frames.clone(),
            small_request_size: self.config.small_request_size,
            max_concurrent_requests: self.config.max_concurrent_requests,
        };
        let (peer, queues) = Peer::new(identity, connection, settings, &self.events);
        self.spawn_peer_tasks(&peer, queues, send, recv);
        peer
    }

    /// A kept peer is connected: log it, send it what changed during the hello, tell the node.
    async fn connected(&self, peer: &Arc<Peer>, ours: &wire::Hello) {
        let addr = peer.connection.remote_address();
        tracing::info!(node = %self.name, peer = %peer.id, name = %peer.name, %addr, "peer connected");
        // Changes made during the hello went to the other peers only: catch up.
        let sent = ours.capabilities.as_ref().map_or(0, |c| c.version);
        // Read after the peer was kept (`keep`, under the peers' lock): see `announce`.
        if self.version.load(Ordering::SeqCst) > sent {
            peer.send_control(wire::control::Kind::Capabilities(
                self.capabilities(&peer.id),
            ));
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

    /// Checks the peer's hello; a refusal comes with its reason.
    fn check_hello(
        &self,
        hello: &wire::Hello,
        peer_id: NodeId,
    ) -> Result<(), (RefusalReason, Error)> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err((
                RefusalReason::ProtocolVersion,
                Error::unimplemented(format!(
                    "protocol version mismatch: {peer_id} speaks version {}, this node {PROTOCOL_VERSION}",
                    hello.protocol_version
                )),
            ));
        }
        if hello.node_id != peer_id.to_string() {
            return Err((
                RefusalReason::Identity,
                Error::permission_denied(format!(
                    "{peer_id} claimed to be {}",
                    bounded(&hello.node_id)
                )),
            ));
        }
        if hello.network_id != self.network_id {
            return Err((
                RefusalReason::NetworkKey,
                Error::permission_denied(format!(
                    "network key mismatch: {peer_id} is in network {}, not {}",
                    bounded(&hello.network_id),
                    self.network_id
                )),
            ));
        }
        if !hello.network.is_empty() && hello.network != self.network_name {
            return Err((
                RefusalReason::NetworkName,
                Error::permission_denied(format!(
                    "network name mismatch: {peer_id} is in network `{}`, this node in `{}` (same key, another name)",
                    bounded(&hello.network),
                    self.network_name
                )),
            ));
        }
        let max_len = self.config.peer_limits.max_string_len;
        if hello.node_name.len() > max_len {
            return Err((
                RefusalReason::Limits,
                Error::resource_exhausted(format!(
                    "{peer_id}'s name is {} bytes, over the limit of {max_len}",
                    hello.node_name.len()
                )),
            ));
        }
        if let Some(capabilities) = &hello.capabilities {
            check_capabilities(capabilities, &self.config.peer_limits).map_err(|e| {
                (
                    RefusalReason::Limits,
                    Error::resource_exhausted(format!("{peer_id}'s hello: {e}")),
                )
            })?;
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
        // Closed before it could be registered: its cleanup (`detach`) may already have run, so
        // registering it would leave a dead peer behind. Checked under the lock `detach` takes
        // first, so a connection that closes after this check is cleaned up as usual.
        if peer.connection.close_reason().is_some() {
            return Kept::No;
        }
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

    /// The peer is leaving: route nothing new to it, let what is in flight on the connection
    /// finish and read the `events` event frames its goodbye announced (up to the drain
    /// timeout in all), then close it; the leaving node waits for that close (up to its
    /// shutdown grace).
    fn depart(&self, peer: Arc<Peer>, events: u64) {
        peer.retire();
        if self.node.is_alive() {
            self.node.link_removed(peer.link);
        }
        let longest = self.drain_timeout;
        tokio::spawn(async move {
            let started = Instant::now();
            peer.drained(longest).await;
            let left = longest.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, peer.events_read(events)).await;
            peer.connection.close(codes::GOODBYE, b"goodbye");
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
        tokio::spawn(write_events(EventWriter {
            connection: peer.connection.clone(),
            queue: queues.events,
            slow_consumer_timeout: self.events.slow_consumer_timeout,
        }));
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
        // Two loops rather than one `select!` over both accepts, so that a request does not
        // create and drop an `accept_uni` future (and the reverse).
        let streams = StreamSlots::new(self.config.max_concurrent_streams);
        let mut credit = BidiStreamCredit::new(&self.config.transport());
        let requests = async {
            while let Ok((send, recv)) = peer.connection.accept_bi().await {
                if !self.node.is_alive() {
                    break;
                }
                let node = self.node.clone();
                let open = credit.opened(&peer.connection);
                // Boxed: the task of a request stream is large (reading, serving, writing),
                // and tokio copies a task's future whole several times (at the spawn, into
                // its cell, at each stage); boxed, each copy is of a pointer. No wrapping
                // `async` block: awaiting the stream's future from one would copy it again.
                tokio::spawn(Box::pin(serve_bi(
                    node,
                    peer.clone(),
                    send,
                    recv,
                    streams.clone(),
                    open,
                )));
            }
        };
        let events = async {
            while let Ok(recv) = peer.connection.accept_uni().await {
                if !self.node.is_alive() {
                    break;
                }
                tokio::spawn(read_events(self.node.clone(), peer.clone(), recv));
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
            let frame = match read_frame_within(&mut recv, max, self.config.read_timeout).await {
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
                        if let Err(e) = check_capabilities(&capabilities, &self.config.peer_limits)
                        {
                            tracing::warn!(peer = %peer.id, error = %e, "disconnecting a peer whose announcement is over the limits");
                            peer.connection
                                .close(codes::PROTOCOL, b"announcement over the limits");
                            return;
                        }
                        let version = capabilities.version;
                        self.node.peer_offers(&peer, peer_offer(capabilities));
                        peer.send_control(Kind::CapabilitiesAck(version));
                    }
                    Kind::CapabilitiesAck(version) => peer.acknowledged(version),
                    Kind::Ping(nonce) => peer.send_control(Kind::Pong(nonce)),
                    Kind::Pong(_) => {}
                    Kind::Goodbye(goodbye) => {
                        tracing::info!(peer = %peer.id, reason = %goodbye.reason, "peer said goodbye");
                        self.depart(peer, goodbye.events);
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
        // Retired before its offers are removed, so that a capability update being applied
        // concurrently (on the control reader) is refused and cannot re-register them.
        peer.retire();
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

    fn hello(&self, peer: &NodeId) -> wire::Hello {
        wire::Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.node_id.to_string(),
            node_name: self.name.clone(),
            network_id: self.network_id.clone(),
            capabilities: Some(self.capabilities(peer)),
            instance: self.instance,
            network: self.network_name.clone(),
            sealing_key: bytes::Bytes::copy_from_slice(self.sealing_key.as_bytes()),
        }
    }

    /// A snapshot of what this node offers `peer`, with a new version number.
    fn capabilities(&self, peer: &NodeId) -> wire::Capabilities {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.capabilities_at(version, peer)
    }

    /// What this node offers `peer`, as version `version`.
    fn capabilities_at(&self, version: u64, peer: &NodeId) -> wire::Capabilities {
        let Offer {
            services,
            subscriptions,
        } = self.node.offer(peer);
        wire::Capabilities {
            version,
            services,
            subscriptions,
        }
    }

    /// Tells every peer this node's current capabilities and waits (up to the announce timeout)
    /// until they have applied them.
    ///
    /// The version moves on before the peers are listed, even when there are none: a peer
    /// whose hello was sent before the change but that is kept only after this listing sees
    /// the newer version once kept and is sent the change then (`connected`). Listed after
    /// the bump, every peer is either told here or catches up there.
    pub(crate) async fn announce(&self) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let peers: Vec<Arc<Peer>> = lock(&self.peers).values().cloned().collect();
        if peers.is_empty() {
            return;
        }
        for peer in &peers {
            let capabilities = self.capabilities_at(version, &peer.id);
            peer.send_control(wire::control::Kind::Capabilities(capabilities));
        }
        let timeout = self.config.announce_timeout;
        let waits = peers.iter().map(|peer| async move {
            if !peer.wait_acknowledged(version, timeout).await {
                tracing::debug!(peer = %peer.id, version, "peer did not acknowledge capabilities in time");
            }
        });
        futures::future::join_all(waits).await;
    }

    /// Leaves the network: stops accepting and dialing, says goodbye to every peer, waits up to
    /// `grace` for each to finish what is in flight on its connection and close it (peers close
    /// once drained), then closes what is left and discovery (the node then closes the shared
    /// endpoint: [`close_endpoint`](Self::close_endpoint)). Returns the number of requests
    /// still in flight when the grace ran out (they fail on both sides).
    pub(crate) async fn stop(&self, grace: Duration) -> usize {
        let peers = self.retire_all();
        let deadline = Instant::now() + grace;
        let closing = peers.iter().map(|peer| async move {
            // The events already queued go out before the goodbye, which says how many there
            // were, so that the peer reads them before it closes.
            let written = tokio::time::timeout_at(deadline, peer.flush_events()).await;
            let events = written.ok().flatten().unwrap_or(0);
            say_goodbye(peer, events);
            let _ = tokio::time::timeout_at(deadline, peer.connection.closed()).await;
        });
        futures::future::join_all(closing).await;
        let dropped = peers.iter().map(|peer| peer.requests_in_flight()).sum();
        if dropped > 0 {
            tracing::warn!(node = %self.name, dropped, ?grace, "stopped with requests in flight: they were cut");
        }
        self.close_all(&peers);
        let discovery = lock(&self.discovery).take();
        if let Some(discovery) = discovery {
            discovery.stop().await;
        }
        dropped
    }

    /// Closes the endpoint that every mesh of the node shares (after each one's
    /// [`stop`](Self::stop)), and lets it send the close frames before the caller moves on (or
    /// exits).
    pub(crate) async fn close_endpoint(&self) {
        self.transport.close();
        let _ = tokio::time::timeout(Duration::from_millis(100), self.transport.wait_idle()).await;
    }

    /// What [`stop`](Self::stop) does without waiting, for a node dropped without `stop`: the
    /// goodbyes are queued and the close code tells the peers at once. Every task of the mesh
    /// ends (they watch the shutdown token or their connection).
    pub(crate) fn stop_now(&self) {
        let peers = self.retire_all();
        for peer in &peers {
            say_goodbye(peer, 0);
        }
        self.close_all(&peers);
        self.transport.close();
        // Dropping discovery sends its goodbyes and ends its tasks.
        drop(lock(&self.discovery).take());
    }

    /// Stops accepting and dialing, and retires every peer. Returns the peers.
    fn retire_all(&self) -> Vec<Arc<Peer>> {
        self.shutdown.cancel();
        lock(&self.wanted).clear();
        let peers: Vec<Arc<Peer>> = lock(&self.peers).drain().map(|(_, p)| p).collect();
        for peer in &peers {
            peer.retire();
        }
        peers
    }

    /// Closes the peers' connections (the shared endpoint stays open for the node's other
    /// networks until [`close_endpoint`](Self::close_endpoint)).
    fn close_all(&self, peers: &[Arc<Peer>]) {
        for peer in peers {
            peer.connection.close(codes::GOODBYE, b"goodbye");
        }
    }
}

/// Queues a goodbye to `peer`, announcing the `events` event frames written to it.
fn say_goodbye(peer: &Peer, events: u64) {
    peer.send_control(wire::control::Kind::Goodbye(wire::Goodbye {
        reason: "node stopped".into(),
        events,
    }));
}

/// Checks what a peer announces against `limits`, before anything of it is stored. The error
/// says which limit.
fn check_capabilities(
    capabilities: &wire::Capabilities,
    limits: &PeerLimits,
) -> std::result::Result<(), String> {
    let over = |what: &str, n: usize, max: usize| {
        if n > max {
            Err(format!("{n} {what}, over the limit of {max}"))
        } else {
            Ok(())
        }
    };
    let long = |what: &str, s: &str, max: usize| {
        if s.len() > max {
            Err(format!(
                "a {what} of {} bytes, over the limit of {max}",
                s.len()
            ))
        } else {
            Ok(())
        }
    };
    let max_len = limits.max_string_len;
    over("services", capabilities.services.len(), limits.max_services)?;
    over(
        "subscriptions",
        capabilities.subscriptions.len(),
        limits.max_subscriptions,
    )?;
    let (mut actions, mut schema) = (0usize, 0usize);
    for service in &capabilities.services {
        actions = actions.saturating_add(service.actions.len());
        schema = schema.saturating_add(service.schema.len());
        over("actions", actions, limits.max_actions)?;
        over("schema bytes", schema, limits.max_schema_bytes)?;
        for (what, s) in [
            ("service path", &service.path),
            ("service name", &service.name),
            ("version", &service.version),
            ("network", &service.network),
        ] {
            long(what, s, max_len)?;
        }
        long(
            "description",
            &service.description,
            max_len.saturating_mul(4),
        )?;
        // Action paths and patterns are checked by the node against its path limits
        // (`max_path_len`), the one place for path sizes.
    }
    for subscription in &capabilities.subscriptions {
        long("network", &subscription.network, max_len)?;
        long("group", &subscription.group, max_len)?;
    }
    Ok(())
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

/// At most 64 characters of a peer's words, for a message.
fn bounded(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The reason and details when the peer closed `connection` with a refusal code.
fn refusal_of(connection: &Connection) -> Option<(RefusalReason, String)> {
    let quinn::ConnectionError::ApplicationClosed(close) = connection.close_reason()? else {
        return None;
    };
    let reason = u64::from(close.error_code)
        .checked_sub(u64::from(codes::REFUSED_BASE))
        .and_then(|n| i32::try_from(n).ok())
        .and_then(|n| RefusalReason::try_from(n).ok())?;
    // The peer's words, bounded.
    let detail = String::from_utf8_lossy(close.reason.get(..256).unwrap_or(&close.reason));
    Some((reason, detail.into_owned()))
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

/// The sealing key `peer` announced in its hello: `None` when it announced none, or bytes
/// that are not an X25519 public key (logged; the connection is kept, its envelopes then open
/// only with a key the resolver knows).
fn announced_sealing_key(hello: &wire::Hello, peer: NodeId) -> Option<PublicKey> {
    if hello.sealing_key.is_empty() {
        return None;
    }
    let key = <[u8; crate::seal::KEY_LEN]>::try_from(hello.sealing_key.as_ref())
        .ok()
        .and_then(|bytes| PublicKey::from_bytes(bytes).ok());
    if key.is_none() {
        warn_limited!(%peer, "peer announced a malformed sealing key: ignored");
    }
    key
}
