//! The node's side of the network: it implements the mesh's [`NodeHandler`], turns what peers
//! offer into remote action instances and subscriptions in the registry (diffed per connection),
//! and removes them when a connection goes.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use rustc_hash::{FxHashMap, FxHashSet};

use super::events::is_local_only;
use super::{Node, NodeInner, SubscriptionId};
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::lock::lock;
use crate::network::log_limit::warn_limited;
use crate::network::{
    EventSink, InboundEvent, InboundRequest, InboundStream, MessageStream, NodeHandler, Offer,
    OutboundEvent, PeerChange, PeerHandle, PeerLink, PeerNotice, PeerOffer, PeerRefusal,
    StreamBuffer, SubscriptionIds, Text, value_messages,
};
use crate::node::registry::{ActionInstance, Origin, Sink, Subscription};
use crate::node::service::{ActionHandler, CallKind, RawStreaming, RequestContext, StreamHandler};
use crate::routing::{PathLimits, TopicPath};
use crate::value::Value;
use crate::value::types::{MessageTypes, types_in};
use crate::wire;

/// The node as the mesh of one of its networks sees it. Weak, so that the mesh's tasks do not
/// keep a dropped node alive.
///
/// Everything crossing it is confined to its network: a peer's requests, events, services and
/// subscriptions are taken as this network's (one naming another is refused), and the peer is
/// offered this network's services and subscriptions only.
#[derive(Clone)]
pub(crate) struct NodeLink {
    node: Weak<NodeInner>,
    network: Arc<str>,
}

impl NodeLink {
    pub(super) fn new(node: &Node, network: Arc<str>) -> NodeLink {
        NodeLink {
            node: Arc::downgrade(&node.inner),
            network,
        }
    }

    fn node(&self) -> Option<Node> {
        self.node.upgrade().map(Node::from_inner)
    }
}

impl NodeHandler for NodeLink {
    fn is_alive(&self) -> bool {
        self.node.strong_count() > 0
    }

