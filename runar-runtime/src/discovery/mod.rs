//! Discovery: how a node finds the QUIC addresses of the other nodes of its network.
//!
//! A [`DiscoveryOptions`] lists providers; [`Discovery::start`] runs them for one node and
//! reports [`DiscoveryEvent`]s. Discovery only finds addresses: the node dials them and checks,
//! on connect, that the node reached is the one announced (the TLS handshake gives its verified
//! [`NodeId`]).
//!
//! * **Multicast** ([`DiscoveryOptions::multicast`]): signed announcements on an IPv4 multicast
//!   group, for LANs. The datagram format and every check a receiver makes are specified in
//!   `proto/runar/v1/discovery.proto`: an announcement carries the node's public key, node id,
//!   network id (never the network key), addresses, an instance and sequence number, and a
//!   signature by the node's key. Nobody can announce a node without its private key, other
//!   networks are ignored, and replayed datagrams are dropped. Note that the network id is
//!   public: a stranger can announce *its own* key with our network id, but the TLS handshake
//!   then refuses it.
//! * **Memory** ([`DiscoveryOptions::memory`]): an in-process [`MemoryHub`], for tests.
//! * **Static peers** ([`DiscoveryOptions::static_peers`]): addresses the node dials itself
//!   (see [`DiscoveryOptions::static_peer_addrs`]); [`Discovery`] does nothing with them.
//!
//! ```no_run
//! # async fn demo(local: runar_runtime::__private::LocalPeer) -> runar_runtime::Result<()> {
//! use std::{net::Ipv4Addr, time::Duration};
//! use runar_runtime::DiscoveryOptions;
//! use runar_runtime::__private::{Discovery, DiscoveryEvent};
//!
//! let options = DiscoveryOptions::multicast(DiscoveryOptions::DEFAULT_MULTICAST_GROUP)
//!     .multicast_interface(Ipv4Addr::LOCALHOST)
//!     .announce_interval(Duration::from_secs(5));
//! let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
//! let discovery = Discovery::start(&options, local, tx).await?;
//! while let Some(event) = rx.recv().await {
//!     match event {
//!         DiscoveryEvent::Discovered { node_id, addresses } => { /* dial */ }
//!         DiscoveryEvent::Goodbye { node_id } => { /* forget */ }
//!     }
//! }
//! discovery.stop().await;
//! # Ok(()) }
//! ```

mod memory;
mod multicast;
pub(crate) mod packet;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use crate::{
    Error, Result,
    identity::{NodeId, NodeKeypair},
    log_limit::warn_limited,
};

pub use memory::MemoryHub;
use memory::MemoryMembership;
use multicast::{MulticastDiscovery, MulticastOptions};

/// A multicast group address as given by the user: a [`SocketAddr`] or a string such as
/// `"239.255.42.98:45678"`. A string that does not parse is kept, and [`Discovery::start`]
/// fails with [`Code::InvalidArgument`](crate::Code::InvalidArgument).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastGroupSpec(Result<SocketAddr, String>);

impl MulticastGroupSpec {
    /// The group, if it is an IPv4 multicast address with a non-zero port.
    pub fn resolve(&self) -> Result<SocketAddrV4> {
        match &self.0 {
            Err(text) => Err(Error::invalid_argument(format!(
                "discovery: {text:?} is not a multicast group address such as \
                 \"239.255.42.98:45678\""
            ))),
            Ok(SocketAddr::V6(addr)) => Err(Error::invalid_argument(format!(
                "discovery: IPv6 multicast groups are not supported ({addr})"
            ))),
            Ok(SocketAddr::V4(addr)) if !addr.ip().is_multicast() => Err(Error::invalid_argument(
                format!("discovery: {addr} is not a multicast address"),
            )),
            Ok(SocketAddr::V4(addr)) if addr.port() == 0 => Err(Error::invalid_argument(format!(
                "discovery: multicast group {addr} needs a port"
            ))),
            Ok(SocketAddr::V4(addr)) => Ok(*addr),
        }
    }
}

