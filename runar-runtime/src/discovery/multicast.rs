//! Multicast discovery: signed announcements on an IPv4 multicast group.
//!
//! # Sockets
//!
//! * One **receiving socket** per provider, bound to the group's port with `SO_REUSEADDR` (and
//!   `SO_REUSEPORT` on Unix), so several nodes in one process and several processes on one host
//!   each get a copy of every datagram. On Unix it is bound to the group address itself, so it
//!   only sees that group's datagrams. It joins the group on every selected interface.
//! * One **sending socket** per selected interface, bound to that interface's address (ephemeral
//!   port) with `IP_MULTICAST_IF` set to it, the configured TTL and multicast loop on (peers on
//!   the same host must hear us). All sends are synchronous and non-blocking, so a goodbye can be
//!   sent from `Drop`.
//!
//! # Interfaces
//!
//! By default: every IPv4 interface that is up and running, multicast-capable (on Linux from
//! `/sys/class/net/<name>/flags`; assumed elsewhere) and not loopback; if there is none, the
//! loopback interface `127.0.0.1`. An explicit list replaces that choice.
//!
//! # Addresses
//!
//! The announcement sent on an interface carries the addresses reachable through it:
//! an unspecified bound address (`0.0.0.0:p`) becomes `<interface address>:p`; a loopback address
//! is only announced on the loopback interface; another specific address is announced as is. An
//! IPv6 wildcard (`[::]:p`) is not announced (bind `0.0.0.0` or specific addresses). Receivers
//! filter again (see [`usable_from`]): a loopback address from a non-loopback source is dropped.
//!
//! # Timing
//!
//! The first announcement goes out after `first_announce_delay` (default 10 ms), the next ones
//! 100 ms, 200 ms, 400 ms, … later, up to the steady `announce_interval` (default 5 s). Hearing a
//! new peer (a node id, or a new instance of one, not heard before or since its goodbye) makes us
//! announce again on the group within a few milliseconds, at most once per 50 ms, so a node
//! that starts long after another finds it at once. `announce_now` announces immediately and
//! restarts the fast schedule. Stopping sends a goodbye on every interface.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    net::UdpSocket,
    sync::Notify,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{
    DiscoveryEvent, LocalPeer, MulticastGroupSpec, Reporter,
    packet::{Checker, Kind, MAX_ADDRESSES, Outgoing, Rejected, Verified, unix_millis, unix_nanos},
};
use crate::{
    Error, Result,
    identity::{NodeId, NodeKeypair},
};

pub(crate) use super::packet::usable_from;

/// Default steady interval between announcements.
pub(crate) const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
/// Default delay of the first announcement after start.
pub(crate) const DEFAULT_FIRST_ANNOUNCE_DELAY: Duration = Duration::from_millis(10);
/// Default multicast TTL: the local link only.
pub(crate) const DEFAULT_TTL: u32 = 1;
/// Default bound on a datagram's size, sent or received: fits any Ethernet or IPv6 path.
pub(crate) const DEFAULT_MAX_DATAGRAM_SIZE: usize = 1200;
/// The smallest accepted `max_datagram_size`: an announcement without addresses fits.
pub(crate) const MIN_MAX_DATAGRAM_SIZE: usize = 512;
/// The largest accepted `max_datagram_size`: the largest UDP payload over IPv4.
pub(crate) const MAX_MAX_DATAGRAM_SIZE: usize = 65_507;

/// The gap after the first announcement; doubled until the steady interval.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// A reply to a new peer waits this long, to answer several new peers at once.
const REPLY_DELAY: Duration = Duration::from_millis(5);
/// At most one reply per this interval.
const REPLY_MIN_GAP: Duration = Duration::from_millis(50);
/// A goodbye whose timestamp is further than this from our clock is dropped.
const GOODBYE_MAX_AGE_MS: u64 = 60_000;
/// At most this many peers are remembered (for replay protection).
const PEER_TABLE_CAPACITY: usize = 4096;
/// Peers not heard from for this long may be forgotten when the table is full.
const PEER_FORGET_AFTER: Duration = Duration::from_secs(600);

/// Settings of one multicast provider.
#[derive(Clone, Debug)]
pub(crate) struct MulticastOptions {
    pub(crate) group: MulticastGroupSpec,
    /// Interfaces by IPv4 address; empty: automatic (see the module documentation).
    pub(crate) interfaces: Vec<Ipv4Addr>,
    pub(crate) announce_interval: Duration,
    pub(crate) first_announce_delay: Duration,
    pub(crate) ttl: u32,
    pub(crate) max_datagram_size: usize,
}

