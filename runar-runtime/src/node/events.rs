//! The event path: publish to matching subscriptions, per-subscription queues, retained events.
//!
//! Flow control: every local subscription has a bounded queue (`event_queue_capacity`) and
//! every peer one bounded queue for all its subscriptions (`peer_event_queue_capacity`,
//! `peer_event_queue_bytes`). A publisher hands the event to every queue with room, then, only
//! if it asked to wait, waits for the full ones up to one deadline; what still finds no room is
//! dropped and counted. Events from peers never wait, so a peer's event stream is never held
//! behind one slow subscriber (and two nodes whose handlers publish to each other cannot
//! deadlock). A peer that stops reading is disconnected by its event writer (`peer.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::request::{deadline_after, panic_message};
use super::stats::count;
use super::{Node, NodeInner, PublishOptions, SubscribeOptions, SubscriptionId};
use crate::coop;
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::metadata::Metadata;
use crate::network::log_limit::{error_limited, warn_limited};
use crate::network::{
    EventPayload, EventRef, EventSink, InboundEvent, MorePayloads, OutboundEvent, QueueRefusal,
    SubscriptionIds,
};
use crate::node::BroadcastMode;
use crate::node::registry::{
    Event, EventRun, HeldBytes, LocalSink, Origin, QueueClosed, QueueFull, QueueReceiver, Sink,
    Subscription, SubscriptionCounters, subscription_queue,
};
use crate::node::service::{Caller, EventContext, EventHandler, HandleEvent, TypedEventHandler};
use crate::policy::Access;
use crate::routing::{Segment, TopicPath, split_concrete};
use crate::value::{EventValue, Payload, Value, ValueRef};

/// The latest retained event per (network, topic).
pub(super) type RetainedStore = HashMap<Arc<str>, HashMap<Arc<str>, Retained>>;

pub(super) struct Retained {
    value: Arc<Value>,
    publisher: Caller,
    expires: Instant,
    metadata: Metadata,
}

impl Node {
    /// Publishes `event` on the concrete topic `path` to every matching subscription.
    ///
    /// Each subscription has its own bounded queue, so one subscriber sees a publisher's events
    /// in order. The publisher never waits for a slow subscriber: a subscriber whose queue is
    /// full loses the event, which is counted ([`Node::stats`], [`Node::subscription_stats`])
    /// and logged. To wait instead, see [`PublishOptions::with_wait`]. Topics whose first
    /// segment starts with `$` (such as `$registry/…`) are local to this node: they never go
    /// to peers.
    pub fn publish<T: Payload>(
        &self,
        path: impl AsRef<str>,
        event: T,
    ) -> impl Future<Output = Result<()>> {
        self.publish_with(path, event, PublishOptions::default())
    }

    /// [`publish`](Self::publish) with options: broadcast mode, retention, and how long to
    /// wait for subscribers whose queues are full.
    pub fn publish_with<T: Payload>(
        &self,
        path: impl AsRef<str>,
        event: T,
        options: PublishOptions,
    ) -> impl Future<Output = Result<()>> {
        Publishing {
            node: self,
            event: Some((path, event, options)),
            waiting: None,
        }
    }

    /// The dynamic form of [`publish_with`](Self::publish_with).
    pub fn publish_value(
        &self,
        path: impl AsRef<str>,
        event: Value,
        options: PublishOptions,
    ) -> impl Future<Output = Result<()>> {
        Publishing {
            node: self,
            event: Some((path, event, options)),
            waiting: None,
        }
    }

    /// The part of [`publish_value`](Self::publish_value) that does not wait: checks, routes,
    /// and hands the event to every queue with room; the deliveries that found theirs full
    /// come back to wait for room (see [`deliver_at_once`](Self::deliver_at_once)).
    fn publish_at_once(
        &self,
        path: &str,
        value: DeliveryValue<'_>,
        options: PublishOptions,
    ) -> Result<Option<Crowded>> {
        self.check_not_stopped()?;
        let config = &self.inner.config;
        options
            .metadata
            .check_limits(config.max_metadata_size, config.max_metadata_entries)?;
        // A topic of the node's network that was published before is valid: found in the
        // route cache as it is, it is not checked again, and its route is lent rather than
        // cloned. (A path naming a network is never cached as a topic.)
        let routed = self
            .inner
            .routes
            .with_published(path, |cached| match cached {
                Some((topic_path, targets)) => {
                    let network = &self.inner.network;
                    Ok(self.publish_routed(network, path, topic_path, targets, value, options))
                }
                // Routed below, outside the cache's lock (routing fills the cache).
                None => Err((value, options)),
            });
        let (value, options) = match routed {
            Ok(published) => return published,
            Err(uncached) => uncached,
        };
        let (topic_network, topic) = split_concrete(path, config.path_limits())?;
        let network: Arc<str> = match topic_network {
            Some(named) => named.into(),
            None => self.inner.network.clone(),
        };
        let (topic_path, targets) = self.inner.registry.matching_subscriptions(&network, topic);
        self.publish_routed(&network, topic, &topic_path, &targets, value, options)
    }

