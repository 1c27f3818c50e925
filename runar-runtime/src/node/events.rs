//! The event path: publish to matching subscriptions, per-subscription queues, retained events.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::mpsc;

use super::request::panic_message;
use super::{Node, NodeInner, PublishOptions, SubscribeOptions, SubscriptionId};
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::network::{EventSink, InboundEvent, OutboundEvent};
use crate::node::BroadcastMode;
use crate::node::registry::{Event, Origin, Sink, Subscription};
use crate::routing::{Segment, TopicPath, split_concrete};
use crate::node::service::{Caller, EventContext, EventHandler, event_handler};
use crate::value::{Payload, Value};

/// The latest retained event per (network, topic).
pub(super) type RetainedStore = HashMap<Arc<str>, HashMap<Arc<str>, Retained>>;

pub(super) struct Retained {
    value: Arc<Value>,
    publisher: Caller,
    expires: Instant,
}

impl Node {
    /// Publishes `event` on the concrete topic `path` to every matching subscription.
    ///
    /// Each subscription has its own queue, so one subscriber sees a publisher's events in
    /// order; when a queue is full the publisher waits for that subscriber.
    pub async fn publish<T: Payload>(&self, path: impl AsRef<str>, event: T) -> Result<()> {
        self.publish_with(path, event, PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options: broadcast mode and retention.
    pub async fn publish_with<T: Payload>(
        &self,
        path: impl AsRef<str>,
        event: T,
        options: PublishOptions,
    ) -> Result<()> {
        self.publish_value(path, Value::new(event), options).await
    }

    /// The dynamic form of [`publish_with`](Self::publish_with).
    pub async fn publish_value(
        &self,
        path: impl AsRef<str>,
        event: Value,
        options: PublishOptions,
    ) -> Result<()> {
        self.check_not_stopped()?;
        let (topic_network, topic) = split_concrete(path.as_ref())?;
        let network = topic_network.unwrap_or(&self.inner.network);
        let segments: Vec<&str> = topic.split('/').collect();
        let topic_path: Arc<str> = topic.into();
        let value = Arc::new(event);
        if let Some(ttl) = options.retain_for {
            let mut store = lock(&self.inner.retained);
            let now = Instant::now();
            let per_network = store.entry(network.into()).or_default();
            per_network.retain(|_, r| r.expires > now);
            per_network.insert(
                topic_path.clone(),
                Retained {
                    value: value.clone(),
                    publisher: Caller::Local,
                    expires: now + ttl,
                },
            );
        }
        let mut targets = self
            .inner
            .registry
            .matching_subscriptions(network, &segments);
        self.select_targets(&mut targets, options.broadcast);
        let network: Arc<str> = match topic_network {
            Some(named) => named.into(),
            None => self.inner.network.clone(),
        };
        self.deliver(&network, topic_path, value, Caller::Local, false, &targets)
            .await;
        Ok(())
    }

    /// Hands an event to `targets`: local queues get the value itself; each peer gets one
    /// message naming its subscriptions, with the payload encoded once for all peers.
    pub(crate) async fn deliver(
        &self,
        network: &Arc<str>,
        topic: Arc<str>,
        value: Arc<Value>,
        publisher: Caller,
        retained: bool,
        targets: &[Arc<Subscription>],
    ) {
        let mut peers: Vec<(&Arc<dyn EventSink>, Vec<u64>)> = Vec::new();
        for sub in targets {
            match &sub.sink {
                Sink::Local(queue) => {
                    let event = Event {
                        topic: topic.clone(),
                        value: value.clone(),
                        publisher: publisher.clone(),
                        retained,
                    };
                    // A closed queue means the subscription just ended: nothing to deliver to.
                    let _ = queue.send(event).await;
                }
                Sink::Remote { sink, remote_id } => {
                    match peers.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sink)) {
                        Some((_, ids)) => ids.push(*remote_id),
                        None => peers.push((sink, vec![*remote_id])),
                    }
                }
            }
        }
        if peers.is_empty() {
            return;
        }
        let payload = value.to_bytes();
        for (sink, subscription_ids) in peers {
            let event = OutboundEvent {
                network: network.clone(),
                topic: topic.clone(),
                payload: payload.clone(),
                subscription_ids,
                retained,
            };
            // Waits only when the peer's queue is full; a peer that is gone just left.
            if let Err(Some(event)) = sink.try_send(event) {
                sink.send(event).await;
            }
        }
    }