    fn serve(
        &self,
        mut request: InboundRequest,
    ) -> impl Future<Output = Result<Value>> + Send + 'static {
        use futures::future::Either;
        if !in_network(&mut request.network, &self.network) {
            // As if it did not exist: this connection's network has no such action.
            let network = &self.network;
            return Either::Left(std::future::ready(Err(Error::not_found(format!(
                "no action `{}` in network `{network}`",
                shorten(&request.path)
            )))));
        }
        match self.node() {
            Some(node) => Either::Right(node.serve_remote(request)),
            None => Either::Left(std::future::ready(Err(Error::unavailable(
                "the node has stopped",
            )))),
        }
    }

    fn serve_stream(
        &self,
        mut stream: InboundStream,
    ) -> impl Future<Output = Result<MessageStream>> + Send {
        let node = self.node();
        let network = self.network.clone();
        async move {
            if !in_network(&mut stream.network, &network) {
                // As if it did not exist: this connection's network has no such action.
                return Err(Error::not_found(format!(
                    "no action `{}` in network `{network}`",
                    shorten(&stream.path)
                )));
            }
            match node {
                Some(node) => node.serve_remote_stream(stream).await,
                None => Err(Error::unavailable("the node has stopped")),
            }
        }
    }

    fn stream_buffer(&self) -> StreamBuffer {
        self.node().map_or(StreamBuffer::new(1, 1), |node| {
            node.config().stream_buffers()
        })
    }

    fn deliver(&self, event: InboundEvent) -> Option<futures::future::BoxFuture<'static, ()>> {
        let node = self.node()?;
        let network = &self.network;
        if !event_in_network(&event.network, network) {
            warn_limited!(peer = %event.from, %network, "event for another network refused");
            // Counted as an event naming none of this node's subscriptions in its network
            // would be: one rejection per id it names (at least one).
            let counters = &node.inner.counters;
            let named = u64::try_from(event.subscription_ids.len()).unwrap_or(u64::MAX);
            let events = u64::try_from(event.more.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            super::stats::count(&counters.received, events);
            super::stats::count(&counters.rejected, named.max(1).saturating_mul(events));
            return None;
        }
        node.deliver_inbound(event, network)
    }

    fn offer(&self, peer: &NodeId) -> Offer {
        self.node()
            .map(|node| node.offer_for(&self.network, peer, node.offer(&self.network)))
            .unwrap_or_default()
    }

    fn peer_offers(&self, peer: &PeerHandle, mut offer: PeerOffer) {
        if let Some(node) = self.node() {
            // A peer offers in this connection's network only: entries naming another are
            // dropped, so no peer can reach into another network of this node.
            let network = &self.network;
            let before = offer.offer.services.len() + offer.offer.subscriptions.len();
            offer
                .offer
                .services
                .retain_mut(|s| in_network(&mut s.network, network));
            offer
                .offer
                .subscriptions
                .retain_mut(|s| in_network(&mut s.network, network));
            if offer.offer.services.len() + offer.offer.subscriptions.len() < before {
                warn_limited!(peer = %peer.id, %network, "peer announced services or subscriptions of another network: ignored");
            }
            if let Some(key) = peer.sealing_key {
                node.peer_sealing_key(peer.id, key);
            }
            node.apply_peer_offer(peer, offer);
        }
    }

    fn link_removed(&self, link: PeerLink) {
        if let Some(node) = self.node() {
            node.remove_link(link);
        }
    }

    fn peer_changed(&self, notice: PeerNotice<'_>) -> impl Future<Output = ()> + Send {
        let node = self.node();
        async move {
            if let Some(node) = node {
                if notice.change == PeerChange::Connected {
                    if let Some(address) = notice.addresses.first() {
                        node.peer_admitted(*address);
                    }
                }
                if notice.change == PeerChange::Disconnected {
                    node.peer_gone(&notice.peer);
                }
                if notice.change != PeerChange::Discovered {
                    // Listed or unlisted now: wake whoever waits for peers.
                    node.inner.registry.notify_changed();
                }
                let network = &*self.network;
                node.publish_peer_event(
                    network,
                    notice.peer,
                    notice.change,
                    notice.name,
                    notice.addresses,
                )
                .await;
            }
        }
    }

    fn peer_refused(&self, refusal: PeerRefusal<'_>) -> impl Future<Output = ()> + Send {
        let node = self.node();
        let PeerRefusal {
            address,
            peer,
            reason,
            detail,
        } = refusal;
        let detail = detail.to_owned();
        async move {
            if let Some(node) = node {
                node.peer_refused(address, peer, reason, &detail).await;
            }
        }
    }
}

/// True when what a peer sent names `network` (or no network, which then means `network`):
/// the connection's network is the only one a peer reaches.
fn in_network(named: &mut String, network: &str) -> bool {
    if named.is_empty() {
        named.push_str(network);
        return true;
    }
    named == network
}

/// [`in_network`] for an event's network, left in its frame (the node is told the network).
fn event_in_network(named: &Text, network: &str) -> bool {
    named.is_empty() || named.as_bytes() == network.as_bytes()
}

/// `path`, an action a peer announces, if the node may register it: exactly the checks a
/// local action passes (the path limits, no network prefix, no wildcards). The error quotes
/// only the start of a path over the length limit.
fn peer_action(path: &str, limits: PathLimits) -> Result<TopicPath> {
    TopicPath::parse_within(path, limits)
        .map_err(Error::from)
        .and_then(|p| super::action_pattern(p, "a peer's service"))
}

/// At most 64 characters of a peer's words, for a message.
pub(super) fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