    /// The rest of [`publish_at_once`](Self::publish_at_once) once the topic is known valid
    /// and routed: access, retention, counting, and the hand-off to `targets`.
    fn publish_routed(
        &self,
        network: &Arc<str>,
        topic: &str,
        topic_path: &Arc<str>,
        targets: &[Arc<Subscription>],
        value: DeliveryValue<'_>,
        options: PublishOptions,
    ) -> Result<Option<Crowded>> {
        let mut value = value;
        if self.inner.policed.load(Ordering::Relaxed) && !is_local_only(topic) {
            self.check_access(network, None, Access::Publish, topic)?;
        }
        let held = if value.get().is_encoded() {
            Hold::Each
        } else {
            Hold::Free
        };
        if let Some(ttl) = options.retain_for {
            let value = value.share();
            let mut store = lock(&self.inner.retained);
            let now = Instant::now();
            let per_network = store.entry(network.clone()).or_default();
            per_network.retain(|_, r| r.expires > now);
            per_network.insert(
                topic_path.clone(),
                Retained {
                    value,
                    publisher: Caller::Local,
                    expires: deadline_after(ttl),
                    metadata: options.metadata.clone(),
                },
            );
        }
        count(&self.inner.counters.published, 1);
        let broadcast = if is_local_only(topic) {
            BroadcastMode::LocalOnly
        } else {
            options.broadcast
        };
        let targets = self.select_targets(targets, broadcast);
        let wait = options.wait.unwrap_or(self.inner.config.publish_wait);
        let event = Delivery {
            network,
            topic: topic_path,
            value,
            held: &held,
            publisher: Caller::Local,
            retained: false,
            metadata: options.metadata,
        };
        Ok(self.deliver_at_once(event, &targets, Wait::Publisher(wait)))
    }

    /// Hands an event to `targets` without waiting: local queues get the value itself; each
    /// peer gets one message naming its subscriptions, with the payload encoded once for all
    /// peers. Every queue with room gets the event at once; the deliveries that found theirs
    /// full come back to wait for room (`None` when there are none, or `wait` is zero: those
    /// were dropped, counted and logged). [`wait_for_room`](Self::wait_for_room) waits for
    /// them together, up to `wait` (for an event from a peer, up to what is left of each
    /// subscription's budget, not for a stalled one).
    fn deliver_at_once(
        &self,
        event: Delivery<'_>,
        targets: &[Arc<Subscription>],
        wait: Wait,
    ) -> Option<Crowded> {
        let Delivery {
            network,
            topic,
            mut value,
            held,
            publisher,
            retained,
            metadata,
        } = event;
        // Peers first: they encode the value; local queues then share it (an `Arc` made only
        // when one takes it).
        let mut peers = ByPeer::default();
        for sub in targets {
            if let Sink::Remote { sink, remote_id } = &sub.sink {
                peers.add(sink, *remote_id);
            }
        }
        let mut full_peers: Vec<(Arc<dyn EventSink>, OutboundEvent)> = Vec::new();
        if let Some(count) = peers.count() {
            // One peer: its queue encodes the value straight into the frame. More: encoded
            // once, copied into each peer's frame.
            let encoded;
            let payload = if count == 1 {
                EventPayload::Value(value.get(), self.seal_scope())
            } else {
                encoded = self.encode_ref_for_peers(value.get());
                EventPayload::Encoded(&encoded)
            };
            for (sink, subscription_ids) in peers.into_iter() {
                let event = EventRef {
                    network,
                    topic,
                    payload,
                    subscription_ids: &subscription_ids,
                    retained,
                    metadata: &metadata,
                };
                match sink.try_send(&event) {
                    Ok(()) => {}
                    Err(QueueRefusal::Full) => full_peers.push((sink.clone(), event.owned())),
                    Err(QueueRefusal::Closed) => {
                        self.peer_dropped(sink.as_ref(), topic, event.copies(), "the peer is gone")
                    }
                }
            }
        }
        let mut full_local: Vec<(Arc<Subscription>, Event)> = Vec::new();
        // The last local subscription takes the value itself: a reference count less to
        // raise here and drop again (those counts are shared with the threads that run the
        // handlers).
        let last_local = targets
            .iter()
            .rposition(|sub| matches!(sub.sink, Sink::Local(_)));
        for (i, sub) in targets.iter().enumerate() {
            let Sink::Local(local) = &sub.sink else {
                continue;
            };
            let last = Some(i) == last_local;
            // Bytes from a peer count against the node's bound while they wait.
            let held = match held {
                Hold::Free => None,
                Hold::Frame(frame) => Some(frame.clone()),
                Hold::Each => match HeldBytes::try_hold(
                    &self.inner.counters.queued_event_bytes,
                    value.get().encoded_len(),
                    self.inner.config.max_queued_event_bytes,
                ) {
                    Some(held) => Some(Arc::new(held)),
                    None => {
                        self.local_dropped(
                            sub,
                            local,
                            "the node's queued event bytes are at their bound",
                        );
                        continue;
                    }
                },
            };
            let value = if last {
                value.take()
            } else {
                EventValue::Shared(value.share())
            };
            let event = Event {
                topic: topic.clone(),
                value,
                publisher: publisher.clone(),
                retained,
                metadata: metadata.clone(),
                held,
            };
            match local.queue.try_send(event) {
                Ok(()) => {}
                Err(QueueFull::Full(event)) => {
                    full_local.push((sub.clone(), event));
                }
                // A closed queue means the subscription just ended: nothing to deliver to.
                Err(QueueFull::Closed(_)) => {}
            }
        }
        if full_local.is_empty() && full_peers.is_empty() {
            return None;
        }
        let topic = topic.clone();
        if wait.duration().is_zero() {
            for (sub, _) in &full_local {
                if let Sink::Local(local) = &sub.sink {
                    self.local_dropped(sub, local, "the subscription's queue is full");
                }
            }
            for (sink, event) in &full_peers {
                self.peer_dropped(sink.as_ref(), &topic, event.copies(), "its queue is full");
            }
            return None;
        }
        Some(Crowded {
            topic,
            full_local,
            full_peers,
            wait,
        })
    }