    /// Delivers an event that arrived from a peer to the local subscriptions it names (those
    /// that still exist and match its topic).
    pub(crate) async fn deliver_inbound(&self, event: InboundEvent) {
        let peer = event.from;
        let segments: Vec<&str> = event.topic.split('/').collect();
        let targets: Vec<Arc<Subscription>> = event
            .subscription_ids
            .iter()
            .filter_map(|id| self.inner.registry.subscription(SubscriptionId(*id)))
            .filter(|sub| matches!(sub.sink, Sink::Local(_)) && sub.pattern.matches(&segments))
            .collect();
        if targets.len() < event.subscription_ids.len() {
            tracing::debug!(%peer, topic = %event.topic, "event for unknown or non-matching subscriptions");
        }
        if targets.is_empty() {
            return;
        }
        let network: Arc<str> = event.network.as_str().into();
        let value = Arc::new(Value::from_encoded(event.payload));
        self.deliver(
            &network,
            event.topic.into(),
            value,
            Caller::Remote(peer),
            event.retained,
            &targets,
        )
        .await;
    }

    /// Narrows `targets` to what the broadcast mode asks for.
    fn select_targets(&self, targets: &mut Vec<Arc<Subscription>>, mode: BroadcastMode) {
        match mode {
            BroadcastMode::All => {}
            BroadcastMode::LocalOnly => targets.retain(|s| s.origin == Origin::Local),
            BroadcastMode::OnePerService => {
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
                *targets = chosen;
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
        self.subscribe_raw(pattern.as_ref(), options, None, event_handler(handler))
            .await
    }

    /// Subscribes with a type-erased handler; `group` is the owning service's path.
    pub(crate) async fn subscribe_raw(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        group: Option<Arc<str>>,
        handler: EventHandler,
    ) -> Result<SubscriptionId> {
        self.check_not_stopped()?;
        let pattern = TopicPath::parse(pattern)?;
        let network: Arc<str> = pattern.network().unwrap_or(&self.inner.network).into();
        let id = self.next_subscription_id();
        let (queue, events) = mpsc::channel(self.inner.config.event_queue_capacity);
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
            pattern.clone(),
            handler,
            events,
            active.clone(),
        ));
        self.inner.registry.add_subscription(
            &network,
            Arc::new(Subscription {
                id,
                pattern,
                group,
                origin: Origin::Local,
                sink: Sink::Local(queue),
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
                value: r.value.clone(),
                publisher: r.publisher.clone(),
                retained: true,
            })
            .collect()
    }
}

/// Delivers a subscription's events to its handler, one at a time, in order.
async fn run_subscription(
    node: Weak<NodeInner>,
    pattern: TopicPath,
    handler: EventHandler,
    mut events: mpsc::Receiver<Event>,
    active: Arc<AtomicBool>,
) {
    let templated = pattern
        .segments()
        .iter()
        .any(|s| matches!(s, Segment::Param(_)));
    while let Some(event) = events.recv().await {
        if !active.load(Ordering::Acquire) {
            break;
        }
        let Some(inner) = node.upgrade() else {
            break;
        };
        let params = if templated {
            let segments: Vec<&str> = event.topic.split('/').collect();
            pattern.params(&segments).unwrap_or_default()
        } else {
            Default::default()
        };
        let topic = event.topic.clone();
        let ctx = EventContext::new(
            Node::from_inner(inner),
            event.topic,
            params,
            event.publisher,
            event.retained,
        );
        match AssertUnwindSafe(handler(event.value, ctx))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%topic, %pattern, error = %e, "event handler failed"),
            Err(panic) => tracing::error!(
                %topic, %pattern, panic = panic_message(panic.as_ref()), "event handler panicked"
            ),
        }
    }
}