/// What a peer link offers, as registered in this node's registry.
#[derive(Default)]
pub(crate) struct PeerView {
    version: u64,
    /// (network, action path).
    actions: FxHashSet<(Arc<str>, String)>,
    /// The peer's subscription id → this node's id for it (those the policy allows).
    subscriptions: FxHashMap<u64, SubscriptionId>,
    /// Every subscription the peer announces (allowed or not), parsed, by its id: checked
    /// again when the policy changes.
    announced: FxHashMap<u64, (wire::SubscriptionDescriptor, TopicPath)>,
    /// Where the peer's events go.
    sink: Option<Arc<dyn EventSink>>,
    /// The peer's id and the services it offers, as announced (see `reachable.rs`).
    pub(super) services: Option<(NodeId, Vec<wire::ServiceDescriptor>)>,
}

/// The peer an offer comes from, as the code that applies the offer needs it: a connection's
/// [`PeerHandle`] in a running node, a stand-in in the fuzz targets (`crate::fuzzing`), which so
/// run exactly the node's validation and registry updates.
pub(crate) trait OfferingPeer {
    /// The peer's id.
    fn peer_id(&self) -> NodeId;
    /// The connection the offer came over.
    fn peer_link(&self) -> PeerLink;
    /// True once the connection is superseded: its offers are ignored.
    fn retired(&self) -> bool;
    /// Where events for the peer's subscriptions go.
    fn event_sink(&self) -> &Arc<dyn EventSink>;
    /// A handler that serves an action in `network` by asking the peer.
    fn action_handler(&self, network: Arc<str>) -> ActionHandler;
    /// A handler that serves a streaming call in `network` with a stream to the peer.
    fn stream_handler(&self, network: Arc<str>) -> Option<StreamHandler> {
        let _ = network;
        None
    }
}

impl OfferingPeer for PeerHandle {
    fn peer_id(&self) -> NodeId {
        self.id
    }

    fn peer_link(&self) -> PeerLink {
        self.link
    }

    fn retired(&self) -> bool {
        self.is_retired()
    }

    fn event_sink(&self) -> &Arc<dyn EventSink> {
        self.events()
    }

    fn action_handler(&self, network: Arc<str>) -> ActionHandler {
        remote_action(self, network)
    }

    fn stream_handler(&self, network: Arc<str>) -> Option<StreamHandler> {
        Some(remote_stream(self, network))
    }
}

/// A [`StreamHandler`] that serves a streaming call with a stream to `peer`: it returns once
/// the stream is open and its header written.
fn remote_stream(peer: &PeerHandle, network: Arc<str>) -> StreamHandler {
    let peer = peer.clone();
    Arc::new(move |requests: RawStreaming, ctx: RequestContext| {
        let peer = peer.clone();
        let network = network.clone();
        Box::pin(async move {
            let timeout = super::stream::finite(ctx.remaining());
            let node = ctx.node();
            let buffer = node.config().stream_buffers();
            // Sealed as they are written for the peer; the replies opened as they are read.
            let replies = peer
                .open_stream(
                    &network,
                    ctx.path(),
                    node.sealed_messages(Box::pin(requests)),
                    timeout,
                    ctx.metadata(),
                    buffer,
                )
                .await?;
            Ok(value_messages(node.sealed_stream(replies)))
        })
    })
}

/// An [`ActionHandler`] that serves an action by asking `peer`.
fn remote_action(peer: &PeerHandle, network: Arc<str>) -> ActionHandler {
    // One `Arc` for both, so a call copies one handle, not two.
    let target = Arc::new((peer.clone(), network));
    Arc::new(move |value: Value, ctx: RequestContext| {
        let target = target.clone();
        Box::pin(async move {
            let (peer, network) = &*target;
            let (span, traced) = super::trace::client_span(ctx.path(), peer.id, ctx.metadata());
            let metadata = traced.as_ref().unwrap_or(ctx.metadata());
            let node = ctx.node();
            let value = node.sealed_scope(value);
            // The request future made where it is awaited: made first and awaited after, it
            // would be copied into the await's slot.
            let answer = if span.is_disabled() {
                peer.request(network, ctx.path(), &value, ctx.remaining(), metadata)
                    .await
            } else {
                let request = peer.request(network, ctx.path(), &value, ctx.remaining(), metadata);
                tracing::Instrument::instrument(request, span).await
            };
            answer.map(|value| node.sealed_scope(value))
        })
    })
}