    /// The waiting part of [`deliver_at_once`](Self::deliver_at_once): the deliveries whose queues were full
    /// wait together for room, up to their wait; those still without room are dropped,
    /// counted and logged.
    async fn wait_for_room(&self, crowded: Crowded) {
        let Crowded {
            topic,
            full_local,
            full_peers,
            wait,
        } = crowded;
        let topic = &*topic;
        let started = tokio::time::Instant::now();
        // `None`: no deadline (a wait of `Duration::MAX`).
        let deadline = started.checked_add(wait.duration());
        let locals = full_local.into_iter().map(|(sub, event)| async move {
            let Sink::Local(local) = &sub.sink else {
                return;
            };
            let Wait::Peer(budget) = wait else {
                // `Some(false)`: the subscription ended meanwhile, nothing lost.
                if until(deadline, local.queue.send(event)).await.is_none() {
                    self.local_dropped(&sub, local, "the subscription's queue is full");
                }
                return;
            };
            // An event from a peer waits for what is left of the subscription's budget.
            let counters = &local.counters;
            let now = tokio::time::Instant::now();
            let left = budget.saturating_sub(lock(&counters.peer_waits).debt(now));
            if counters.stalled.load(Ordering::Relaxed) || left.is_zero() {
                counters.stalled.store(true, Ordering::Relaxed);
                self.local_dropped(&sub, local, "the subscription is stalled");
                return;
            }
            counters.peers_waited.store(true, Ordering::Relaxed);
            let sent = until(now.checked_add(left), local.queue.send(event)).await;
            let end = tokio::time::Instant::now();
            let debt = lock(&counters.peer_waits).charge(end.saturating_duration_since(now), end);
            if sent.is_none() || debt >= budget {
                counters.stalled.store(true, Ordering::Relaxed);
            }
            if sent.is_none() {
                self.local_dropped(&sub, local, "the subscription's queue is full");
            }
        });
        let remotes = full_peers.into_iter().map(|(sink, event)| async move {
            let copies = event.copies();
            let why = match until(deadline, sink.send(event)).await {
                Some(true) => return,
                Some(false) => "the peer is gone",
                None => "its queue is full",
            };
            self.peer_dropped(sink.as_ref(), topic, copies, why);
        });
        futures::future::join(
            futures::future::join_all(locals),
            futures::future::join_all(remotes),
        )
        .await;
    }

    /// Counts and logs an event that a local subscription's full queue could not take.
    fn local_dropped(&self, sub: &Subscription, local: &LocalSink, why: &str) {
        count(&local.counters.dropped, 1);
        count(&self.inner.counters.dropped, 1);
        warn_limited!(subscription = %sub.id, pattern = %sub.pattern, "event dropped: {why}");
    }

    /// Counts and logs `copies` deliveries to a peer that were lost.
    fn peer_dropped(&self, sink: &dyn EventSink, topic: &str, copies: u64, why: &str) {
        count(&self.inner.counters.dropped, copies);
        warn_limited!(peer = %sink.peer(), %topic, copies, "event to a peer dropped: {why}");
    }

