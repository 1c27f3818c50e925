//! In-process discovery through a [`MemoryHub`], for tests and single-process setups.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use super::{DiscoveryEvent, LocalPeer, Reporter};
use crate::identity::NodeId;

/// An in-process discovery hub for tests: every node attached to one hub sees the others.
///
/// Attaching a node (starting a [`Discovery`](super::Discovery) whose options include
/// [`DiscoveryOptions::memory`](super::DiscoveryOptions::memory)) reports it to every node
/// already attached with the same network id, and reports each of those to it, synchronously.
/// Stopping or dropping the discovery reports a goodbye to the others. Nodes of other networks
/// are invisible. Cloning gives another handle to the same hub.
///
/// Unspecified bound addresses (`0.0.0.0:p`, `[::]:p`) are reported as the loopback address with
/// the same port: every node on the hub runs in this process.
#[derive(Clone, Default, Debug)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubState>>,
}

#[derive(Default, Debug)]
struct HubState {
    next_token: u64,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    token: u64,
    node_id: NodeId,
    network_id: String,
    addresses: Vec<SocketAddr>,
    events: Reporter,
}

impl Member {
    fn discovered(&self) -> DiscoveryEvent {
        DiscoveryEvent::Discovered {
            node_id: self.node_id,
            addresses: self.addresses.clone(),
        }
    }

    /// True if `other` should hear about this member.
    fn visible_to(&self, other: &Member) -> bool {
        self.token != other.token
            && self.node_id != other.node_id
            && self.network_id == other.network_id
    }
}

impl MemoryHub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of nodes attached.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    /// True if no node is attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        crate::lock::lock(&self.inner)
    }

    /// Attaches a node: the others hear of it and it hears of them.
    pub(crate) fn attach(&self, local: &LocalPeer, events: Reporter) -> MemoryMembership {
        let mut state = self.lock();
        let token = state.next_token;
        state.next_token = state.next_token.wrapping_add(1);
        let member = Member {
            token,
            node_id: local.keypair.node_id(),
            network_id: local.network_id.clone(),
            addresses: in_process_addresses(&local.addresses),
            events,
        };
        for other in &state.members {
            if other.visible_to(&member) {
                other.events.report(member.discovered());
                member.events.report(other.discovered());
            }
        }
        state.members.push(member);
        MemoryMembership {
            hub: self.clone(),
            token,
        }
    }

    fn announce(&self, token: u64) {
        let state = self.lock();
        if let Some(me) = state.members.iter().find(|m| m.token == token) {
            for other in &state.members {
                if me.visible_to(other) {
                    other.events.report(me.discovered());
                }
            }
        }
    }

    fn detach(&self, token: u64) {
        let mut state = self.lock();
        let Some(index) = state.members.iter().position(|m| m.token == token) else {
            return;
        };
        let me = state.members.remove(index);
        for other in &state.members {
            if me.visible_to(other) {
                other.events.report(DiscoveryEvent::Goodbye {
                    node_id: me.node_id,
                });
            }
        }
    }
}

/// The addresses a node bound, as reported in-process: wildcards become loopback.
fn in_process_addresses(bound: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for addr in bound {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(ip, addr.port());
        if addr.port() != 0 && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// A node's place on a hub; leaving it (stop or drop) says goodbye.
#[derive(Debug)]
pub(crate) struct MemoryMembership {
    hub: MemoryHub,
    token: u64,
}

impl MemoryMembership {
    /// Reports this node to the others again.
    pub(crate) fn announce_now(&self) {
        self.hub.announce(self.token);
    }
}

impl Drop for MemoryMembership {
    fn drop(&mut self) {
        self.hub.detach(self.token);
    }
}