impl Node {
    /// What this node offers its peers in `network`: that network's running services and
    /// local subscriptions (except those to local-only topics, such as `$registry/…`, which
    /// peers never send).
    pub(crate) fn offer(&self, network: &str) -> Offer {
        let subscriptions = self
            .inner
            .registry
            .local_subscriptions()
            .into_iter()
            .filter(|(n, sub)| &**n == network && !is_local_only(sub.pattern.path()))
            .map(|(network, sub)| wire::SubscriptionDescriptor {
                id: sub.id.0,
                network: network.to_string(),
                pattern: sub.pattern.path().to_owned(),
                group: sub.group.as_deref().unwrap_or_default().to_owned(),
                include_past: sub.include_past,
            })
            .collect();
        Offer {
            services: self.catalog(network),
            subscriptions,
        }
    }

    /// Removes everything learned over `link`.
    pub(crate) fn remove_link(&self, link: PeerLink) {
        let mut views = lock(&self.inner.remote_views);
        views.remove(&link);
        self.inner.registry.remove_link(link);
    }

    /// Registers what `peer` offers, diffed against what it offered before over the same link.
    /// An offer older than the last one applied, or for a superseded connection, is ignored.
    pub(crate) fn apply_peer_offer(&self, peer: &impl OfferingPeer, offer: PeerOffer) {
        // Held throughout: a link's removal waits for its registration, never the reverse.
        let mut views = lock(&self.inner.remote_views);
        if peer.retired() {
            return;
        }
        let view = views.entry(peer.peer_link()).or_default();
        if offer.version <= view.version {
            return;
        }
        view.version = offer.version;
        view.services = Some((
            peer.peer_id(),
            self.callable_services(&offer.offer.services),
        ));
        self.apply_actions(peer, view, &offer.offer);
        self.apply_subscriptions(peer, view, &offer.offer);
    }

    /// A peer's services as the node lists them ([`Node::reachable_services`], which the gRPC
    /// gateway routes by): only the actions the node registers ([`peer_action`]), and no
    /// service whose path names a network.
    fn callable_services(
        &self,
        services: &[wire::ServiceDescriptor],
    ) -> Vec<wire::ServiceDescriptor> {
        let limits = self.inner.config.path_limits();
        services
            .iter()
            .filter(|service| !service.path.contains(':'))
            .map(|service| wire::ServiceDescriptor {
                actions: service
                    .actions
                    .iter()
                    .filter(|action| peer_action(action, limits).is_ok())
                    .cloned()
                    .collect(),
                ..service.clone()
            })
            .collect()
    }