    /// Delivers an event that arrived from a peer to the local subscriptions it names, once
    /// each, waiting for a full queue as [`NodeConfig::peer_event_wait`](crate::NodeConfig)
    /// says (the peer's later events wait behind it). The topic is validated as a local publish's is,
    /// and must not be local-only (`$…`); each id must be one of this node's subscriptions in
    /// `network` (the connection's, which the event names or leaves empty) whose pattern
    /// matches the topic. What is refused is counted in
    /// [`NodeStats::events_rejected`](super::NodeStats) and logged (rate-limited).
    ///
    /// The event goes to every queue with room at once; what comes back is the waiting for
    /// full ones, if any (see [`NodeHandler::deliver`](crate::network::NodeHandler)).
    pub(crate) fn deliver_inbound(
        &self,
        event: InboundEvent,
        network: &Arc<str>,
    ) -> Option<futures::future::BoxFuture<'static, ()>> {
        let counters = &self.inner.counters;
        // The frame's events: its payload and the more that joined it.
        let events = u64::try_from(event.more.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        count(&counters.received, events);
        let peer = event.from;
        let registry = &self.inner.registry;
        let ids = &event.subscription_ids;
        let topic_bytes = event.topic.as_bytes();
        let cached = if **network == *self.inner.network {
            self.inner.routes.inbound(topic_bytes, ids)
        } else {
            registry.cached_inbound(network, topic_bytes, ids)
        };
        let (topic, targets) = match cached {
            // The topic was checked when it was cached.
            Some(cached) => cached,
            None => {
                let text = event.topic.as_str();
                let topic = match split_concrete(text, self.inner.config.path_limits()) {
                    Ok((None, topic)) if !is_local_only(topic) => topic,
                    refused => {
                        count(&counters.rejected, events);
                        let why = match refused {
                            Err(e) => e.to_string(),
                            Ok((Some(_), _)) => "a topic with a network prefix".to_owned(),
                            Ok((None, _)) => "a local-only topic".to_owned(),
                        };
                        warn_limited!(%peer, topic = %shorten(text), "event from a peer refused: {}", shorten(&why));
                        return None;
                    }
                };
                let shared: Arc<str> = topic.into();
                let targets = registry.inbound_subscriptions(network, &shared, ids, |sub| {
                    !is_local_only(sub.pattern.path()) && sub.pattern.matches_topic(topic)
                });
                (shared, targets)
            }
        };
        if self.inner.policed.load(Ordering::Relaxed)
            && self
                .check_access(network, Some(&peer), Access::Publish, &topic)
                .is_err()
        {
            // Counted in the policy's decisions too, and logged (rate-limited) there.
            count(&counters.rejected, events);
            return None;
        }
        let named = ids.len();
        let ignored = named.saturating_sub(targets.len());
        if ignored > 0 {
            count(
                &counters.rejected,
                u64::try_from(ignored)
                    .unwrap_or(u64::MAX)
                    .saturating_mul(events),
            );
            // Also the ordinary race of an event with an unsubscribe: not worth a warning.
            if let Some(suppressed) = INBOUND_IGNORED.allow() {
                tracing::debug!(suppressed, %peer, %topic, ignored, "event named subscriptions that are not this node's for that topic, or named one twice");
            }
        }
        if targets.is_empty() {
            return None;
        }
        let config = &self.inner.config;
        let metadata = match Metadata::from_wire(
            event.metadata,
            config.max_metadata_size,
            config.max_metadata_entries,
        ) {
            Ok(metadata) => metadata,
            Err(error) => {
                count(&counters.rejected, events);
                warn_limited!(%peer, %topic, "event from a peer refused: {}", shorten(error.message()));
                return None;
            }
        };
        // The whole topic: one with a network prefix was refused above.
        let route = InboundRoute {
            topic,
            frame_len: event.frame_len,
            held: match HeldBytes::try_hold(
                &self.inner.counters.queued_event_bytes,
                event.frame_len,
                self.inner.config.max_queued_event_bytes,
            ) {
                Some(frame) => Hold::Frame(Arc::new(frame)),
                None => Hold::Each,
            },
            targets,
            peer,
            retained: event.retained,
            metadata,
            wait: Wait::Peer(self.inner.config.peer_event_wait),
        };
        // Each local subscription takes the frame's events as one run, as many as its queue
        // has room for: one push per subscription however many events the frame joins. Those
        // that did not fit follow one at a time, in order: at once while every queue has
        // room, up to `INBOUND_AT_ONCE`; the rest in the future that comes back, each after
        // the waiting for the one before, and within tokio's cooperative budget. After a wait,
        // once every subscription still owed events has had the one waited for, the rest of
        // the frame goes as runs again.
        let total = event.more.len().saturating_add(1);
        let mut cursor = FrameCursor {
            index: 0,
            at: Some(event.payload),
            more: event.more,
        };
        let mut behind = self.deliver_runs(&route, &route.targets, &cursor, total);
        let from = behind.from.first().copied()?;
        cursor.skip_to(from);
        let mut crowded = None;
        for _ in 0..INBOUND_AT_ONCE {
            let Some((index, payload)) = cursor.take() else {
                break;
            };
            crowded = self.deliver_one_inbound(network, &route, behind.at(index), payload);
            if crowded.is_some() {
                break;
            }
        }
        if crowded.is_none() && cursor.at.is_none() {
            return None;
        }
        let node = self.clone();
        let network = network.clone();
        Some(Box::pin(async move {
            if let Some(crowded) = crowded {
                node.wait_for_room(crowded).await;
                node.runs_again(&route, &mut behind, &mut cursor, total);
            }
            while let Some((index, payload)) = cursor.take() {
                tokio::task::coop::consume_budget().await;
                let targets = behind.at(index);
                if let Some(crowded) = node.deliver_one_inbound(&network, &route, targets, payload)
                {
                    node.wait_for_room(crowded).await;
                    node.runs_again(&route, &mut behind, &mut cursor, total);
                }
            }
        }))
    }

    /// Queues a peer's frame of `total` events, from `cursor` on, as one [`EventRun`] in each
    /// of `subs`' queues, as many of them as it has room for. What is left: the subscriptions
    /// that did not take them all, each from its first event not queued (every one from
    /// `cursor` when the frame's events are held one by one, [`Hold::Each`]: those are copied
    /// out of the frame).
    fn deliver_runs(
        &self,
        route: &InboundRoute,
        subs: &[Arc<Subscription>],
        cursor: &FrameCursor,
        total: usize,
    ) -> Behind {
        let mut behind = Behind::default();
        let start = cursor.index;
        let held = match &route.held {
            Hold::Each => {
                for sub in subs {
                    behind.push(sub, start);
                }
                return behind;
            }
            Hold::Free => None,
            Hold::Frame(frame) => Some(frame),
        };
        let left = total.saturating_sub(start);
        for sub in subs {
            // A peer's event only ever names local subscriptions.
            let Sink::Local(local) = &sub.sink else {
                behind.push(sub, start);
                continue;
            };
            let run = EventRun {
                topic: route.topic.clone(),
                publisher: Caller::Remote(route.peer),
                retained: route.retained,
                metadata: route.metadata.clone(),
                _held: held.cloned(),
                scope: self.seal_scope().cloned(),
                first: cursor.at.clone(),
                more: cursor.more.clone(),
                left,
            };
            match local.queue.try_send_run(run) {
                Ok(queued) if queued >= left => {}
                Ok(queued) => behind.push(sub, start.saturating_add(queued)),
                // The subscription just ended: nothing to deliver to.
                Err(QueueClosed) => {}
            }
        }
        behind.sort();
        behind
    }

    /// After a wait for room: when every subscription in `behind` has had the frame's events
    /// before `cursor`, the rest go to them as runs again ([`deliver_runs`](Self::deliver_runs))
    /// and `cursor` moves to the first event one of them did not take.
    fn runs_again(
        &self,
        route: &InboundRoute,
        behind: &mut Behind,
        cursor: &mut FrameCursor,
        total: usize,
    ) {
        if cursor.at.is_none() || matches!(route.held, Hold::Each) {
            return;
        }
        if behind.from.last().is_some_and(|from| *from > cursor.index) {
            return;
        }
        let rest = self.deliver_runs(route, &behind.subs, cursor, total);
        *behind = rest;
        cursor.skip_to(behind.from.first().copied().unwrap_or(total));
    }