impl MulticastOptions {
    pub(crate) fn new(group: MulticastGroupSpec) -> Self {
        MulticastOptions {
            group,
            interfaces: Vec::new(),
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            first_announce_delay: DEFAULT_FIRST_ANNOUNCE_DELAY,
            ttl: DEFAULT_TTL,
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
        }
    }

    /// Checks the settings; returns the group.
    pub(crate) fn validate(&self) -> Result<SocketAddrV4> {
        let group = self.group.resolve()?;
        if self.announce_interval.is_zero() {
            return Err(Error::invalid_argument(
                "discovery: the announce interval must be positive",
            ));
        }
        if self.ttl > 255 {
            return Err(Error::invalid_argument(format!(
                "discovery: multicast TTL {} is above 255",
                self.ttl
            )));
        }
        if !(MIN_MAX_DATAGRAM_SIZE..=MAX_MAX_DATAGRAM_SIZE).contains(&self.max_datagram_size) {
            return Err(Error::invalid_argument(format!(
                "discovery: max datagram size {} is outside {MIN_MAX_DATAGRAM_SIZE}..={MAX_MAX_DATAGRAM_SIZE}",
                self.max_datagram_size
            )));
        }
        Ok(group)
    }
}

/// One interface we announce on.
struct Link {
    interface: Ipv4Addr,
    socket: StdUdpSocket,
    advertised: Vec<SocketAddr>,
}

#[derive(Default)]
struct SendState {
    next_sequence: u64,
    stopped: bool,
}

/// Builds and sends our announcements; shared by the tasks and the handle.
struct Sender {
    keypair: Arc<NodeKeypair>,
    network_id: String,
    instance: u64,
    group: SocketAddr,
    max_size: usize,
    links: Vec<Link>,
    state: Mutex<SendState>,
}

impl Sender {
    /// Sends one datagram of `kind` on every link, unless a goodbye was sent already. After a
    /// goodbye nothing more is sent. Non-blocking: a full socket buffer loses the datagram.
    fn send(&self, kind: Kind) {
        let mut state = crate::lock::lock(&self.state);
        if state.stopped {
            return;
        }
        if kind == Kind::Goodbye {
            state.stopped = true;
        }
        let timestamp_ms = unix_millis();
        for link in &self.links {
            state.next_sequence = state.next_sequence.saturating_add(1);
            let datagram = Outgoing {
                keypair: &self.keypair,
                network_id: &self.network_id,
                kind,
                addresses: &link.advertised,
                instance: self.instance,
                sequence: state.next_sequence,
                timestamp_ms,
            }
            .encode(self.max_size);
            if let Err(e) = link.socket.send_to(&datagram, self.group) {
                tracing::debug!(
                    interface = %link.interface, group = %self.group, ?kind, error = %e,
                    "discovery: send failed"
                );
            }
        }
    }
}