    /// Adds the actions `peer` newly offers and removes the ones it no longer does.
    fn apply_actions(&self, peer: &impl OfferingPeer, view: &mut PeerView, offer: &Offer) {
        let registry = &self.inner.registry;
        let limits = self.inner.config.path_limits();
        let origin = Origin::Remote(peer.peer_link());
        // One shared copy of each service's network name (the announcement's sizes are checked
        // by the network before it gets here), not one per action.
        let actions: FxHashSet<(Arc<str>, String)> = offer
            .services
            .iter()
            .flat_map(|s| {
                let network: Arc<str> = s.network.as_str().into();
                s.actions.iter().map(move |a| (network.clone(), a.clone()))
            })
            .collect();
        for (network, path) in view.actions.difference(&actions) {
            if let Ok(pattern) = TopicPath::parse_within(path, limits) {
                registry.remove_action(network, &pattern, &origin);
            }
        }
        // Each service's schema, decoded once, names its actions' message types.
        let mut schemas: FxHashMap<(&str, &str), Option<prost_types::FileDescriptorProto>> =
            FxHashMap::default();
        let owners: FxHashMap<(&str, &str), &wire::ServiceDescriptor> = offer
            .services
            .iter()
            .flat_map(|s| {
                s.actions
                    .iter()
                    .map(move |a| ((s.network.as_str(), a.as_str()), s))
            })
            .collect();
        for (network, path) in actions.difference(&view.actions) {
            let types = owners.get(&(network, path.as_str())).and_then(|service| {
                let action = path.strip_prefix(&service.path)?.strip_prefix('/')?;
                let key = (service.network.as_str(), service.path.as_str());
                let schema = schemas
                    .entry(key)
                    .or_insert_with(|| prost::Message::decode(service.schema.clone()).ok());
                let (request, response) = types_in(schema.as_ref()?, &service.name, action)?;
                Some(Arc::new(MessageTypes {
                    request,
                    response,
                    request_rust: None,
                    request_alias: None,
                }))
            });
            let pattern = match peer_action(path, limits) {
                Ok(p) => p,
                Err(error) => {
                    warn_limited!(peer = %peer.peer_id(), %error, "peer announced an invalid action");
                    continue;
                }
            };
            let instance = ActionInstance {
                origin,
                handler: peer.action_handler(network.clone()),
                health: Default::default(),
                types,
                kind: CallKind::Unary,
                stream: peer.stream_handler(network.clone()),
                stats: None,
            };
            if let Err(e) = registry.add_action(network, pattern, instance) {
                warn_limited!(peer = %peer.peer_id(), error = %e, "remote action not registered");
            }
        }
        view.actions = actions;
    }

    /// Adds the subscriptions `peer` newly announces that the network's policy allows
    /// (replaying retained events to those that ask for them), and removes the ones it no
    /// longer announces. A denied one is kept aside, checked again when the policy changes.
    fn apply_subscriptions(&self, peer: &impl OfferingPeer, view: &mut PeerView, offer: &Offer) {
        let registry = &self.inner.registry;
        let limits = self.inner.config.path_limits();
        let announced: FxHashMap<u64, &wire::SubscriptionDescriptor> =
            offer.subscriptions.iter().map(|s| (s.id, s)).collect();
        let gone: Vec<u64> = view
            .subscriptions
            .keys()
            .filter(|id| !announced.contains_key(id))
            .copied()
            .collect();
        for remote_id in gone {
            if let Some(local) = view.subscriptions.remove(&remote_id) {
                registry.remove_subscription(local);
            }
        }
        view.announced.retain(|id, _| announced.contains_key(id));
        view.sink = Some(peer.event_sink().clone());
        for (remote_id, descriptor) in announced {
            if view.subscriptions.contains_key(&remote_id)
                || view.announced.contains_key(&remote_id)
            {
                continue;
            }
            let pattern = match TopicPath::parse_within(&descriptor.pattern, limits) {
                Ok(p) if p.network().is_none() => p,
                outcome => {
                    let error =
                        outcome.map_or_else(|e| e.to_string(), |_| "names a network".into());
                    warn_limited!(peer = %peer.peer_id(), %error, "peer announced an invalid subscription");
                    continue;
                }
            };
            view.announced
                .insert(remote_id, (descriptor.clone(), pattern.clone()));
            if !self.may_subscribe(&descriptor.network, &peer.peer_id(), &pattern) {
                continue;
            }
            let sink = peer.event_sink();
            let id = self.add_remote_subscription(peer.peer_link(), sink, descriptor, pattern);
            view.subscriptions.insert(remote_id, id);
        }
    }

    /// Registers a peer's subscription (allowed by the policy) and replays retained events to
    /// it if it asks for them.
    fn add_remote_subscription(
        &self,
        link: PeerLink,
        sink: &Arc<dyn EventSink>,
        descriptor: &wire::SubscriptionDescriptor,
        pattern: TopicPath,
    ) -> SubscriptionId {
        let id = self.next_subscription_id();
        let subscription = Arc::new(Subscription {
            id,
            pattern: pattern.clone(),
            group: (!descriptor.group.is_empty()).then(|| descriptor.group.as_str().into()),
            origin: Origin::Remote(link),
            sink: Sink::Remote {
                sink: sink.clone(),
                remote_id: descriptor.id,
            },
            include_past: descriptor.include_past,
            active: Arc::new(AtomicBool::new(true)),
        });
        self.inner
            .registry
            .add_subscription(&descriptor.network, subscription);
        if descriptor.include_past {
            self.replay_retained(sink, descriptor, &pattern);
        }
        id
    }