    /// One of a peer's events, routed (see [`deliver_inbound`](Self::deliver_inbound)), to
    /// every queue with room at once; the waiting for full ones comes back.
    fn deliver_one_inbound(
        &self,
        network: &Arc<str>,
        route: &InboundRoute,
        targets: &[Arc<Subscription>],
        payload: bytes::Bytes,
    ) -> Option<Crowded> {
        let payload = match route.held {
            Hold::Each => unpinned(payload, route.frame_len),
            Hold::Free | Hold::Frame(_) => payload,
        };
        let delivery = Delivery {
            network,
            topic: &route.topic,
            value: DeliveryValue::Event(EventValue::Owned(
                self.sealed_scope(Value::from_encoded(payload)),
            )),
            held: &route.held,
            publisher: Caller::Remote(route.peer),
            retained: route.retained,
            metadata: route.metadata.clone(),
        };
        self.deliver_at_once(delivery, targets, route.wait)
    }

    /// Narrows `targets` to what the broadcast mode asks for.
    fn select_targets<'a>(
        &self,
        targets: &'a [Arc<Subscription>],
        mode: BroadcastMode,
    ) -> Cow<'a, [Arc<Subscription>]> {
        match mode {
            BroadcastMode::All => Cow::Borrowed(targets),
            BroadcastMode::LocalOnly => targets
                .iter()
                .filter(|s| s.origin == Origin::Local)
                .cloned()
                .collect(),
            BroadcastMode::OnePerService => {
                let mut targets = targets.to_vec();
                targets.sort_by(|a, b| (&a.group, a.id).cmp(&(&b.group, b.id)));
                let mut chosen = Vec::with_capacity(targets.len());
                let mut rest = targets.as_slice();
                while let Some(first) = rest.first() {
                    let size = match &first.group {
                        None => 1,
                        Some(g) => rest
                            .iter()
                            .take_while(|s| s.group.as_ref() == Some(g))
                            .count(),
                    };
                    let (group, tail) = rest.split_at(size);
                    let pick = match &first.group {
                        Some(g) if size > 1 => self.inner.registry.rotate(g, size),
                        _ => 0,
                    };
                    chosen.extend(group.get(pick).cloned());
                    rest = tail;
                }
                Cow::Owned(chosen)
            }
        }
    }

    /// Subscribes to `pattern` (`*`, `>` and `{param}` allowed) with a typed handler. Events
    /// that do not decode as `T` are logged and skipped; a handler's error or panic is logged
    /// and the subscription goes on.
    pub async fn subscribe<T, F, Fut>(
        &self,
        pattern: impl AsRef<str>,
        handler: F,
    ) -> Result<SubscriptionId>
    where
        T: Payload,
        F: Fn(T, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscribe_with(pattern, SubscribeOptions::default(), handler)
            .await
    }

    /// [`subscribe`](Self::subscribe) with options (retained events).
    pub async fn subscribe_with<T, F, Fut>(
        &self,
        pattern: impl AsRef<str>,
        options: SubscribeOptions,
        handler: F,
    ) -> Result<SubscriptionId>
    where
        T: Payload,
        F: Fn(T, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscribe_raw(
            pattern.as_ref(),
            options,
            None,
            TypedEventHandler::new(handler),
        )
        .await
    }

    /// The dynamic form of [`subscribe_with`](Self::subscribe_with): the handler gets each
    /// event as a type-erased [`Value`] (an event from a peer holds its encoded bytes).
    pub async fn subscribe_value(
        &self,
        pattern: impl AsRef<str>,
        options: SubscribeOptions,
        handler: EventHandler,
    ) -> Result<SubscriptionId> {
        self.subscribe_raw(pattern.as_ref(), options, None, handler)
            .await
    }

    /// Subscribes with a type-erased handler; `group` is the owning service's path.
    pub(crate) async fn subscribe_raw(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        group: Option<Arc<str>>,
        handler: impl HandleEvent,
    ) -> Result<SubscriptionId> {
        self.check_not_stopped()?;
        let pattern = TopicPath::parse_within(pattern, self.inner.config.path_limits())?;
        let network: Arc<str> = pattern.network().unwrap_or(&self.inner.network).into();
        if self.inner.policed.load(Ordering::Relaxed) && !is_local_only(pattern.path()) {
            self.check_local_subscribe(&network, &pattern)?;
        }
        let id = self.next_subscription_id();
        let (queue, events) = subscription_queue(self.inner.config.event_queue_capacity);
        let counters = Arc::new(SubscriptionCounters::default());
        let active = Arc::new(AtomicBool::new(true));
        if options.include_past {
            for event in self.retained_matching(&network, &pattern) {
                if queue.try_send(event).is_err() {
                    tracing::warn!(%id, %pattern, "more retained events than the queue holds; the rest are skipped");
                    break;
                }
            }
        }
        tokio::spawn(run_subscription(
            Arc::downgrade(&self.inner),
            self.other_network(&network),
            pattern.clone(),
            handler,
            events,
            active.clone(),
            counters.clone(),
        ));
        self.inner.registry.add_subscription(
            &network,
            Arc::new(Subscription {
                id,
                pattern,
                group,
                origin: Origin::Local,
                sink: Sink::Local(LocalSink { queue, counters }),
                include_past: options.include_past,
                active,
            }),
        );
        // Returns once connected peers know of the subscription: their next publish reaches it.
        self.announce().await;
        Ok(id)
    }

    /// Ends a subscription: no event is delivered to it after this returns.
    pub async fn unsubscribe(&self, id: impl Into<SubscriptionId>) -> Result<()> {
        let id = id.into();
        if self.inner.registry.remove_subscription(id) {
            self.announce().await;
            Ok(())
        } else {
            Err(Error::not_found(format!("no subscription {id}")))
        }
    }

    /// The retained events of `network` that `pattern` matches.
    pub(crate) fn retained_matching(&self, network: &str, pattern: &TopicPath) -> Vec<Event> {
        let mut store = lock(&self.inner.retained);
        let Some(per_network) = store.get_mut(network) else {
            return Vec::new();
        };
        let now = Instant::now();
        per_network.retain(|_, r| r.expires > now);
        per_network
            .iter()
            .filter(|(topic, _)| pattern.matches(&topic.split('/').collect::<Vec<_>>()))
            .map(|(topic, r)| Event {
                topic: topic.clone(),
                value: EventValue::Shared(r.value.clone()),
                publisher: r.publisher.clone(),
                retained: true,
                metadata: r.metadata.clone(),
                held: None,
            })
            .collect()
    }
}

