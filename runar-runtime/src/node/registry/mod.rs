//! The registry: which handler serves an action path and which subscriptions an event reaches.
//!
//! Per network, literal action paths sit in a hash map (one lookup per request) and patterned
//! ones (`items/{id}`) in a [`PathTrie`]; subscriptions sit in a trie. An action path may have
//! several instances (this node's and, later, remote peers'): a request goes to the local one
//! when there is one, otherwise round-robin over the others with a counter per action path.

mod queue;

use bytes::Bytes;
pub(crate) use queue::{QueueClosed, QueueFull, QueueReceiver, QueueSender, subscription_queue};
use rustc_hash::FxHashMap as HashMap;
use rustc_hash::FxHashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::{lock, read, write};
use crate::metadata::Metadata;
use crate::network::{EventSink, MorePayloads, PeerLink, SubscriptionIds};
use crate::node::service::{ActionHandler, CallKind, Caller, StreamHandler};
use crate::routing::{PathLimits, PathParams, PathTrie, TopicPath, split_network, with_segments};
use crate::value::scope::Scope;
use crate::value::types::MessageTypes;
use crate::value::{EventValue, Value};

/// Identifies a subscription, for [`Node::unsubscribe`](crate::Node::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub(crate) u64);

impl From<&SubscriptionId> for SubscriptionId {
    fn from(id: &SubscriptionId) -> Self {
        *id
    }
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// Where an action instance or a subscription lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// On this node.
    Local,
    /// On a peer, learned over one connection.
    Remote(PeerLink),
}

/// Where a subscription's events go.
pub(crate) enum Sink {
    /// A local handler's queue.
    Local(LocalSink),
    /// A peer's subscription `remote_id`: an opaque handle the network supplies, which queues
    /// events for the peer.
    Remote {
        sink: Arc<dyn EventSink>,
        remote_id: u64,
    },
}

/// A local subscription's bounded queue, and what became of the events offered to it.
pub(crate) struct LocalSink {
    pub(crate) queue: QueueSender,
    pub(crate) counters: Arc<SubscriptionCounters>,
}

/// What became of the events offered to one local subscription.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionCounters {
    /// Events handed to the handler.
    pub(crate) delivered: AtomicU64,
    /// Events dropped because the queue was full (after the publisher's wait, if any).
    pub(crate) dropped: AtomicU64,
    /// Events from peers have waited for room since the queue was last empty: the handler's
    /// task clears [`peer_waits`](Self::peer_waits) and [`stalled`](Self::stalled) once it
    /// finds the queue empty.
    pub(crate) peers_waited: AtomicBool,
    /// How long events from peers have held them back waiting for room in the queue, since it
    /// was last empty; at [`NodeConfig::peer_event_wait`](crate::NodeConfig) the subscription
    /// is stalled.
    pub(crate) peer_waits: std::sync::Mutex<PeerWaits>,
    /// The subscription used up its [`peer_waits`](Self::peer_waits): until its queue is empty
    /// again, events from peers that find the queue full are dropped at once instead of
    /// holding the peer back.
    pub(crate) stalled: std::sync::atomic::AtomicBool,
}

/// The time events from peers have spent waiting for room in one subscription's queue, kept
/// as a debt that half of all the time passing repays: a subscription that keeps its peers
/// waiting less than half the time (its handler is at least half as quick as the node's
/// reader) never runs it up to [`NodeConfig::peer_event_wait`](crate::NodeConfig), one that
/// keeps them waiting all the time does after twice that.
#[derive(Debug, Default)]
pub(crate) struct PeerWaits {
    debt: std::time::Duration,
    /// When the debt was last repaid.
    at: Option<tokio::time::Instant>,
}

impl PeerWaits {
    /// The debt as of `now`, after what the time since it was last repaid repays.
    pub(crate) fn debt(&mut self, now: tokio::time::Instant) -> std::time::Duration {
        if let Some(at) = self.at {
            self.debt = self
                .debt
                .saturating_sub(now.saturating_duration_since(at) / 2);
        }
        self.at = Some(now);
        self.debt
    }

    /// Adds a wait that ended at `now`: the debt afterwards.
    pub(crate) fn charge(
        &mut self,
        waited: std::time::Duration,
        now: tokio::time::Instant,
    ) -> std::time::Duration {
        self.debt = self.debt(now).saturating_add(waited);
        self.debt
    }

    /// Forgets every wait: the queue was found empty.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Latency buckets of [`ActionCounters`]: bucket `i` counts calls that took less than `2^i`
/// nanoseconds (the last one, everything slower: about 18 minutes and more).
pub(crate) const LATENCY_BUCKETS: usize = 41;

/// What the calls of one local action came to (requests, errors by code, in flight, a latency
/// histogram), from this node and from peers. Plain relaxed atomics: a call costs two
/// uncontended increments; one call in `2^k` is also timed (two clock reads, which cost more
/// than everything else together here), as
/// [`NodeConfig::latency_sample_every`](crate::NodeConfig::latency_sample_every) says.
#[derive(Debug)]
pub(crate) struct ActionCounters {
    pub(crate) started: AtomicU64,
    pub(crate) finished: AtomicU64,
    /// By [`Code`](crate::Code), in `Code::ALL` order.
    pub(crate) errors: [AtomicU64; crate::error::Code::ALL.len()],
    /// The timed calls, by latency bucket.
    pub(crate) latency: [AtomicU64; LATENCY_BUCKETS],
    /// A call whose start number has none of these bits set is timed; `None`: none is.
    sample_mask: Option<u64>,
}

impl ActionCounters {
    /// Counters that time one call in `sample_every` (rounded up to a power of two; 0 times
    /// none).
    pub(crate) fn new(sample_every: u32) -> Self {
        ActionCounters {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            sample_mask: (sample_every > 0).then(|| {
                u64::from(sample_every.checked_next_power_of_two().unwrap_or(1 << 31)) - 1
            }),
        }
    }