    /// Checks every peer subscription in `network` against its (new) policy: one now denied
    /// is removed (nothing more is sent for it), one now allowed is registered.
    pub(super) fn recheck_subscriptions(&self, network: &str) {
        let mut views = lock(&self.inner.remote_views);
        for (link, view) in views.iter_mut() {
            let Some(sink) = view.sink.clone() else {
                continue;
            };
            for (remote_id, (descriptor, pattern)) in &view.announced {
                if descriptor.network != network {
                    continue;
                }
                let allowed = self.may_subscribe(network, &link.node, pattern);
                match view.subscriptions.get(remote_id) {
                    Some(local) if !allowed => {
                        self.inner.registry.remove_subscription(*local);
                        view.subscriptions.remove(remote_id);
                    }
                    None if allowed => {
                        let id =
                            self.add_remote_subscription(*link, &sink, descriptor, pattern.clone());
                        view.subscriptions.insert(*remote_id, id);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends the retained events `pattern` matches to the peer's new subscription, as far as
    /// its event queue has room.
    fn replay_retained(
        &self,
        sink: &Arc<dyn EventSink>,
        descriptor: &wire::SubscriptionDescriptor,
        pattern: &TopicPath,
    ) {
        for event in self.retained_matching(&descriptor.network, pattern) {
            if is_local_only(&event.topic) {
                continue;
            }
            let retained = OutboundEvent {
                network: descriptor.network.as_str().into(),
                topic: event.topic,
                payload: self.encode_for_peers(event.value.get()),
                subscription_ids: SubscriptionIds::One(descriptor.id),
                retained: true,
                metadata: event.metadata,
            };
            if sink.try_send(&retained.borrowed()).is_err() {
                warn_limited!(peer = %sink.peer(), "retained events dropped: the peer's event queue is full");
                break;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Instant;

    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::discovery::DiscoveryOptions;
    use crate::network::{NetworkConfig, NetworkKey};
    use crate::node::NodeConfig;

    fn free_port() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn two_nodes_dialing_each_other_at_once_keep_one_connection() {
        let key = NetworkKey::from_secret("simultaneous");
        for round in 0..5 {
            let (addr_a, addr_b) = (free_port(), free_port());
            let config = |bind: SocketAddr, peer: SocketAddr| {
                NodeConfig::new("n", "test").with_network_config(
                    NetworkConfig::default()
                        .with_bind_address(bind)
                        .with_key(key.clone())
                        .with_discovery(DiscoveryOptions::static_peers([peer])),
                )
            };
            let a = Node::new(config(addr_a, addr_b)).await.unwrap();
            let b = Node::new(config(addr_b, addr_a)).await.unwrap();
            let (ra, rb) = tokio::join!(a.start(), b.start());
            ra.unwrap();
            rb.unwrap();
            let (ma, mb) = (a.mesh().unwrap(), b.mesh().unwrap());
            wait_for("one connection each way", || {
                a.peers() == [b.node_id()]
                    && b.peers() == [a.node_id()]
                    && ma.connection_count() == 1
                    && mb.connection_count() == 1
            })
            .await;
            // Both kept the connection dialed by the smaller id.
            let preferred = a.node_id().min(b.node_id());
            let da = ma.dialer_of(&b.node_id()).unwrap();
            let db = mb.dialer_of(&a.node_id()).unwrap();
            assert_eq!((da, db), (preferred, preferred), "round {round}");
            a.stop().await.unwrap();
            b.stop().await.unwrap();
        }
    }
}