impl From<SocketAddr> for MulticastGroupSpec {
    fn from(addr: SocketAddr) -> Self {
        MulticastGroupSpec(Ok(addr))
    }
}

impl From<SocketAddrV4> for MulticastGroupSpec {
    fn from(addr: SocketAddrV4) -> Self {
        MulticastGroupSpec(Ok(SocketAddr::V4(addr)))
    }
}

impl From<(Ipv4Addr, u16)> for MulticastGroupSpec {
    fn from((ip, port): (Ipv4Addr, u16)) -> Self {
        MulticastGroupSpec(Ok(SocketAddr::from((ip, port))))
    }
}

impl From<&str> for MulticastGroupSpec {
    fn from(text: &str) -> Self {
        MulticastGroupSpec(text.trim().parse().map_err(|_| text.to_owned()))
    }
}

impl From<String> for MulticastGroupSpec {
    fn from(text: String) -> Self {
        MulticastGroupSpec::from(text.as_str())
    }
}

impl From<&String> for MulticastGroupSpec {
    fn from(text: &String) -> Self {
        MulticastGroupSpec::from(text.as_str())
    }
}

/// One provider in a [`DiscoveryOptions`].
#[derive(Clone, Debug)]
enum Provider {
    Multicast(MulticastOptions),
    Memory(MemoryHub),
    Static(Vec<SocketAddr>),
}

/// How a node finds peers: a list of providers. Several may be combined with
/// [`DiscoveryOptions::and`].
///
/// The multicast settings ([`announce_interval`](Self::announce_interval),
/// [`first_announce_delay`](Self::first_announce_delay),
/// [`multicast_interface`](Self::multicast_interface), [`multicast_ttl`](Self::multicast_ttl),
/// [`max_datagram_size`](Self::max_datagram_size)) apply to every multicast provider already in
/// the options when they are called.
///
/// ```
/// use std::{net::Ipv4Addr, time::Duration};
/// use runar_runtime::{DiscoveryOptions, MemoryHub};
///
/// let hub = MemoryHub::new();
/// let options = DiscoveryOptions::multicast("239.255.42.98:45678")
///     .multicast_interface(Ipv4Addr::LOCALHOST)
///     .announce_interval(Duration::from_secs(2))
///     .and(DiscoveryOptions::memory(&hub))
///     .and(DiscoveryOptions::static_peers(["192.0.2.1:7000".parse().unwrap()]));
/// assert_eq!(options.static_peer_addrs(), vec!["192.0.2.1:7000".parse().unwrap()]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct DiscoveryOptions {
    providers: Vec<Provider>,
}

impl DiscoveryOptions {
    /// A suggested group for Runar networks (administratively scoped, RFC 2365).
    pub const DEFAULT_MULTICAST_GROUP: &'static str = "239.255.42.98:45678";
    /// The default steady interval between multicast announcements.
    pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = multicast::DEFAULT_ANNOUNCE_INTERVAL;
    /// The default delay of the first multicast announcement.
    pub const DEFAULT_FIRST_ANNOUNCE_DELAY: Duration = multicast::DEFAULT_FIRST_ANNOUNCE_DELAY;
    /// The default multicast TTL (1: the local link).
    pub const DEFAULT_MULTICAST_TTL: u32 = multicast::DEFAULT_TTL;
    /// The default maximum discovery datagram size, sent or received.
    pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = multicast::DEFAULT_MAX_DATAGRAM_SIZE;

    /// Multicast discovery on an IPv4 group such as `"239.255.42.98:45678"` (a string,
    /// [`SocketAddr`] or [`SocketAddrV4`]). An invalid group is reported by
    /// [`Discovery::start`].
    ///
    /// Interfaces: by default every IPv4 interface that is up, multicast-capable and not
    /// loopback, or the loopback interface if there is none; see
    /// [`multicast_interface`](Self::multicast_interface).
    pub fn multicast(group: impl Into<MulticastGroupSpec>) -> Self {
        DiscoveryOptions {
            providers: vec![Provider::Multicast(MulticastOptions::new(group.into()))],
        }
    }

