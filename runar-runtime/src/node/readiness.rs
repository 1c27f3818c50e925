//! Readiness and diagnosis: waiting until an action or enough peers are there, and saying why
//! a path is not found (a likely typo, how many peers are connected, which were refused and why).
//!
//! Waits are woken by the registry's change notification (`Registry::changes`), which is bumped
//! whenever an action instance or a peer comes or goes: nothing polls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{BroadcastMode, Node, PublishOptions};
use crate::error::{Code, Error, Result};
use crate::identity::NodeId;
use crate::lock::lock;
use crate::network::RefusalReason;
use crate::routing::split_network;
use crate::value::Value;

/// The payload of `$registry/peer/{id-or-address}/refused` events: a connection to or from a
/// peer was refused during its handshake.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PeerRefusedEvent {
    /// The peer's node id, when its certificate was verified (empty otherwise).
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The peer's address.
    #[prost(string, tag = "2")]
    pub address: String,
    /// Why ([`RefusalReason`]).
    #[prost(enumeration = "RefusalReason", tag = "3")]
    pub reason: i32,
    /// The details, in words.
    #[prost(string, tag = "4")]
    pub detail: String,
}

/// The peers whose handshakes were refused, by address (the latest reason each), and the
/// state of the rate-limited log of refusals.
#[derive(Default)]
pub(crate) struct Refusals {
    by_address: FxHashMap<SocketAddr, RefusalReason>,
    /// Per reason: when a refusal was last logged, and how many were not logged since.
    logged: FxHashMap<RefusalReason, (Instant, u64)>,
}