/// A running multicast provider. Dropping it sends a goodbye and ends its tasks.
pub(crate) struct MulticastDiscovery {
    sender: Arc<Sender>,
    announce_now: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MulticastDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MulticastDiscovery")
            .field("group", &self.sender.group)
            .field(
                "interfaces",
                &self
                    .sender
                    .links
                    .iter()
                    .map(|l| l.interface)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl MulticastDiscovery {
    /// Opens the sockets, joins the group and starts announcing and listening.
    pub(crate) async fn start(
        options: &MulticastOptions,
        local: &LocalPeer,
        events: Reporter,
    ) -> Result<Self> {
        let group = options.validate()?;
        let explicit = !options.interfaces.is_empty();
        // Both lists are free of duplicates.
        let interfaces = if explicit {
            options.interfaces.clone()
        } else {
            auto_interfaces(&local.addresses)
        };

        for addr in &local.addresses {
            if matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified()) {
                tracing::warn!(
                    %addr,
                    "discovery: an IPv6 wildcard address is not advertised; bind 0.0.0.0 or a \
                     specific address"
                );
            }
        }

        let receiver = receiving_socket(group)?;
        let mut links = Vec::new();
        for interface in interfaces {
            let joined = receiver
                .join_multicast_v4(group.ip(), &interface)
                .map_err(|e| {
                    Error::unavailable(format!(
                        "discovery: cannot join {} on interface {interface}: {e}",
                        group.ip()
                    ))
                })
                .and_then(|()| sending_socket(interface, options.ttl));
            match joined {
                Ok(socket) => links.push(Link {
                    interface,
                    socket,
                    advertised: advertised_addresses(&local.addresses, interface),
                }),
                Err(e) if explicit => return Err(e),
                Err(e) => tracing::warn!("{e}; interface skipped"),
            }
        }
        if links.is_empty() {
            return Err(Error::unavailable(format!(
                "discovery: no usable interface for multicast group {group}"
            )));
        }
        for link in &links {
            if link.advertised.is_empty() {
                tracing::warn!(
                    interface = %link.interface,
                    "discovery: no address of this node is reachable through this interface"
                );
            }
        }
        let receiver = UdpSocket::from_std(receiver.into()).map_err(|e| {
            Error::unavailable(format!("discovery: cannot register the socket: {e}"))
        })?;

        let keypair = Arc::clone(&local.keypair);
        let network_id = local.network_id.clone();
        let checker = Checker {
            network_id: network_id.clone(),
            own: keypair.node_id(),
            max_size: options.max_datagram_size,
        };
        tracing::debug!(
            %group,
            interfaces = ?links.iter().map(|l| (l.interface, &l.advertised)).collect::<Vec<_>>(),
            "discovery: multicast started"
        );
        let sender = Arc::new(Sender {
            keypair,
            network_id,
            instance: unix_nanos(),
            group: SocketAddr::V4(group),
            max_size: options.max_datagram_size,
            links,
            state: Mutex::new(SendState::default()),
        });
        let announce_now = Arc::new(Notify::new());
        let reply = Arc::new(Notify::new());
        let listen = tokio::spawn(listen(receiver, checker, events, Arc::clone(&reply)));
        let announce = tokio::spawn(announce(
            Arc::clone(&sender),
            Schedule {
                first: options.first_announce_delay,
                steady: options.announce_interval,
            },
            Arc::clone(&announce_now),
            reply,
        ));
        Ok(MulticastDiscovery {
            sender,
            announce_now,
            tasks: vec![listen, announce],
        })
    }

    /// Announces at once and restarts the fast schedule.
    pub(crate) fn announce_now(&self) {
        self.announce_now.notify_one();
    }

    /// Sends the goodbye and waits for the tasks to end.
    pub(crate) async fn stop(mut self) {
        self.sender.send(Kind::Goodbye);
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MulticastDiscovery {
    fn drop(&mut self) {
        self.sender.send(Kind::Goodbye);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The announcement schedule.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    first: Duration,
    steady: Duration,
}

/// The gaps between scheduled announcements: 100 ms, then doubling, up to the steady interval.
#[derive(Debug)]
struct Backoff {
    steady: Duration,
    gap: Duration,
}

impl Backoff {
    fn new(steady: Duration) -> Self {
        Backoff {
            steady,
            gap: INITIAL_BACKOFF.min(steady),
        }
    }

    /// The gap after the announcement just sent.
    fn next_gap(&mut self) -> Duration {
        let gap = self.gap;
        self.gap = self.gap.saturating_mul(2).min(self.steady);
        gap
    }

    /// Back to the fast start.
    fn restart(&mut self) {
        self.gap = INITIAL_BACKOFF.min(self.steady);
    }
}

/// `delay` from now; a delay too large to represent is a year.
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

async fn announce(sender: Arc<Sender>, schedule: Schedule, now: Arc<Notify>, reply: Arc<Notify>) {
    let mut next = after(schedule.first);
    let mut backoff = Backoff::new(schedule.steady);
    let mut reply_due: Option<Instant> = None;
    let mut last_reply: Option<Instant> = None;
    loop {
        tokio::select! {
            () = sleep_until(next) => {
                sender.send(Kind::Announce);
                next = after(backoff.next_gap());
            }
            () = now.notified() => {
                sender.send(Kind::Announce);
                backoff.restart();
                next = after(backoff.next_gap());
            }
            () = reply.notified(), if reply_due.is_none() => {
                let soon = after(REPLY_DELAY);
                reply_due = Some(match last_reply {
                    Some(last) => soon.max(last + REPLY_MIN_GAP),
                    None => soon,
                });
            }
            () = sleep_until(reply_due.unwrap_or(next)), if reply_due.is_some() => {
                sender.send(Kind::Announce);
                reply_due = None;
                last_reply = Some(Instant::now());
            }
        }
    }
}

async fn listen(socket: UdpSocket, checker: Checker, events: Reporter, reply: Arc<Notify>) {
    // One more byte than allowed, to tell an oversized datagram (truncated) from a full one.
    let mut buf = vec![0u8; checker.max_size.saturating_add(1)];
    let mut peers = PeerTable::default();
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "discovery: receive failed");
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let Some(verified) = check(&checker, &peers, datagram, source) else {
            continue;
        };
        match verified.kind {
            Kind::Announce => {
                let is_new = peers.record(&verified, true);
                if is_new {
                    tracing::debug!(node = %verified.node_id, %source, "discovery: new peer");
                    reply.notify_one();
                }
                let mut addresses = Vec::with_capacity(verified.addresses.len());
                for addr in verified.addresses {
                    if usable_from(&addr, source.ip()) && !addresses.contains(&addr) {
                        addresses.push(addr);
                    }
                }
                if addresses.is_empty() {
                    tracing::debug!(
                        node = %verified.node_id, %source,
                        "discovery: announcement without a usable address"
                    );
                    continue;
                }
                events.report(DiscoveryEvent::Discovered {
                    node_id: verified.node_id,
                    addresses,
                });
            }
            Kind::Goodbye => {
                if peers.record(&verified, false) {
                    tracing::debug!(node = %verified.node_id, %source, "discovery: goodbye");
                    events.report(DiscoveryEvent::Goodbye {
                        node_id: verified.node_id,
                    });
                }
            }
        }
    }
}

/// Every check of one datagram; `None` (with a debug log) if it is dropped.
fn check(
    checker: &Checker,
    peers: &PeerTable,
    datagram: &[u8],
    source: SocketAddr,
) -> Option<Verified> {
    let parsed = match checker.parse(datagram) {
        Ok(parsed) => parsed,
        Err(Rejected::Own) => return None,
        Err(e) => {
            tracing::debug!(%source, len = datagram.len(), "discovery: dropped datagram: {e}");
            return None;
        }
    };
    if peers.is_stale(&parsed.node_id, parsed.instance, parsed.sequence) {
        tracing::debug!(
            %source, node = %parsed.node_id, instance = parsed.instance,
            sequence = parsed.sequence, "discovery: dropped replayed or reordered datagram"
        );
        return None;
    }
    let verified = match parsed.verify() {
        Ok(verified) => verified,
        Err(e) => {
            tracing::debug!(%source, "discovery: dropped datagram: {e}");
            return None;
        }
    };
    if verified.kind == Kind::Goodbye
        && unix_millis().abs_diff(verified.timestamp_ms) > GOODBYE_MAX_AGE_MS
    {
        tracing::debug!(
            %source, node = %verified.node_id,
            "discovery: dropped goodbye with a timestamp too far from our clock"
        );
        return None;
    }
    Some(verified)
}

/// What we remember of a peer: the last accepted (instance, sequence), for replay protection.
#[derive(Debug)]
struct Peer {
    instance: u64,
    sequence: u64,
    alive: bool,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct PeerTable {
    peers: HashMap<NodeId, Peer>,
}

impl PeerTable {
    /// True if a datagram with this (instance, sequence) is not newer than one already accepted.
    fn is_stale(&self, node: &NodeId, instance: u64, sequence: u64) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| (instance, sequence) <= (p.instance, p.sequence))
    }

    /// Records an accepted datagram. For an announcement (`alive`), returns true if the peer is
    /// new: unknown, gone, or a new instance. For a goodbye, true if the peer was alive.
    fn record(&mut self, verified: &Verified, alive: bool) -> bool {
        let now = Instant::now();
        if !self.peers.contains_key(&verified.node_id) {
            self.make_room(now);
        }
        let previous = self.peers.insert(
            verified.node_id,
            Peer {
                instance: verified.instance,
                sequence: verified.sequence,
                alive,
                last_seen: now,
            },
        );
        if alive {
            previous.is_none_or(|p| !p.alive || p.instance != verified.instance)
        } else {
            previous.is_some_and(|p| p.alive)
        }
    }

    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < PEER_TABLE_CAPACITY {
            return;
        }
        self.peers
            .retain(|_, p| now.duration_since(p.last_seen) < PEER_FORGET_AFTER);
        if self.peers.len() >= PEER_TABLE_CAPACITY {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, p)| (p.alive, p.last_seen))
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.peers.remove(&id);
            }
        }
    }
}