/// Delivers a subscription's events to its handler, one at a time, in order.
async fn run_subscription(
    node: Weak<NodeInner>,
    network: Option<Arc<str>>,
    pattern: TopicPath,
    handler: impl HandleEvent,
    mut events: QueueReceiver,
    active: Arc<AtomicBool>,
    counters: Arc<SubscriptionCounters>,
) {
    let templated = pattern
        .segments()
        .iter()
        .any(|s| matches!(s, Segment::Param(_)));
    // The topic a failing handler is logged with, kept from one event to the next: events
    // on one topic share its `Arc` (the route caches hand it out), so the task rarely takes
    // a reference of its own (an atomic operation per event otherwise).
    let mut topic: Arc<str> = Arc::from("");
    while let Some(event) = events.recv().await {
        if !active.load(Ordering::Acquire) {
            break;
        }
        // An empty queue means the handler caught up: it ends a stall, and peers' events may
        // wait for room again, for a whole `peer_event_wait`.
        if counters.peers_waited.load(Ordering::Relaxed) && events.is_empty() {
            lock(&counters.peer_waits).clear();
            counters.peers_waited.store(false, Ordering::Relaxed);
            counters.stalled.store(false, Ordering::Relaxed);
        }
        let Some(inner) = node.upgrade() else {
            break;
        };
        count(&counters.delivered, 1);
        count(&inner.counters.delivered, 1);
        let params = if templated {
            let segments: Vec<&str> = event.topic.split('/').collect();
            pattern.params(&segments).unwrap_or_default()
        } else {
            Default::default()
        };
        // The event's bytes stay counted against the node's bound until the handler has run.
        let _held = event.held;
        if !Arc::ptr_eq(&topic, &event.topic) {
            topic = event.topic.clone();
        }
        let ctx = EventContext::new(
            Node::from_inner(inner),
            network.clone(),
            event.topic,
            params,
            event.publisher,
            event.retained,
            event.metadata,
        );
        match AssertUnwindSafe(handler.handle(event.value, ctx))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn_limited!(%topic, %pattern, error = %e, "event handler failed"),
            // Rate-limited: a peer's events can make a handler panic on each one.
            Err(panic) => error_limited!(
                %topic, %pattern, panic = panic_message(panic.as_ref()), "event handler panicked"
            ),
        }
    }
}

/// How many publishes take one unit of tokio's cooperative budget (128 units a turn): a task
/// publishing in a tight loop yields every 512 publishes. At one unit a publish it yielded
/// every 128: the peer's writer then took 128 small events a write, each write a QUIC packet
/// and its acknowledgement (41,000 `sendmsg` calls per 3M events against 11,700 at four; the
/// subscriber's task hands out 4,096 events a turn, so it keeps up).
const PUBLISHES_PER_BUDGET_UNIT: u32 = 4;

thread_local! {
    /// Publishes on this thread since tokio's cooperative budget was last consulted.
    static UNBUDGETED_PUBLISHES: std::cell::Cell<coop::Steps> = const { std::cell::Cell::new(coop::Steps::new()) };
}

/// A publish ([`Node::publish_value`] and its typed forms): its arguments until it is first
/// polled, then the waiting for room if some queue was full. Written out rather than an
/// `async fn`: a publisher in a tight loop builds and moves one per event, and nested async
/// functions would each keep their own copy of the arguments (520 bytes for `publish_with`
/// against this one's ~130).
struct Publishing<'a, P, M> {
    node: &'a Node,
    /// The path, the message (a typed one or a `Value`) and the options, until first polled.
    event: Option<(P, M, PublishOptions)>,
    /// Boxed: the rare case, whose state would otherwise make every publish larger.
    waiting: Option<futures::future::BoxFuture<'a, ()>>,
}

// Nothing in it is pinned: the path is only borrowed while `poll` runs, and the waiting is a
// box of its own.
impl<P, M> Unpin for Publishing<'_, P, M> {}