    /// A call starts: counted, and finished by [`CallTimer::finish`] (or its drop, which
    /// counts the call as `Cancelled`).
    #[inline]
    pub(crate) fn start(&self) -> CallTimer<'_> {
        let number = self.started.fetch_add(1, Ordering::Relaxed);
        let timed = self.sample_mask.is_some_and(|mask| number & mask == 0);
        CallTimer {
            counters: self,
            start: timed.then(Instant::now),
        }
    }

    /// A call that started ended, failing with `error` if it did; `start` when it was timed.
    #[inline]
    fn finished(&self, start: Option<Instant>, error: Option<crate::error::Code>) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = error {
            let index = crate::error::Code::ALL.iter().position(|c| *c == code);
            if let Some(counter) = index.and_then(|i| self.errors.get(i)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(start) = start {
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let bucket = (u64::BITS - nanos.leading_zeros()) as usize;
            if let Some(counter) = self.latency.get(bucket.min(LATENCY_BUCKETS - 1)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One call of a local action, from [`ActionCounters::start`].
pub(crate) struct CallTimer<'a> {
    counters: &'a ActionCounters,
    start: Option<Instant>,
}

impl CallTimer<'_> {
    /// The call ended, failing with `error` if it did.
    #[inline]
    pub(crate) fn finish(self, error: Option<crate::error::Code>) {
        self.counters.finished(self.start, error);
        // Counted: the drop below is for calls that never get here.
        std::mem::forget(self);
    }
}

impl Drop for CallTimer<'_> {
    /// The call's future was dropped (the caller gave up): counted as cancelled.
    fn drop(&mut self) {
        self.counters
            .finished(self.start, Some(crate::error::Code::Cancelled));
    }
}

/// One instance of an action.
#[derive(Clone)]
pub(crate) struct ActionInstance {
    pub(crate) origin: Origin,
    pub(crate) handler: ActionHandler,
    /// Until when the balancer avoids this instance (it let a call time out).
    pub(crate) health: InstanceHealth,
    /// The action's message types, when its service has a schema.
    pub(crate) types: Option<Arc<MessageTypes>>,
    /// How many messages each side sends (`Unary` for a remote instance, whose kind its peer
    /// checks).
    pub(crate) kind: CallKind,
    /// Serves a streaming call: a local streaming action's handler, or a remote instance's
    /// stream to its peer. `None` for a local unary action.
    pub(crate) stream: Option<StreamHandler>,
    /// What the calls of a local instance came to (`None` for a remote one: the peer counts).
    pub(crate) stats: Option<Arc<ActionCounters>>,
}

/// Whether an instance recently let a call time out; shared by the copies of one instance.
#[derive(Clone, Default)]
pub(crate) struct InstanceHealth(Arc<std::sync::Mutex<Option<Instant>>>);

impl InstanceHealth {
    /// Avoids the instance for `period` while another instance of the action exists.
    pub(crate) fn timed_out(&self, period: Duration) {
        *lock(&self.0) = Instant::now().checked_add(period);
    }

    /// True while the instance is avoided.
    fn is_suspect(&self, now: Instant) -> bool {
        lock(&self.0).is_some_and(|until| now < until)
    }
}

/// Every instance of one action path.
pub(crate) struct ActionSlot {
    pub(crate) pattern: TopicPath,
    /// The registered path without network, shared with every request's context.
    pub(crate) path: Arc<str>,
    local: Option<ActionInstance>,
    remote: Vec<ActionInstance>,
    /// Round-robin position over `remote`, kept when the slot is rebuilt.
    next: Arc<AtomicUsize>,
}

impl ActionSlot {
    /// The instance that should serve the next request: local first, else round-robin over
    /// the remote ones, skipping those that recently let a call time out while another one has
    /// not (when all have, round-robin over all: they are retried). Inlined: a local instance
    /// is one branch.
    #[inline]
    pub(crate) fn pick(&self) -> Option<&ActionInstance> {
        match &self.local {
            Some(local) => Some(local),
            None => self.pick_remote(),
        }
    }

    /// [`pick`](Self::pick) for a slot without a local instance.
    fn pick_remote(&self) -> Option<&ActionInstance> {
        let n = self.remote.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if n > 1 {
            let now = Instant::now();
            let healthy = (0..n)
                .filter_map(|i| self.remote.get((start + i) % n))
                .find(|instance| !instance.health.is_suspect(now));
            if healthy.is_some() {
                return healthy;
            }
        }
        self.remote.get(start)
    }

    /// This node's instance, if it has one.
    pub(crate) fn local(&self) -> Option<&ActionInstance> {
        self.local.as_ref()
    }

    fn is_empty(&self) -> bool {
        self.local.is_none() && self.remote.is_empty()
    }

    /// A copy of the slot with `keep` applied to its instances.
    fn filtered(&self, keep: impl Fn(&ActionInstance) -> bool) -> ActionSlot {
        ActionSlot {
            pattern: self.pattern.clone(),
            path: self.path.clone(),
            local: self.local.clone().filter(&keep),
            remote: self.remote.iter().filter(|i| keep(i)).cloned().collect(),
            next: self.next.clone(),
        }
    }
}

/// An event on its way to a subscription's queue.
pub(crate) struct Event {
    pub(crate) topic: Arc<str>,
    pub(crate) value: EventValue,
    pub(crate) publisher: Caller,
    pub(crate) retained: bool,
    pub(crate) metadata: Metadata,
    /// For an event that arrived as bytes: its share of the node's bound on queued event
    /// bytes, given back when the event is handled or dropped.
    pub(crate) held: Option<Arc<HeldBytes>>,
}

/// Consecutive events of one peer's frame for one local subscription, queued as one: their
/// topic, publisher and metadata are shared, and each payload is read from the frame only as
/// the subscription's task takes the event (its queue holds the run as one entry). A frame of a thousand events
/// then costs its reader one push per subscription, and touches no reference count per event
/// that another thread touches too.
pub(crate) struct EventRun {
    pub(crate) topic: Arc<str>,
    pub(crate) publisher: Caller,
    pub(crate) retained: bool,
    pub(crate) metadata: Metadata,
    /// The frame's share of the node's bound on queued event bytes, held (given back when
    /// dropped) until the run's last event has been handled or the run is dropped.
    pub(crate) _held: Option<Arc<HeldBytes>>,
    /// The node's seal scope, which each event's value opens labelled fields within.
    pub(crate) scope: Option<Arc<dyn Scope>>,
    /// The frame's first payload, until taken.
    pub(crate) first: Option<Bytes>,
    /// The frame's further payloads.
    pub(crate) more: MorePayloads,
    /// Events not yet taken: the run may stop short of the frame's end.
    pub(crate) left: usize,
}

impl EventRun {
    /// The run's next event (its `held` stays with the run). `None` once `left` events were
    /// taken, or should the frame end before (it was checked when decoded).
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        if self.left == 0 {
            return None;
        }
        let payload = match self.first.take() {
            Some(payload) => payload,
            None => self.more.next()?,
        };
        self.left -= 1;
        Some(Event {
            topic: self.topic.clone(),
            value: EventValue::Owned(Value::from_encoded(payload).within(self.scope.as_ref())),
            publisher: self.publisher.clone(),
            retained: self.retained,
            metadata: self.metadata.clone(),
            held: None,
        })
    }
}

/// Bytes counted against a node-wide bound while something holds them; released on drop.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
}