fn socket_error(what: &str, e: std::io::Error) -> Error {
    Error::unavailable(format!("discovery: {what}: {e}"))
}

/// The socket that receives the group's datagrams, shared with other nodes on this host.
fn receiving_socket(group: SocketAddrV4) -> Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| socket_error("cannot create a UDP socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| socket_error("SO_REUSEADDR", e))?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket
        .set_reuse_port(true)
        .map_err(|e| socket_error("SO_REUSEPORT", e))?;
    #[cfg(target_os = "linux")]
    if let Err(e) = socket.set_multicast_all_v4(false) {
        tracing::debug!(error = %e, "discovery: cannot clear IP_MULTICAST_ALL");
    }
    socket
        .set_multicast_loop_v4(true)
        .map_err(|e| socket_error("IP_MULTICAST_LOOP", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| socket_error("non-blocking mode", e))?;
    // Binding to the group address (Unix) filters out other groups on the same port; Windows
    // only allows binding to a local address.
    #[cfg(unix)]
    let bind = SocketAddrV4::new(*group.ip(), group.port());
    #[cfg(not(unix))]
    let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port());
    socket
        .bind(&SocketAddr::V4(bind).into())
        .map_err(|e| socket_error(&format!("cannot bind {bind}"), e))?;
    Ok(socket)
}