impl Node {
    /// Waits until an action matching `path` can be called: served by this node or by a
    /// connected peer, in the default network or the one named by a `network:` prefix.
    ///
    /// Fails with `DeadlineExceeded` (saying what the node knows) when `timeout` passes first,
    /// and with `InvalidArgument` for a malformed path.
    ///
    /// ```no_run
    /// # async fn f(node: runar_runtime::Node) -> runar_runtime::Result<()> {
    /// use std::time::Duration;
    /// node.wait_for_action("math/add", Duration::from_secs(5)).await?;
    /// let sum: f64 = node.request("math/add", 1.0f64).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_action(&self, path: impl AsRef<str>, timeout: Duration) -> Result<()> {
        self.wait_routable(path.as_ref(), Instant::now() + timeout)
            .await
    }

    /// Waits until at least `count` peers are connected (and what they offer is registered).
    /// Fails with `DeadlineExceeded` when `timeout` passes first.
    pub async fn wait_for_peers(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut changes = self.inner.registry.changes();
        loop {
            let connected = self.peers().len();
            if connected >= count {
                return Ok(());
            }
            self.check_not_stopped()?;
            match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::unavailable("the node has stopped")),
                Err(_) => {
                    return Err(Error::deadline_exceeded(format!(
                        "{connected} of {count} peers connected after {timeout:?} {}",
                        self.network_summary()
                    )));
                }
            }
        }
    }

    /// Waits until `path` resolves to an instance, or `deadline`.
    pub(crate) async fn wait_routable(&self, path: &str, deadline: Instant) -> Result<()> {
        let started = Instant::now();
        let mut changes = self.inner.registry.changes();
        loop {
            match self.inner.registry.resolve_action(
                &self.inner.network,
                path,
                self.inner.config.path_limits(),
            ) {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(e),
            }
            self.check_not_stopped()?;
            match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::unavailable("the node has stopped")),
                Err(_) => {
                    let waited = started.elapsed();
                    let why = self.not_found(path);
                    return Err(Error::deadline_exceeded(format!(
                        "waited {waited:.1?}: {}",
                        why.message()
                    )));
                }
            }
        }
    }

    /// `NotFound` for `path`, saying what the node knows: the network, the closest known
    /// action when one is near, the peers connected and the ones refused (and why).
    pub(crate) fn not_found(&self, path: &str) -> Error {
        let (network, bare) = match split_network(path) {
            Ok((network, bare)) => (network.unwrap_or(&self.inner.network), bare),
            Err(e) => return e.into(),
        };
        let mut message = format!("no action `{bare}` in network `{network}`");
        if let Some(close) = self.inner.registry.closest_action(network, bare) {
            message.push_str(&format!("; did you mean `{close}`?"));
        }
        message.push(' ');
        message.push_str(&self.network_summary());
        Error::not_found(message)
    }

    /// "(1 peer connected, 2 refused: network key mismatch)", or why there are no peers.
    fn network_summary(&self) -> String {
        if self.inner.config.network.is_none() {
            return "(a local-only node: no network configured)".to_owned();
        }
        if self.mesh().is_none() {
            return "(the node is not started: no peers yet)".to_owned();
        }
        let connected = self.peers().len();
        let plural = if connected == 1 { "" } else { "s" };
        let mut summary = format!("({connected} peer{plural} connected");
        let mut reasons: BTreeMap<RefusalReason, usize> = BTreeMap::new();
        for reason in lock(&self.inner.refusals).by_address.values() {
            let n = reasons.entry(*reason).or_default();
            *n = n.saturating_add(1);
        }
        let refused: usize = reasons.values().sum();
        if refused > 0 {
            summary.push_str(&format!(", {refused} refused: "));
            let parts: Vec<String> = if reasons.len() == 1 {
                reasons.keys().map(|r| r.to_string()).collect()
            } else {
                reasons.iter().map(|(r, n)| format!("{n} {r}")).collect()
            };
            summary.push_str(&parts.join(", "));
        }
        summary.push(')');
        summary
    }

    /// The peers whose handshakes were refused, with the latest reason for each address. An
    /// address is forgotten once a connection with it is admitted.
    pub fn refused_peers(&self) -> Vec<(SocketAddr, RefusalReason)> {
        let mut refused: Vec<_> = lock(&self.inner.refusals)
            .by_address
            .iter()
            .map(|(a, r)| (*a, *r))
            .collect();
        refused.sort();
        refused
    }

    /// Records a refused handshake with `address`: counted (per address, latest reason), logged
    /// (at most once per `refusal_log_interval` and reason, with the number not logged), and
    /// published as `$registry/peer/{id-or-address}/refused`.
    pub(crate) async fn peer_refused(
        &self,
        address: SocketAddr,
        peer: Option<NodeId>,
        reason: RefusalReason,
        detail: &str,
    ) {
        let Some(network) = self.inner.config.network.as_ref() else {
            return;
        };
        let now = Instant::now();
        let log = {
            let mut refusals = lock(&self.inner.refusals);
            let limit = network.max_connections.max(1);
            if !refusals.by_address.contains_key(&address) && refusals.by_address.len() >= limit {
                // Full: forget one (any) address rather than grow without bound.
                if let Some(old) = refusals.by_address.keys().next().copied() {
                    refusals.by_address.remove(&old);
                }
            }
            refusals.by_address.insert(address, reason);
            let interval = network.refusal_log_interval;
            let entry = refusals.logged.entry(reason).or_insert((now, 0));
            if entry.1 == 0 || now.duration_since(entry.0) >= interval {
                let suppressed = std::mem::replace(entry, (now, 1)).1.saturating_sub(1);
                Some(suppressed)
            } else {
                entry.1 = entry.1.saturating_add(1);
                None
            }
        };
        if let Some(suppressed) = log {
            let peer_id = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(
                node = %self.name(),
                %address,
                peer = %peer_id,
                %reason,
                detail,
                suppressed,
                "peer refused: {reason}"
            );
        }
        let segment = match peer {
            Some(id) => id.to_string(),
            None => address
                .to_string()
                .replace(':', "_")
                .replace(['[', ']'], ""),
        };
        let event = PeerRefusedEvent {
            node_id: peer.map(|p| p.to_string()).unwrap_or_default(),
            address: address.to_string(),
            reason: reason as i32,
            detail: detail.to_owned(),
        };
        let topic = format!("$registry/peer/{segment}/refused");
        let options = PublishOptions::default().with_broadcast(BroadcastMode::LocalOnly);
        if let Err(e) = self.publish_value(&topic, Value::new(event), options).await {
            tracing::debug!(%topic, error = %e, "registry event not published");
        }
    }

    /// Forgets a refusal of `address` once a connection with it is admitted.
    pub(crate) fn peer_admitted(&self, address: SocketAddr) {
        lock(&self.inner.refusals).by_address.remove(&address);
    }
}