impl HeldBytes {
    /// Counts `bytes` against `counter` when that keeps it within `max`.
    pub(crate) fn try_hold(
        counter: &Arc<std::sync::atomic::AtomicUsize>,
        bytes: usize,
        max: usize,
    ) -> Option<HeldBytes> {
        use std::sync::atomic::Ordering;
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= max)
            })
            .ok()?;
        Some(HeldBytes {
            counter: counter.clone(),
            bytes,
        })
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A subscription: where matching events go.
pub(crate) struct Subscription {
    pub(crate) id: SubscriptionId,
    pub(crate) pattern: TopicPath,
    /// The owning service's path; `None` for a node-level subscription, which is a group of its
    /// own for one-per-service delivery.
    pub(crate) group: Option<Arc<str>>,
    pub(crate) origin: Origin,
    pub(crate) sink: Sink,
    /// The subscriber asked for retained events.
    pub(crate) include_past: bool,
    /// Cleared by unsubscribe, so nothing is delivered after it returns.
    pub(crate) active: Arc<AtomicBool>,
}

#[derive(Default)]
struct NetworkTable {
    exact: HashMap<Box<str>, Arc<ActionSlot>>,
    patterned: PathTrie<Arc<ActionSlot>>,
    subscriptions: PathTrie<Arc<Subscription>>,
    routes: Arc<RouteCaches>,
}

/// A network's route caches. Shared apart from its table: the node keeps its own network's
/// (`Registry::routes`) and finds a route there without taking the registry's lock too (two
/// atomic read-modify-writes fewer per event; the four left, this lock's and the route's two
/// reference counts, are 4.8% of a two-thread events run).
#[derive(Default)]
pub(crate) struct RouteCaches {
    /// The subscriptions recently published topics matched.
    published: RwLock<RouteCache<Subscriptions>>,
    /// The local subscriptions recently received events resolved to, by topic: the one id
    /// the event named, and the subscriptions it resolved to (none, or that one).
    inbound: RwLock<RouteCache<(u64, Subscriptions)>>,
}

impl RouteCaches {
    /// What [`Registry::matching_subscriptions`] found for `topic`, if it is cached: the
    /// topic was valid then (only a valid topic is looked up, and validity does not change),
    /// so a publisher may skip checking it again.
    pub(crate) fn published(&self, topic: &str) -> Option<(Arc<str>, Subscriptions)> {
        read(&self.published).get(topic.as_bytes())
    }

    /// [`published`](Self::published), lent to `f` under the cache's lock rather than
    /// cloned (`None` when `topic` is not cached): a publisher in a tight loop then touches no
    /// reference count of the route (each is an atomic operation, which dominates a publish's
    /// time). `f` must not reach the route caches.
    pub(crate) fn with_published<R>(
        &self,
        topic: &str,
        f: impl FnOnce(Option<(&Arc<str>, &Subscriptions)>) -> R,
    ) -> R {
        let cache = read(&self.published);
        let cached = cache.routes.get_key_value(topic.as_bytes());
        f(cached.map(|(TopicKey(topic), targets)| (topic, targets)))
    }

    /// What [`Registry::inbound_subscriptions`] found for an event on `topic` (its bytes, as
    /// received) naming the same one id, if it is cached (the topic was valid then, and is),
    /// with the topic as the cache shares it.
    pub(crate) fn inbound(
        &self,
        topic: &[u8],
        ids: &SubscriptionIds,
    ) -> Option<(Arc<str>, Subscriptions)> {
        let SubscriptionIds::One(id) = ids else {
            return None;
        };
        let (topic, (cached_id, found)) = read(&self.inbound).get(topic)?;
        (cached_id == *id).then_some((topic, found))
    }

    /// Empties both: a subscription came or went.
    fn forget(&self) {
        write(&self.published).routes.clear();
        write(&self.inbound).routes.clear();
    }
}

/// Subscriptions found for a topic, shared by a route cache and the deliveries.
pub(crate) type Subscriptions = Arc<[Arc<Subscription>]>;