/// A socket that sends to the group through one interface.
pub(crate) fn sending_socket(interface: Ipv4Addr, ttl: u32) -> Result<StdUdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| socket_error("cannot create a UDP socket", e))?;
    socket
        .set_multicast_if_v4(&interface)
        .map_err(|e| socket_error(&format!("IP_MULTICAST_IF {interface}"), e))?;
    socket
        .set_multicast_ttl_v4(ttl)
        .map_err(|e| socket_error("IP_MULTICAST_TTL", e))?;
    socket
        .set_multicast_loop_v4(true)
        .map_err(|e| socket_error("IP_MULTICAST_LOOP", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| socket_error("non-blocking mode", e))?;
    let bind = SocketAddr::from((interface, 0));
    socket
        .bind(&bind.into())
        .map_err(|e| socket_error(&format!("cannot bind {bind}"), e))?;
    Ok(socket.into())
}

/// The default interfaces. A node bound to specific IPv4 addresses (`127.0.0.1`, say) is
/// reachable only there, so it announces on the interfaces that own them; a node bound to
/// `0.0.0.0` announces on every up, multicast-capable, non-loopback IPv4 interface, or on
/// loopback if there is none.
fn auto_interfaces(bound: &[SocketAddr]) -> Vec<Ipv4Addr> {
    let mut specific = Vec::new();
    for addr in bound {
        match addr.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_multicast() => {
                if !specific.contains(&ip) {
                    specific.push(ip);
                }
            }
            _ => return all_interfaces(),
        }
    }
    if specific.is_empty() {
        return all_interfaces();
    }
    specific
}

/// Up, multicast-capable, non-loopback IPv4 interfaces; loopback if none.
fn all_interfaces() -> Vec<Ipv4Addr> {
    let all = match if_addrs::get_if_addrs() {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "discovery: cannot list interfaces; using loopback");
            Vec::new()
        }
    };
    let mut chosen = Vec::new();
    for interface in all {
        let if_addrs::IfAddr::V4(v4) = &interface.addr else {
            continue;
        };
        if v4.ip.is_loopback() || !interface.is_oper_up() || !multicast_capable(&interface.name) {
            continue;
        }
        if !chosen.contains(&v4.ip) {
            chosen.push(v4.ip);
        }
    }
    if chosen.is_empty() {
        chosen.push(Ipv4Addr::LOCALHOST);
    }
    chosen
}

/// On Linux, whether the interface is up and has the MULTICAST flag; true when unknown.
fn multicast_capable(name: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        const IFF_UP: u32 = 0x1;
        const IFF_MULTICAST: u32 = 0x1000;
        // An alias such as `eth0:1` shares the flags of `eth0`.
        let device = name.split(':').next().unwrap_or(name);
        if device.is_empty() || device.contains('/') || device.contains("..") {
            return false;
        }
        let flags = std::fs::read_to_string(format!("/sys/class/net/{device}/flags"))
            .ok()
            .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok());
        match flags {
            Some(flags) => flags & IFF_UP != 0 && flags & IFF_MULTICAST != 0,
            None => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        true
    }
}

