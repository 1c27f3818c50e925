//! What the node counts about its events: [`NodeStats`] and [`SubscriptionStats`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Node, SubscriptionId};
use crate::network::PeerEventCounters;
use crate::node::registry::Sink;

/// Counters of a node's events since it was created, from [`Node::stats`].
///
/// Deliveries are counted per subscription: an event that reaches three subscriptions (local,
/// or named in the message to a peer) counts three. Every delivery offered ends up delivered,
/// dropped, or still queued (or discarded with its subscription, on unsubscribe or stop).
///
/// ```
/// use runar_runtime::{Node, NodeConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> runar_runtime::Result<()> {
/// let node = Node::new(NodeConfig::new("node-a", "demo")).await?;
/// node.start().await?;
/// node.publish("nobody/listens", 1.0f64).await?;
/// let stats = node.stats();
/// assert_eq!(stats.events_published, 1);
/// assert_eq!(stats.events_dropped, 0);
/// # node.stop().await
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Events published on this node (`publish` calls with a valid topic, and the node's own
    /// `$registry` events).
    pub events_published: u64,
    /// Events that arrived from peers, accepted or not.
    pub events_received: u64,
    /// Deliveries handed to a local subscription's handler, plus deliveries written to a
    /// peer's event stream.
    pub events_delivered: u64,
    /// Deliveries lost: a local subscription's queue or a peer's queue was full (after the
    /// publisher's wait, if it asked for one), the peer was gone, or a write to the peer
    /// failed. Each loss is also logged (rate-limited).
    pub events_dropped: u64,
    /// What peers sent that was refused: an event with an invalid topic or one in a local-only
    /// namespace (`$registry/…`) counts once; each subscription id an event named that is not
    /// one of this node's subscriptions for that network and topic (or that it named twice)
    /// counts once.
    pub events_rejected: u64,
    /// Peers disconnected because their event stream made no progress for
    /// [`NetworkConfig::slow_consumer_timeout`](crate::NetworkConfig).
    pub slow_consumers: u64,
    /// Peer reports from discovery dropped because the bounded discovery queue was full
    /// ([`NetworkConfig::discovery_queue_capacity`](crate::NetworkConfig)): a flood of
    /// announcements, or a node too busy to keep up with them. Counted while the node runs.
    pub discovery_reports_dropped: u64,
}

/// What became of the events offered to one local subscription, from
/// [`Node::subscription_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Events handed to the handler.
    pub delivered: u64,
    /// Events dropped because the subscription's queue was full.
    pub dropped: u64,
    /// Events waiting in the queue now.
    pub queued: usize,
}

/// The node's own event counters; the network's are in [`PeerEventCounters`].
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Deliveries to local handlers.
    pub(crate) delivered: AtomicU64,
    /// Deliveries dropped at a full local or peer queue, or for a peer that was gone.
    pub(crate) dropped: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Bytes of peers' events waiting in local subscription queues
    /// ([`NodeConfig::max_queued_event_bytes`](crate::NodeConfig)).
    pub(crate) queued_event_bytes: Arc<std::sync::atomic::AtomicUsize>,
    /// Shared with the mesh's event writers.
    pub(crate) peers: Arc<PeerEventCounters>,
}

/// Adds `n` to a counter.
pub(crate) fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Node {
    /// The node's event counters: published, received, delivered, dropped, rejected, and
    /// slow consumers disconnected; and the discovery reports dropped.
    pub fn stats(&self) -> NodeStats {
        let c = &self.inner.counters;
        NodeStats {
            events_published: get(&c.published),
            events_received: get(&c.received),
            events_delivered: get(&c.delivered).saturating_add(get(&c.peers.written)),
            events_dropped: get(&c.dropped).saturating_add(get(&c.peers.dropped)),
            events_rejected: get(&c.rejected),
            slow_consumers: get(&c.peers.slow_consumers),
            discovery_reports_dropped: self
                .meshes()
                .iter()
                .map(|mesh| mesh.discovery_reports_dropped())
                .sum(),
        }
    }

    /// What became of the events offered to the local subscription `id`; `None` when there is
    /// no such subscription (any more).
    pub fn subscription_stats(&self, id: impl Into<SubscriptionId>) -> Option<SubscriptionStats> {
        let sub = self.inner.registry.subscription(id.into())?;
        let Sink::Local(local) = &sub.sink else {
            return None;
        };
        Some(SubscriptionStats {
            delivered: get(&local.counters.delivered),
            dropped: get(&local.counters.dropped),
            queued: local.queue.queued(),
        })
    }
}

impl Node {
    /// The counters of every local action in `network` (requests, errors by code, in flight,
    /// latency percentiles), as `$runar/stats` reports them.
    pub(crate) fn action_stats_in(&self, network: &str) -> Vec<crate::wire::ActionStats> {
        self.inner
            .registry
            .local_action_counters(network)
            .into_iter()
            .filter(|(path, _)| !path.starts_with('$'))
            .map(|(path, counters)| {
                let errors = crate::error::Code::ALL
                    .iter()
                    .zip(&counters.errors)
                    .map(|(code, n)| (code.as_str().to_owned(), get(n)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                let buckets: Vec<u64> = counters.latency.iter().map(get).collect();
                crate::wire::ActionStats {
                    path: path.to_string(),
                    requests: get(&counters.started),
                    errors,
                    in_flight: get(&counters.started).saturating_sub(get(&counters.finished)),
                    p50_us: percentile_us(&buckets, 50),
                    p90_us: percentile_us(&buckets, 90),
                    p99_us: percentile_us(&buckets, 99),
                    max_us: percentile_us(&buckets, 100),
                }
            })
            .collect()
    }
}

/// The upper bound, in microseconds (rounded up), of the latency bucket holding the `pct`th
/// percentile of calls; 0 when there were none. Bucket `i` holds calls under `2^i` ns.
fn percentile_us(buckets: &[u64], pct: u64) -> u64 {
    let total: u64 = buckets.iter().fold(0u64, |a, b| a.saturating_add(*b));
    if total == 0 {
        return 0;
    }
    // The rank of the percentile call, 1-based: ceil(total * pct / 100).
    let rank = total.saturating_mul(pct).div_ceil(100).max(1);
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        seen = seen.saturating_add(*n);
        if seen >= rank {
            let nanos = 1u64
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(u64::MAX);
            return nanos.div_ceil(1000);
        }
    }
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::percentile_us;

    #[test]
    fn percentiles_are_bucket_bounds() {
        assert_eq!(percentile_us(&[0; 41], 50), 0);
        let mut buckets = [0u64; 41];
        buckets[7] = 98; // < 128 ns
        buckets[20] = 2; // < ~1 ms
        assert_eq!(percentile_us(&buckets, 50), 1);
        assert_eq!(percentile_us(&buckets, 98), 1);
        assert_eq!(percentile_us(&buckets, 99), 1049);
        assert_eq!(percentile_us(&buckets, 100), 1049);
    }
}