/// How many topics each of a network's route caches holds before it is emptied and filled
/// again: a publisher or a peer cycling through more topics walks the subscription trie for
/// each, as without the cache; memory stays bounded whatever a peer sends.
const ROUTE_CACHE_TOPICS: usize = 1024;

/// Routes found for recent topics, so that a topic seen again skips the subscription trie
/// (about 1,300 instructions of an event's 11,400 from publish to handler, for a one-segment
/// topic) or the lookups of the ids a peer named. Filled under the network table's read lock
/// and emptied under its write lock whenever a subscription of the network comes or goes,
/// so an entry is never older than the subscriptions it was found in. Read-locked to look up:
/// publishers and peers' readers on several threads find their routes side by side.
struct RouteCache<T> {
    routes: HashMap<TopicKey, T>,
}

/// A route cache's key: a topic, looked up by its bytes, so that a topic received from a peer
/// is found as it lies in its frame (its UTF-8 was checked when it was decoded).
#[derive(PartialEq, Eq)]
struct TopicKey(Arc<str>);

impl std::hash::Hash for TopicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, for `Borrow<[u8]>`.
        self.0.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for TopicKey {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl<T> Default for RouteCache<T> {
    fn default() -> Self {
        RouteCache {
            routes: HashMap::default(),
        }
    }
}

impl<T: Clone> RouteCache<T> {
    /// The topic as the cache holds it and its route, if cached.
    fn get(&self, topic: &[u8]) -> Option<(Arc<str>, T)> {
        self.routes
            .get_key_value(topic)
            .map(|(TopicKey(topic), route)| (topic.clone(), route.clone()))
    }

    /// Remembers `route` for `topic`, emptying the cache first when it is full.
    fn insert(&mut self, topic: Arc<str>, route: T) {
        if self.routes.len() >= ROUTE_CACHE_TOPICS {
            self.routes.clear();
        }
        self.routes.insert(TopicKey(topic), route);
    }
}

/// Empties `table`'s route caches: a subscription came or went.
fn forget_routes(table: &mut NetworkTable) {
    table.routes.forget();
}

impl NetworkTable {
    /// The slot registered under exactly `pattern`.
    fn slot(&self, pattern: &TopicPath) -> Option<Arc<ActionSlot>> {
        if pattern.is_pattern() {
            self.patterned.get(pattern).next().cloned()
        } else {
            self.exact.get(pattern.path()).cloned()
        }
    }
}

/// The result of resolving a request path.
pub(crate) struct Resolved {
    pub(crate) slot: Arc<ActionSlot>,
    pub(crate) params: PathParams,
    /// The concrete path requested, without network.
    pub(crate) path: Arc<str>,
    /// The network the path's `network:` prefix named; `None` without one (the default
    /// network given was used).
    pub(crate) named_network: Option<Arc<str>>,
}

/// Every subscription by id, with its network.
type SubscriptionIndex = HashMap<SubscriptionId, (Arc<str>, Arc<Subscription>)>;

/// The Levenshtein distance between `a` and `b`, in characters (two rows, no recursion).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; previous.len()];
    for (i, ca) in a.chars().enumerate() {
        if let Some(first) = current.first_mut() {
            *first = i.saturating_add(1);
        }
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .map_or(usize::MAX, |d| d.saturating_add(usize::from(ca != *cb)));
            let delete = previous
                .get(j.saturating_add(1))
                .map_or(usize::MAX, |d| d.saturating_add(1));
            let insert = current.get(j).map_or(usize::MAX, |d| d.saturating_add(1));
            if let Some(cell) = current.get_mut(j.saturating_add(1)) {
                *cell = substitute.min(delete).min(insert);
            }
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous.last().copied().unwrap_or(0)
}

/// The node's routing tables, one set per network.
#[derive(Default)]
pub(crate) struct Registry {
    networks: RwLock<HashMap<Arc<str>, NetworkTable>>,
    /// Bumped whenever an action instance comes or goes (and when peers change), so that
    /// readiness waits ([`Registry::changes`]) wake on a change instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Every subscription by id, with its network.
    subscriptions: RwLock<SubscriptionIndex>,
    /// Where `OnePerService` delivery stands for each subscribing group, while it has
    /// subscriptions (groups are peer-chosen names: an entry goes with its last member).
    rotation: std::sync::Mutex<HashMap<Arc<str>, Rotation>>,
}

/// A subscribing group's place in `OnePerService` delivery.
#[derive(Default)]
struct Rotation {
    /// The next pick, before reduction to the group's size.
    next: usize,
    /// Its subscriptions, in any network.
    members: usize,
}

impl Registry {
    /// Adds an instance of the action `pattern` in `network`. A second local instance of the
    /// same path is refused with `AlreadyExists`.
    pub(crate) fn add_action(
        &self,
        network: &str,
        pattern: TopicPath,
        instance: ActionInstance,
    ) -> Result<()> {
        let mut networks = write(&self.networks);
        let table = networks.entry(network.into()).or_default();
        let mut slot = match table.slot(&pattern) {
            Some(slot) => slot.filtered(|_| true),
            None => ActionSlot {
                path: pattern.path().into(),
                pattern: pattern.clone(),
                local: None,
                remote: Vec::new(),
                next: Arc::default(),
            },
        };
        match instance.origin {
            Origin::Local if slot.local.is_some() => {
                return Err(Error::already_exists(format!(
                    "action `{network}:{}` is already registered on this node",
                    pattern.path()
                )));
            }
            Origin::Local => slot.local = Some(instance),
            Origin::Remote(_) => {
                slot.remote.retain(|i| i.origin != instance.origin);
                slot.remote.push(instance);
            }
        }
        Self::put_slot(table, pattern, Some(Arc::new(slot)));
        drop(networks);
        self.notify_changed();
        Ok(())
    }

    /// A receiver that sees every later change of the action tables (see
    /// [`Registry::notify_changed`]). Subscribe before checking, then wait on `changed()`.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes everything waiting for a change (an action or a peer came or went).
    pub(crate) fn notify_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Removes the instances of `pattern` in `network` that come from `origin`.
    pub(crate) fn remove_action(&self, network: &str, pattern: &TopicPath, origin: &Origin) {
        let mut networks = write(&self.networks);
        let Some(table) = networks.get_mut(network) else {
            return;
        };
        let Some(slot) = table.slot(pattern) else {
            return;
        };
        let slot = slot.filtered(|i| i.origin != *origin);
        let slot = (!slot.is_empty()).then(|| Arc::new(slot));
        Self::put_slot(table, pattern.clone(), slot);
        drop(networks);
        self.notify_changed();
    }

    fn put_slot(table: &mut NetworkTable, pattern: TopicPath, slot: Option<Arc<ActionSlot>>) {
        if pattern.is_pattern() {
            table.patterned.remove_where(&pattern, |_| true);
            if let Some(slot) = slot {
                table.patterned.insert(pattern, slot);
            }
        } else {
            match slot {
                Some(slot) => {
                    table.exact.insert(pattern.path().into(), slot);
                }
                None => {
                    table.exact.remove(pattern.path());
                }
            }
        }
    }

    /// The slot serving `path` (with an optional `network:` prefix, else `default_network`),
    /// and the template parameters the path fills in. A path that is not a registered literal
    /// must be valid and within `limits`.
    pub(crate) fn resolve_action(
        &self,
        default_network: &str,
        path: &str,
        limits: PathLimits,
    ) -> Result<Resolved> {
        let (named, bare) = split_network(path)?;
        let network = named.unwrap_or(default_network);
        let networks = read(&self.networks);
        let (key, table) = networks
            .get_key_value(network)
            .map_or((None, None), |(k, t)| (Some(k), Some(t)));
        // The table's own name, shared: no copy for a call that names its network.
        let named_network = named.and(key).cloned();
        if let Some(slot) = table.and_then(|t| t.exact.get(bare)) {
            return Ok(Resolved {
                path: slot.path.clone(),
                slot: slot.clone(),
                params: PathParams::default(),
                named_network,
            });
        }
        // Not a literal action: validate the path, then look for a template that matches.
        let concrete = TopicPath::parse_concrete_within(path, limits)?;
        let segments: Vec<&str> = concrete.path().split('/').collect();
        if let Some((pattern, slot)) = table.and_then(|t| t.patterned.find_best(&segments)) {
            return Ok(Resolved {
                params: pattern.params(&segments).unwrap_or_default(),
                slot: slot.clone(),
                path: concrete.path().into(),
                named_network,
            });
        }
        Err(Error::not_found(format!(
            "no action `{bare}` in network `{network}`"
        )))
    }

    /// The counters of every local action in `network`, by path, sorted.
    pub(crate) fn local_action_counters(
        &self,
        network: &str,
    ) -> Vec<(Arc<str>, Arc<ActionCounters>)> {
        let networks = read(&self.networks);
        let Some(table) = networks.get(network) else {
            return Vec::new();
        };
        let mut counters: Vec<_> = table
            .exact
            .values()
            .chain(table.patterned.iter().map(|(_, slot)| slot))
            .filter_map(|slot| {
                let stats = slot.local.as_ref()?.stats.clone()?;
                Some((slot.path.clone(), stats))
            })
            .collect();
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        counters
    }

    /// How many messages each side of this node's own action `path` (as registered, templates
    /// and all) in `network` sends; `None` when this node has no such action.
    pub(crate) fn local_kind(&self, network: &str, path: &str) -> Option<CallKind> {
        let networks = read(&self.networks);
        let table = networks.get(network)?;
        let slot = match table.exact.get(path) {
            Some(slot) => slot.clone(),
            None => table
                .patterned
                .iter()
                .find(|(p, _)| p.path() == path)?
                .1
                .clone(),
        };
        slot.local().map(|instance| instance.kind)
    }

    /// Every action path registered in `network`.
    pub(crate) fn action_paths(&self, network: &str) -> Vec<String> {
        let networks = read(&self.networks);
        let Some(table) = networks.get(network) else {
            return Vec::new();
        };
        let mut paths: Vec<String> = table
            .exact
            .keys()
            .map(|k| k.to_string())
            .chain(table.patterned.iter().map(|(p, _)| p.path().to_owned()))
            .collect();
        paths.sort();
        paths
    }

    /// The registered action path in `network` closest to `path` (by edit distance), when it
    /// is close enough to be a likely typo: at most a third of the path's length, and 3.
    pub(crate) fn closest_action(&self, network: &str, path: &str) -> Option<String> {
        let len = path.chars().count();
        let limit = (len / 3).clamp(1, 3);
        self.action_paths(network)
            .into_iter()
            // Lengths further apart than the limit cannot be within it: skip the work.
            .filter(|known| known.chars().count().abs_diff(len) <= limit)
            .map(|known| (edit_distance(path, &known), known))
            .filter(|(d, _)| *d <= limit)
            .min()
            .map(|(_, known)| known)
    }

    /// Adds a subscription in `network`.
    pub(crate) fn add_subscription(&self, network: &str, subscription: Arc<Subscription>) {
        if let Some(group) = &subscription.group {
            let mut rotation = lock(&self.rotation);
            let entry = rotation.entry(group.clone()).or_default();
            entry.members = entry.members.saturating_add(1);
        }
        let network: Arc<str> = network.into();
        write(&self.subscriptions).insert(subscription.id, (network.clone(), subscription.clone()));
        let mut networks = write(&self.networks);
        let table = networks.entry(network).or_default();
        table
            .subscriptions
            .insert(subscription.pattern.clone(), subscription);
        forget_routes(table);
    }

    /// Removes subscription `id`; true when it existed.
    pub(crate) fn remove_subscription(&self, id: SubscriptionId) -> bool {
        let Some((network, sub)) = write(&self.subscriptions).remove(&id) else {
            return false;
        };
        sub.active.store(false, Ordering::Release);
        if let Some(group) = &sub.group {
            let mut rotation = lock(&self.rotation);
            if let Some(entry) = rotation.get_mut(group) {
                entry.members = entry.members.saturating_sub(1);
                if entry.members == 0 {
                    rotation.remove(group);
                }
            }
        }
        if let Some(table) = write(&self.networks).get_mut(&network) {
            table
                .subscriptions
                .remove_where(&sub.pattern, |s| s.id == id);
            forget_routes(table);
        }
        true
    }

    /// Subscription `id`, if it exists.
    pub(crate) fn subscription(&self, id: SubscriptionId) -> Option<Arc<Subscription>> {
        read(&self.subscriptions).get(&id).map(|(_, s)| s.clone())
    }

    /// This node's own subscriptions in `network` among `ids`, each once, in the order of
    /// their first appearance (under one lock; what is held grows with the subscriptions
    /// found, not with the ids, of which a peer can name millions).
    pub(crate) fn local_subscriptions_in(
        &self,
        network: &str,
        ids: impl Iterator<Item = u64>,
    ) -> Vec<Arc<Subscription>> {
        /// Up to this many found, a repeat is looked for among them; past it, in a set.
        const SCAN: usize = 8;
        let index = read(&self.subscriptions);
        let mut found: Vec<Arc<Subscription>> = Vec::new();
        let mut seen: FxHashSet<SubscriptionId> = FxHashSet::default();
        let mut last = None;
        for id in ids {
            // A run of one id (what a peer repeating an id sends) is looked up once.
            if last.replace(id) == Some(id) {
                continue;
            }
            let Some((n, sub)) = index.get(&SubscriptionId(id)) else {
                continue;
            };
            if **n != *network || sub.origin != Origin::Local {
                continue;
            }
            let new = if found.len() < SCAN {
                !found.iter().any(|f| f.id == sub.id)
            } else {
                if seen.is_empty() {
                    seen.extend(found.iter().map(|f| f.id));
                }
                seen.insert(sub.id)
            };
            if new {
                found.push(sub.clone());
            }
        }
        found
    }

    /// This node's own subscriptions, with their networks.
    pub(crate) fn local_subscriptions(&self) -> Vec<(Arc<str>, Arc<Subscription>)> {
        let mut subs: Vec<_> = read(&self.subscriptions)
            .values()
            .filter(|(_, s)| s.origin == Origin::Local)
            .cloned()
            .collect();
        subs.sort_by_key(|(_, s)| s.id);
        subs
    }

    /// The subscriptions that came from `origin`, with their networks (for the fuzz targets).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn subscriptions_from(&self, origin: Origin) -> Vec<(Arc<str>, Arc<Subscription>)> {
        read(&self.subscriptions)
            .values()
            .filter(|(_, s)| s.origin == origin)
            .cloned()
            .collect()
    }

    /// Removes every action instance and subscription learned over `link`.
    pub(crate) fn remove_link(&self, link: PeerLink) {
        let origin = Origin::Remote(link);
        let removed: Vec<SubscriptionId> = read(&self.subscriptions)
            .iter()
            .filter(|(_, (_, s))| s.origin == origin)
            .map(|(id, _)| *id)
            .collect();
        for id in removed {
            self.remove_subscription(id);
        }
        let mut networks = write(&self.networks);
        for table in networks.values_mut() {
            let touched: Vec<TopicPath> = table
                .exact
                .values()
                .chain(table.patterned.iter().map(|(_, slot)| slot))
                .filter(|slot| slot.remote.iter().any(|i| i.origin == origin))
                .map(|slot| slot.pattern.clone())
                .collect();
            for pattern in touched {
                if let Some(slot) = table.slot(&pattern) {
                    let slot = slot.filtered(|i| i.origin != origin);
                    let slot = (!slot.is_empty()).then(|| Arc::new(slot));
                    Self::put_slot(table, pattern, slot);
                }
            }
        }
        drop(networks);
        self.notify_changed();
    }

    /// The subscriptions in `network` whose pattern matches the concrete `topic` (a path
    /// without network), and the topic as shared (the cache's copy once it is cached).
    pub(crate) fn matching_subscriptions(
        &self,
        network: &str,
        topic: &str,
    ) -> (Arc<str>, Subscriptions) {
        let networks = read(&self.networks);
        let Some(table) = networks.get(network) else {
            return (topic.into(), Arc::new([]));
        };
        if let Some(cached) = table.routes.published(topic) {
            return cached;
        }
        let mut found = Vec::new();
        with_segments(topic, |segments| {
            (table.subscriptions).find_all(segments, |(_, sub)| found.push(sub.clone()));
        });
        let topic: Arc<str> = topic.into();
        let found: Subscriptions = found.into();
        write(&table.routes.published).insert(topic.clone(), found.clone());
        (topic, found)
    }

    /// The route caches of `network` (its table made if there is none yet): the node keeps
    /// its own network's, to find routes without the registry's lock.
    pub(crate) fn routes(&self, network: &str) -> Arc<RouteCaches> {
        write(&self.networks)
            .entry(network.into())
            .or_default()
            .routes
            .clone()
    }

    /// [`RouteCaches::inbound`] of `network`, if it has a table.
    pub(crate) fn cached_inbound(
        &self,
        network: &str,
        topic: &[u8],
        ids: &SubscriptionIds,
    ) -> Option<(Arc<str>, Subscriptions)> {
        read(&self.networks)
            .get(network)?
            .routes
            .inbound(topic, ids)
    }

    /// This node's own subscriptions in `network` among `ids` that `accept` takes for the
    /// (valid) `topic`, each once ([`local_subscriptions_in`](Self::local_subscriptions_in));
    /// cached by topic when the event named one id.
    pub(crate) fn inbound_subscriptions(
        &self,
        network: &str,
        topic: &Arc<str>,
        ids: &SubscriptionIds,
        accept: impl Fn(&Subscription) -> bool,
    ) -> Subscriptions {
        let SubscriptionIds::One(id) = ids else {
            // Not cached, and looked up without the table's lock: a peer may name millions of
            // ids, and a writer waiting for the lock would hold up every request's routing.
            let mut found = self.local_subscriptions_in(network, ids.iter());
            found.retain(|sub| accept(sub));
            return found.into();
        };
        // Found and cached under the table's read lock: a subscription that goes meanwhile
        // empties the cache after this.
        let networks = read(&self.networks);
        let mut found = self.local_subscriptions_in(network, std::iter::once(*id));
        found.retain(|sub| accept(sub));
        let found: Subscriptions = found.into();
        if let Some(table) = networks.get(network) {
            write(&table.routes.inbound).insert(topic.clone(), (*id, found.clone()));
        }
        found
    }

    /// Picks the next member of `group` (of `size` members) for one-per-service delivery.
    pub(crate) fn rotate(&self, group: &Arc<str>, size: usize) -> usize {
        let mut rotation = lock(&self.rotation);
        // A group whose last member just went has no entry: nothing is kept for it.
        let Some(entry) = rotation.get_mut(group) else {
            return 0;
        };
        let pick = entry.next % size.max(1);
        entry.next = entry.next.wrapping_add(1);
        pick
    }

    /// How many subscribing groups `OnePerService` delivery keeps a place for.
    #[cfg(test)]
    pub(crate) fn rotating_groups(&self) -> usize {
        lock(&self.rotation).len()
    }

    /// Removes every subscription and every local action (on node stop).
    pub(crate) fn clear(&self) {
        for (_, sub) in write(&self.subscriptions).drain().map(|(_, v)| v) {
            sub.active.store(false, Ordering::Release);
        }
        lock(&self.rotation).clear();
        // Each table is emptied but keeps its route caches (emptied too: they hold no
        // subscription), so the node's copy of its own network's stays the table's.
        for table in write(&self.networks).values_mut() {
            forget_routes(table);
            *table = NetworkTable {
                routes: table.routes.clone(),
                ..NetworkTable::default()
            };
        }
        self.notify_changed();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::Code;

    fn get(n: &AtomicU64) -> u64 {
        n.load(Ordering::Relaxed)
    }

    /// Waits of `wait` every `every`, for `span`: the most the debt reached.
    fn most_debt(wait: Duration, every: Duration, span: Duration) -> Duration {
        let mut waits = PeerWaits::default();
        let start = tokio::time::Instant::now();
        let mut at = start;
        let mut most = Duration::ZERO;
        while at < start + span {
            waits.debt(at);
            at += wait;
            most = most.max(waits.charge(wait, at));
            at += every - wait;
        }
        most
    }

    #[test]
    fn peer_waits_under_half_the_time_never_run_up_a_debt() {
        let ms = Duration::from_millis;
        // 40% of the time, for a minute: at most one wait owed.
        assert_eq!(most_debt(ms(4), ms(10), ms(60_000)), ms(4));
        // Half the time: the same.
        assert_eq!(most_debt(ms(5), ms(10), ms(60_000)), ms(5));
        // All the time: half of it owed, 100 ms after 200 ms.
        assert_eq!(most_debt(ms(10), ms(10), ms(200)), ms(105));
        // 60% of the time: a tenth of it owed.
        assert_eq!(most_debt(ms(6), ms(10), ms(1_000)), ms(105));
        let mut waits = PeerWaits::default();
        let start = tokio::time::Instant::now();
        waits.charge(ms(50), start);
        assert_eq!(waits.debt(start + ms(40)), ms(30));
        waits.clear();
        assert_eq!(waits.debt(start + ms(50)), Duration::ZERO);
    }

    /// Groups are names peers choose: `OnePerService` keeps a place for a group only while it
    /// has members, so fresh group names, announced and withdrawn, leave nothing behind.
    #[test]
    fn a_groups_rotation_goes_with_its_last_member() {
        let registry = Registry::default();
        for round in 0..1_000u64 {
            let group: Arc<str> = format!("group-{round}").into();
            let members: Vec<_> = (0..2)
                .map(|i| {
                    let mut sub = subscription(round * 2 + i, "news/>");
                    if let Some(sub) = Arc::get_mut(&mut sub) {
                        sub.group = Some(group.clone());
                    }
                    registry.add_subscription("net", sub.clone());
                    sub
                })
                .collect();
            // The two members take turns.
            let picks: Vec<usize> = (0..4).map(|_| registry.rotate(&group, 2)).collect();
            assert_eq!(picks, [0, 1, 0, 1]);
            registry.remove_subscription(members[0].id);
            assert_eq!(registry.rotating_groups(), 1);
            registry.remove_subscription(members[1].id);
            assert_eq!(registry.rotating_groups(), 0);
        }
    }

    /// A local subscription `id` to `pattern`, its queue's receiver dropped.
    fn subscription(id: u64, pattern: &str) -> Arc<Subscription> {
        let (queue, _) = queue::subscription_queue(1);
        Arc::new(Subscription {
            id: SubscriptionId(id),
            pattern: TopicPath::parse(pattern).unwrap(),
            group: None,
            origin: Origin::Local,
            sink: Sink::Local(LocalSink {
                queue,
                counters: Arc::default(),
            }),
            include_past: false,
            active: Arc::new(AtomicBool::new(true)),
        })
    }

    fn ids(found: &[Arc<Subscription>]) -> Vec<u64> {
        let mut ids: Vec<u64> = found.iter().map(|s| s.id.0).collect();
        ids.sort_unstable();
        ids
    }

    fn published(registry: &Registry, topic: &str) -> Vec<u64> {
        ids(&registry.matching_subscriptions("net", topic).1)
    }

    #[test]
    fn a_cached_publish_route_follows_subscriptions_that_come_and_go() {
        let registry = Registry::default();
        registry.add_subscription("net", subscription(1, "orders/*"));
        assert_eq!(published(&registry, "orders/new"), [1]);
        // Cached now: the same answer, and the topic shared rather than copied.
        let (first, _) = registry.matching_subscriptions("net", "orders/new");
        let (again, _) = registry.matching_subscriptions("net", "orders/new");
        assert!(Arc::ptr_eq(&first, &again));
        registry.add_subscription("net", subscription(2, "orders/>"));
        assert_eq!(published(&registry, "orders/new"), [1, 2]);
        assert!(registry.remove_subscription(SubscriptionId(1)));
        assert_eq!(published(&registry, "orders/new"), [2]);
        // Another network's subscriptions are not this network's routes.
        registry.add_subscription("other", subscription(3, "orders/new"));
        assert_eq!(published(&registry, "orders/new"), [2]);
        let routes = registry.routes("net");
        registry.clear();
        assert!(published(&registry, "orders/new").is_empty());
        // The caches a node keeps for its network are still that network's after a clear.
        registry.add_subscription("net", subscription(4, "orders/new"));
        assert_eq!(published(&registry, "orders/new"), [4]);
        let (_, cached) = routes.published("orders/new").unwrap();
        assert_eq!(cached.iter().map(|s| s.id.0).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn the_route_caches_hold_a_bounded_number_of_topics() {
        let registry = Registry::default();
        registry.add_subscription("net", subscription(1, "t/*"));
        for i in 0..ROUTE_CACHE_TOPICS * 3 {
            let topic: Arc<str> = format!("t/{i}").into();
            assert_eq!(published(&registry, &topic), [1]);
            let one = SubscriptionIds::One(1);
            let found = registry.inbound_subscriptions("net", &topic, &one, |_| true);
            assert_eq!(ids(&found), [1]);
        }
        let networks = read(&registry.networks);
        let table = networks.get("net").unwrap();
        assert!(read(&table.routes.published).routes.len() <= ROUTE_CACHE_TOPICS);
        assert!(read(&table.routes.inbound).routes.len() <= ROUTE_CACHE_TOPICS);
    }

    #[test]
    fn a_cached_inbound_route_is_for_the_id_it_was_found_for() {
        let registry = Registry::default();
        registry.add_subscription("net", subscription(1, "a/*"));
        registry.add_subscription("net", subscription(2, "a/b"));
        let topic: Arc<str> = "a/b".into();
        let one = SubscriptionIds::One(1);
        let two = SubscriptionIds::One(2);
        assert!(
            registry
                .cached_inbound("net", topic.as_bytes(), &one)
                .is_none()
        );
        let found = registry.inbound_subscriptions("net", &topic, &one, |_| true);
        assert_eq!(ids(&found), [1]);
        let (shared, cached) = registry
            .cached_inbound("net", topic.as_bytes(), &one)
            .unwrap();
        assert_eq!(ids(&cached), [1]);
        assert!(
            Arc::ptr_eq(&shared, &topic),
            "the topic is shared, not copied"
        );
        // Another id for the topic is looked up, not answered from the cache.
        assert!(
            registry
                .cached_inbound("net", topic.as_bytes(), &two)
                .is_none()
        );
        // What the filter refused is cached as refused.
        let refused = registry.inbound_subscriptions("net", &topic, &two, |_| false);
        assert!(refused.is_empty());
        let (_, cached) = registry
            .cached_inbound("net", topic.as_bytes(), &two)
            .unwrap();
        assert!(cached.is_empty());
        // A subscription going empties the cache.
        assert!(registry.remove_subscription(SubscriptionId(2)));
        assert!(
            registry
                .cached_inbound("net", topic.as_bytes(), &two)
                .is_none()
        );
        assert!(
            registry
                .inbound_subscriptions("net", &topic, &two, |_| true)
                .is_empty()
        );
        // Several ids are not cached.
        let many: SubscriptionIds = [1, 1].into_iter().collect();
        assert_eq!(
            ids(&registry.inbound_subscriptions("net", &topic, &many, |_| true)),
            [1]
        );
        assert!(
            registry
                .cached_inbound("net", topic.as_bytes(), &many)
                .is_none()
        );
    }

    #[test]
    fn action_counters_count_every_call_and_time_a_sample() {
        let counters = ActionCounters::new(4);
        for i in 0..8 {
            let timer = counters.start();
            timer.finish((i == 3).then_some(Code::NotFound));
        }
        assert_eq!(get(&counters.started), 8);
        assert_eq!(get(&counters.finished), 8);
        let timed: u64 = counters.latency.iter().map(get).sum();
        assert_eq!(timed, 2, "calls 0 and 4 of 8");
        let not_found = Code::ALL.iter().position(|c| *c == Code::NotFound).unwrap();
        assert_eq!(get(&counters.errors[not_found]), 1);
    }

    #[test]
    fn a_dropped_call_is_cancelled_and_no_longer_in_flight() {
        let counters = ActionCounters::new(0);
        let timer = counters.start();
        assert_eq!(get(&counters.started) - get(&counters.finished), 1);
        drop(timer);
        assert_eq!(get(&counters.finished), 1);
        let cancelled = Code::ALL
            .iter()
            .position(|c| *c == Code::Cancelled)
            .unwrap();
        assert_eq!(get(&counters.errors[cancelled]), 1);
        assert_eq!(
            counters.latency.iter().map(get).sum::<u64>(),
            0,
            "0 times none"
        );
    }
}