    /// In-process discovery through `hub`.
    pub fn memory(hub: &MemoryHub) -> Self {
        DiscoveryOptions {
            providers: vec![Provider::Memory(hub.clone())],
        }
    }

    /// Fixed peer addresses, which the node dials itself (see
    /// [`static_peer_addrs`](Self::static_peer_addrs)).
    pub fn static_peers(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        DiscoveryOptions {
            providers: vec![Provider::Static(addrs.into_iter().collect())],
        }
    }

    /// No discovery.
    pub fn none() -> Self {
        Self::default()
    }

    /// These providers and `other`'s.
    pub fn and(mut self, other: DiscoveryOptions) -> Self {
        self.providers.extend(other.providers);
        self
    }

    /// True if there is no provider.
    pub fn is_none(&self) -> bool {
        self.providers.is_empty()
    }

    /// The static peers' addresses, in order, without duplicates.
    pub fn static_peer_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for provider in &self.providers {
            if let Provider::Static(addrs) = provider {
                for addr in addrs {
                    if !out.contains(addr) {
                        out.push(*addr);
                    }
                }
            }
        }
        out
    }

    fn each_multicast(mut self, mut f: impl FnMut(&mut MulticastOptions)) -> Self {
        for provider in &mut self.providers {
            if let Provider::Multicast(options) = provider {
                f(options);
            }
        }
        self
    }

    /// The steady interval between multicast announcements (default 5 s). After the first
    /// announcement they are sent 100 ms, 200 ms, 400 ms, … apart until this interval is
    /// reached. Must be positive.
    pub fn announce_interval(self, interval: Duration) -> Self {
        self.each_multicast(|o| o.announce_interval = interval)
    }

    /// The delay of the first multicast announcement after start (default 10 ms).
    pub fn first_announce_delay(self, delay: Duration) -> Self {
        self.each_multicast(|o| o.first_announce_delay = delay)
    }

    /// Adds an interface, by its IPv4 address, to announce and listen on. Once any is given,
    /// only the given interfaces are used, and start fails if one cannot be used. Use
    /// [`Ipv4Addr::LOCALHOST`] to keep discovery on this host (as tests do).
    pub fn multicast_interface(self, interface: Ipv4Addr) -> Self {
        self.each_multicast(|o| {
            if !o.interfaces.contains(&interface) {
                o.interfaces.push(interface);
            }
        })
    }

    /// The multicast TTL, 0..=255 (default 1: announcements stay on the local link).
    pub fn multicast_ttl(self, ttl: u32) -> Self {
        self.each_multicast(|o| o.ttl = ttl)
    }

    /// The largest discovery datagram sent or accepted, 512..=65507 bytes (default 1200).
    /// Larger datagrams are dropped; addresses that do not fit are not advertised.
    pub fn max_datagram_size(self, bytes: usize) -> Self {
        self.each_multicast(|o| o.max_datagram_size = bytes)
    }
}

/// The node that runs discovery: its identity, network and bound QUIC addresses.
#[derive(Clone, Debug)]
pub struct LocalPeer {
    /// The node's keypair; announcements are signed with it.
    pub keypair: Arc<NodeKeypair>,
    /// The public id of the node's network (`NetworkKey::network_id`): announced, and
    /// announcements from other networks are dropped.
    pub network_id: String,
    /// The bound QUIC address(es); wildcards such as `0.0.0.0:port` are expanded per interface.
    pub addresses: Vec<SocketAddr>,
}

/// What discovery reports. Events for one node may repeat (announcements are periodic, and a node
/// may be heard on several interfaces with different addresses): the consumer dedupes. The
/// node's own announcements are never reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A node of our network announced these addresses (all usable from here: never a wildcard,
    /// and loopback only if it is on this host).
    Discovered {
        /// The node's id, derived from the public key that signed the announcement.
        node_id: NodeId,
        /// Where the node says it can be reached.
        addresses: Vec<SocketAddr>,
    },
    /// A node said goodbye: it is leaving.
    Goodbye {
        /// The node's id.
        node_id: NodeId,
    },
}