/// The addresses of this node reachable through `interface` (see the module documentation).
fn advertised_addresses(bound: &[SocketAddr], interface: Ipv4Addr) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for addr in bound {
        let candidate = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from((interface, addr.port())),
            IpAddr::V6(ip) if ip.is_unspecified() => continue,
            ip if ip.is_loopback() && !interface.is_loopback() => continue,
            _ => *addr,
        };
        if usable_from(&candidate, IpAddr::V4(interface))
            && !out.contains(&candidate)
            && out.len() < MAX_ADDRESSES
        {
            out.push(candidate);
        }
    }
    out
}

#[cfg(test)]
mod unit_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses_per_interface() {
        let bound = [
            SocketAddr::from(([0, 0, 0, 0], 4000)),
            SocketAddr::from(([127, 0, 0, 1], 4001)),
            SocketAddr::from(([192, 0, 2, 7], 4002)),
            SocketAddr::from(([0, 0, 0, 0], 0)),
            "[::]:4003".parse().unwrap(),
        ];
        let eth = Ipv4Addr::new(192, 0, 2, 2);
        assert_eq!(
            advertised_addresses(&bound, eth),
            vec![
                SocketAddr::from((eth, 4000)),
                SocketAddr::from(([192, 0, 2, 7], 4002))
            ]
        );
        assert_eq!(
            advertised_addresses(&bound, Ipv4Addr::LOCALHOST),
            vec![
                SocketAddr::from(([127, 0, 0, 1], 4000)),
                SocketAddr::from(([127, 0, 0, 1], 4001)),
                SocketAddr::from(([192, 0, 2, 7], 4002))
            ]
        );
    }

    #[test]
    fn loopback_only_from_loopback() {
        let lo = SocketAddr::from(([127, 0, 0, 1], 4000));
        let remote_src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        assert!(usable_from(&lo, IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!usable_from(&lo, remote_src));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert!(!usable_from(&mapped, remote_src));
        for bad in [
            "0.0.0.0:4000",
            "192.0.2.9:0",
            "239.1.2.3:4000",
            "255.255.255.255:4000",
            "[fe80::1]:4000",
            "[::]:4000",
        ] {
            let bad: SocketAddr = bad.parse().unwrap();
            assert!(!usable_from(&bad, remote_src), "{bad}");
        }
        assert!(usable_from(&"192.0.2.9:4000".parse().unwrap(), remote_src));
    }

    #[test]
    fn backoff_doubles_to_the_steady_interval() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let gaps: Vec<_> = (0..9).map(|_| backoff.next_gap()).collect();
        assert_eq!(
            gaps,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(ms)
        );
        backoff.restart();
        assert_eq!(backoff.next_gap(), ms(100));
        // A steady interval below the first gap is used from the start.
        let mut fast = Backoff::new(ms(30));
        assert_eq!([fast.next_gap(), fast.next_gap()], [ms(30), ms(30)]);
        // Huge intervals do not overflow.
        let mut slow = Backoff::new(Duration::MAX);
        for _ in 0..200 {
            slow.next_gap();
        }
        assert_eq!(slow.next_gap(), Duration::MAX);
        let _ = after(Duration::MAX);
    }

    #[test]
    fn sending_socket_settings() {
        let socket = sending_socket(Ipv4Addr::LOCALHOST, 7).unwrap();
        let socket = socket2::SockRef::from(&socket);
        assert_eq!(socket.multicast_ttl_v4().unwrap(), 7);
        assert_eq!(socket.multicast_if_v4().unwrap(), Ipv4Addr::LOCALHOST);
        assert!(socket.multicast_loop_v4().unwrap());
    }

    #[test]
    fn a_node_bound_to_an_address_announces_on_its_interface() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(auto_interfaces(&[lo]), vec![Ipv4Addr::LOCALHOST]);
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(auto_interfaces(&[any]), all_interfaces());
        assert_eq!(auto_interfaces(&[]), all_interfaces());
    }

    #[test]
    fn auto_interfaces_never_empty() {
        let chosen = all_interfaces();
        assert!(!chosen.is_empty());
        assert!(chosen.iter().all(|ip| !ip.is_unspecified()));
    }
}