impl<P: AsRef<str>, M: 'static> Future for Publishing<'_, P, M>
where
    Option<M>: PendingMessage,
{
    type Output = Result<()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some((path, event, options)) = this.event.take() {
            // A publisher in a tight loop never waits, so let the subscribers' tasks and the
            // peers' writers run now and then: a unit of tokio's cooperative budget per
            // `PUBLISHES_PER_BUDGET_UNIT` publishes on this thread.
            let mut unbudgeted = UNBUDGETED_PUBLISHES.get();
            if unbudgeted
                .poll_proceed(cx, PUBLISHES_PER_BUDGET_UNIT)
                .is_pending()
            {
                this.event = Some((path, event, options));
                return Poll::Pending;
            }
            unbudgeted.took();
            UNBUDGETED_PUBLISHES.set(unbudgeted);
            let mut message = Some(event);
            let value = DeliveryValue::Message(&mut message);
            match this.node.publish_at_once(path.as_ref(), value, options) {
                Ok(Some(crowded)) => {
                    this.waiting = Some(Box::pin(this.node.wait_for_room(crowded)))
                }
                done => return Poll::Ready(done.map(|_| ())),
            }
        }
        match &mut this.waiting {
            Some(waiting) => waiting.as_mut().poll(cx).map(|()| {
                this.waiting = None;
                Ok(())
            }),
            // Polled again after it finished.
            None => Poll::Ready(Ok(())),
        }
    }
}

/// What a publish holds until a local subscription takes it: a typed message (boxed into a
/// `Value` only then; one that only peers get is encoded where it is) or a `Value`
/// (`publish_value`).
pub(crate) trait PendingMessage {
    /// The message, to encode for peers.
    fn get(&self) -> ValueRef<'_>;
    /// The message as a `Value` (at most once; nothing after).
    fn take(&mut self) -> Value;
}

impl<T: Payload> PendingMessage for Option<T> {
    fn get(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Empty, ValueRef::message)
    }

    fn take(&mut self) -> Value {
        Option::take(self).map_or_else(Value::empty, Value::new)
    }
}

impl PendingMessage for Option<Value> {
    fn get(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Empty, ValueRef::Value)
    }

    fn take(&mut self) -> Value {
        Option::take(self).unwrap_or_else(Value::empty)
    }
}

/// An event's value as [`Node::deliver_at_once`] hands it out.
pub(crate) enum DeliveryValue<'a> {
    /// A peer's event, or a published one once shared.
    Event(EventValue),
    /// What a publish holds, not yet taken by a local subscription.
    Message(&'a mut (dyn PendingMessage + 'static)),
}

impl DeliveryValue<'_> {
    fn get(&self) -> ValueRef<'_> {
        match self {
            DeliveryValue::Event(value) => ValueRef::Value(value.get()),
            DeliveryValue::Message(message) => message.get(),
        }
    }

    /// See [`EventValue::take`] (a typed message boxed into a `Value`).
    fn take(&mut self) -> EventValue {
        match self {
            DeliveryValue::Event(value) => value.take(),
            DeliveryValue::Message(message) => EventValue::Owned(message.take()),
        }
    }

    /// See [`EventValue::share`] (a typed message boxed into a `Value` the first time).
    fn share(&mut self) -> Arc<Value> {
        match self {
            DeliveryValue::Event(value) => value.share(),
            DeliveryValue::Message(message) => {
                let shared = Arc::new(message.take());
                *self = DeliveryValue::Event(EventValue::Shared(shared.clone()));
                shared
            }
        }
    }
}

/// An event on its way to subscriptions: what [`Node::deliver_at_once`] hands out.
pub(crate) struct Delivery<'a> {
    pub(crate) network: &'a Arc<str>,
    pub(crate) topic: &'a Arc<str>,
    pub(crate) value: DeliveryValue<'a>,
    /// How the event's bytes count against the node's bound while local queues hold it.
    pub(crate) held: &'a Hold,
    pub(crate) publisher: Caller,
    pub(crate) retained: bool,
    pub(crate) metadata: Metadata,
}

/// How an event's bytes count against the node's
/// [`max_queued_event_bytes`](crate::NodeConfig::max_queued_event_bytes) while local queues
/// hold it.
pub(crate) enum Hold {
    /// Nothing to count: a value in memory.
    Free,
    /// Each local queue's event holds the value's encoded length (the value owns its bytes).
    Each,
    /// A peer's frame, held once for all the events it carries (their payloads are slices of
    /// it, which keep it in memory) until the last of them is handled or dropped.
    Frame(Arc<HeldBytes>),
}

/// How many of the events one frame from a peer joins are delivered before the frame's reader
/// lets other tasks run (see [`Node::deliver_inbound`]).
const INBOUND_AT_ONCE: usize = 32;