/// Where the providers report: the node's bounded discovery queue. Discovery never waits on
/// it: an event that finds it full is dropped, counted ([`Discovery::events_dropped`]) and
/// logged (rate-limited), so a flood of announcements (anyone on the LAN can send them, with
/// fresh ids) costs a bounded amount of memory. Multicast announcements repeat, so a dropped
/// one is made up for by the next.
#[derive(Clone, Debug)]
pub(crate) struct Reporter {
    events: mpsc::Sender<DiscoveryEvent>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    /// Queues `event`, or drops and counts it when the queue is full. A closed queue (the node
    /// is stopping) takes nothing, silently.
    pub(crate) fn report(&self, event: DiscoveryEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let node = match &event {
                DiscoveryEvent::Discovered { node_id, .. }
                | DiscoveryEvent::Goodbye { node_id } => *node_id,
            };
            warn_limited!(
                %node,
                capacity = self.events.max_capacity(),
                "discovery event dropped: the node's discovery queue is full"
            );
        }
    }
}

#[derive(Debug)]
enum Running {
    Multicast(MulticastDiscovery),
    Memory(MemoryMembership),
}

/// Started discovery: dropping it or calling [`stop`](Self::stop) sends goodbyes and ends its
/// tasks.
#[derive(Debug)]
pub struct Discovery {
    running: Vec<Running>,
    dropped: Arc<AtomicU64>,
}

impl Discovery {
    /// Starts every provider in `options` for `local`, reporting to `events`, a bounded queue
    /// that discovery never waits on: what finds it full is dropped and counted
    /// ([`events_dropped`](Self::events_dropped)). Must be called within a Tokio runtime. Fails with [`Code::InvalidArgument`](crate::Code::InvalidArgument)
    /// for invalid options and [`Code::Unavailable`](crate::Code::Unavailable) when sockets
    /// cannot be set up; then nothing is left running.
    pub async fn start(
        options: &DiscoveryOptions,
        local: LocalPeer,
        events: mpsc::Sender<DiscoveryEvent>,
    ) -> Result<Discovery> {
        // Check every setting before anything is announced.
        for provider in &options.providers {
            if let Provider::Multicast(multicast) = provider {
                multicast.validate()?;
            }
        }
        let dropped = Arc::new(AtomicU64::new(0));
        let reporter = Reporter {
            events,
            dropped: dropped.clone(),
        };
        let mut running = Vec::with_capacity(options.providers.len());
        for provider in &options.providers {
            match provider {
                Provider::Multicast(multicast) => running.push(Running::Multicast(
                    MulticastDiscovery::start(multicast, &local, reporter.clone()).await?,
                )),
                Provider::Memory(hub) => {
                    running.push(Running::Memory(hub.attach(&local, reporter.clone())));
                }
                Provider::Static(_) => {}
            }
        }
        Ok(Discovery { running, dropped })
    }

    /// The events dropped because the queue given to [`start`](Self::start) was full.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends goodbyes on every provider and waits for the tasks to end.
    pub async fn stop(self) {
        for running in self.running {
            match running {
                Running::Multicast(m) => m.stop().await,
                Running::Memory(m) => drop(m),
            }
        }
    }

    /// Announces this node again promptly on every provider (e.g. after a peer was lost), and
    /// restarts the fast multicast schedule.
    pub fn announce_now(&self) {
        for running in &self.running {
            match running {
                Running::Multicast(m) => m.announce_now(),
                Running::Memory(m) => m.announce_now(),
            }
        }
    }
}

impl fmt::Display for DiscoveryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryEvent::Discovered { node_id, addresses } => {
                write!(f, "discovered {node_id} at {addresses:?}")
            }
            DiscoveryEvent::Goodbye { node_id } => write!(f, "goodbye from {node_id}"),
        }
    }
}