/// A peer's event payload to hold on its own ([`Hold::Each`]), `frame_len` being the length of
/// the frame it is a slice of. A slice keeps its whole frame in memory but would count only
/// its own length: a payload that is not most of its frame (an event joined with others, or
/// next to bytes the node skipped) is copied out, so that what is held is what is counted.
fn unpinned(payload: bytes::Bytes, frame_len: usize) -> bytes::Bytes {
    if frame_len > payload.len().saturating_mul(2).saturating_add(64) {
        bytes::Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// A peer's frame of events, from one of them on.
struct FrameCursor {
    /// The index in the frame of the event at `at`.
    index: usize,
    /// That event's payload; `None` past the frame's last.
    at: Option<bytes::Bytes>,
    /// The payloads after it.
    more: MorePayloads,
}

impl FrameCursor {
    /// The event at the cursor, its index and payload; the cursor moves to the next.
    fn take(&mut self) -> Option<(usize, bytes::Bytes)> {
        let payload = self.at.take()?;
        let index = self.index;
        self.index = index.saturating_add(1);
        self.at = self.more.next();
        Some((index, payload))
    }

    /// Moves to the event at `index` (or past the last), skipping those before it.
    fn skip_to(&mut self, index: usize) {
        while self.index < index && self.take().is_some() {}
    }
}

/// The subscriptions a peer's frame of events still has to reach one event at a time, each
/// from the index of its first event not queued as a run, in that order.
#[derive(Default)]
struct Behind {
    subs: Vec<Arc<Subscription>>,
    from: Vec<usize>,
}

impl Behind {
    fn push(&mut self, sub: &Arc<Subscription>, from: usize) {
        self.subs.push(sub.clone());
        self.from.push(from);
    }

    /// Orders them by where they start (subscriptions starting together keep their order).
    fn sort(&mut self) {
        if self.from.is_sorted() {
            return;
        }
        let mut both: Vec<_> = self.subs.drain(..).zip(self.from.drain(..)).collect();
        both.sort_by_key(|(_, from)| *from);
        (self.subs, self.from) = both.into_iter().unzip();
    }

    /// The subscriptions the frame's event at `index` goes to one at a time.
    fn at(&self, index: usize) -> &[Arc<Subscription>] {
        let reached = self.from.partition_point(|from| *from <= index);
        self.subs.get(..reached).unwrap_or_default()
    }
}

/// Where a peer's events of one frame go: checked once for all of them.
struct InboundRoute {
    topic: Arc<str>,
    /// The length of the frame the payloads are slices of.
    frame_len: usize,
    /// The frame, held once while it fits the node's bound; past it, each event copied out
    /// of the frame and held on its own.
    held: Hold,
    targets: crate::node::registry::Subscriptions,
    peer: crate::identity::NodeId,
    retained: bool,
    metadata: Metadata,
    wait: Wait,
}

/// The deliveries of an event that found their queues full, waiting for room
/// ([`Node::wait_for_room`]).
struct Crowded {
    topic: Arc<str>,
    full_local: Vec<(Arc<Subscription>, Event)>,
    full_peers: Vec<(Arc<dyn EventSink>, OutboundEvent)>,
    wait: Wait,
}

/// The peers an event goes to, each with the ids of its subscriptions there, in the order
/// of their first subscription: nearly always one peer, held without allocating.
#[derive(Default)]
struct ByPeer<'a> {
    first: Option<(&'a Arc<dyn EventSink>, SubscriptionIds)>,
    more: Vec<(&'a Arc<dyn EventSink>, SubscriptionIds)>,
}

impl<'a> ByPeer<'a> {
    /// Adds the peer's subscription `id`.
    fn add(&mut self, sink: &'a Arc<dyn EventSink>, id: u64) {
        let Some(first) = &mut self.first else {
            self.first = Some((sink, SubscriptionIds::One(id)));
            return;
        };
        let known = std::iter::once(first)
            .chain(self.more.iter_mut())
            .find(|(s, _)| Arc::ptr_eq(s, sink));
        match known {
            Some((_, ids)) => ids.push(id),
            None => self.more.push((sink, SubscriptionIds::One(id))),
        }
    }

    /// How many peers, if any.
    fn count(&self) -> Option<usize> {
        self.first
            .as_ref()
            .map(|_| self.more.len().saturating_add(1))
    }

    fn into_iter(self) -> impl Iterator<Item = (&'a Arc<dyn EventSink>, SubscriptionIds)> {
        self.first.into_iter().chain(self.more)
    }
}

/// How long a delivery waits, at most, for room in full queues.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// A local publish: its options' wait, or [`NodeConfig::publish_wait`](crate::NodeConfig).
    Publisher(Duration),
    /// An event from a peer: what is left of each subscription's budget of
    /// [`NodeConfig::peer_event_wait`](crate::NodeConfig) (see `SubscriptionCounters::stalled`).
    Peer(Duration),
}

impl Wait {
    fn duration(self) -> Duration {
        match self {
            Wait::Publisher(wait) | Wait::Peer(wait) => wait,
        }
    }
}

/// Runs `sending` until `deadline` (`None`: for as long as it takes); `None` when the deadline
/// passed first.
async fn until<F: Future>(deadline: Option<tokio::time::Instant>, sending: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, sending).await.ok(),
        None => Some(sending.await),
    }
}

/// True for a topic or pattern in a namespace local to each node (its first segment starts
/// with `$`, as in `$registry/…`): never sent to peers, never accepted from them, and never
/// announced to them.
pub(crate) fn is_local_only(path: &str) -> bool {
    path.starts_with('$')
}

/// The rate limit of the debug line for ignored subscription ids in peers' events.
static INBOUND_IGNORED: crate::network::log_limit::LogLimit =
    crate::network::log_limit::LogLimit::new(10);

/// At most the first 80 characters of `text`, for logging what a peer sent.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((end, _)) => text.get(..end).unwrap_or(text),
        None => text,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::unpinned;

    /// Whether `part` lies in `whole`'s memory.
    fn within(part: &Bytes, whole: &Bytes) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn a_payload_small_against_its_frame_is_copied_out_of_it() {
        // A 2-byte event beside 200 KiB the node skipped: copied, the frame let go.
        let frame = Bytes::from(vec![7u8; 200 * 1024]);
        let small = unpinned(frame.slice(10..12), frame.len());
        assert!(!within(&small, &frame));
        assert_eq!(&small[..], &[7, 7]);
        // One of a hundred joined events: copied too.
        let joined = Bytes::from(vec![1u8; 100 * 70]);
        assert!(!within(
            &unpinned(joined.slice(0..64), joined.len()),
            &joined
        ));
        // The event that is (most of) its frame stays a slice: no copy of a large payload.
        let large = Bytes::from(vec![3u8; 64 * 1024]);
        let payload = unpinned(large.slice(20..), large.len());
        assert!(within(&payload, &large));
        let tiny = Bytes::from(vec![3u8; 40]);
        assert!(within(&unpinned(tiny.slice(30..), tiny.len()), &tiny));
    }
}
