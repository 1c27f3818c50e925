//! The [`Node`]: hosts services, routes requests and events.

mod config;
mod events;
#[cfg(any(feature = "metrics", feature = "prometheus"))]
mod exporter;
pub(crate) mod introspection;
mod readiness;
pub(crate) mod registry;
mod registry_events;
mod remote;
mod request;
pub(crate) mod service;
mod stats;
mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::node::registry::SubscriptionId;
pub use config::{BroadcastMode, NodeConfig, PublishOptions, RequestOptions, SubscribeOptions};
#[cfg(feature = "prometheus")]
pub use exporter::PrometheusOptions;
pub use readiness::PeerRefusedEvent;
pub use registry_events::{PeerEvent, ServiceEvent};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use remote::OfferingPeer;
pub use stats::{NodeStats, SubscriptionStats};

use crate::error::{Error, Result};
use crate::identity::{NodeId, NodeKeypair};
use crate::lock::lock;
use crate::network::{Mesh, MeshSettings, NetworkKey, PeerLink};
use crate::node::registry::{ActionInstance, Origin, Registry};
use crate::node::service::context::Registrations;
use crate::node::service::{
    AbstractService, ActionHandler, DynService, LifecycleContext, ServiceInfo, ServiceState,
};
use crate::routing::{Segment, TopicPath, split_network};
use crate::value::types::MessageTypes;
use crate::wire;

const CREATED: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

/// A Runar node: hosts services and routes every request and event to a handler.
///
/// `Node` is a cheap handle (an `Arc`): clone it freely; every clone is the same node.
///
/// ```
/// use runar_runtime::{Node, NodeConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> runar_runtime::Result<()> {
/// let node = Node::new(NodeConfig::new("node-a", "demo")).await?;
/// node.start().await?;
/// let sub = node.subscribe("greetings/>", |text: String, ctx| async move {
///     println!("{} says {text}", ctx.topic());
///     Ok(())
/// }).await?;
/// node.publish("greetings/en", String::from("hello")).await?;
/// node.unsubscribe(sub).await?;
/// node.stop().await
/// # }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub(crate) struct NodeInner {
    config: NodeConfig,
    keypair: Arc<NodeKeypair>,
    node_id: NodeId,
    network: Arc<str>,
    /// The node's connections, once started with a network configuration.
    mesh: Mutex<Option<Arc<Mesh<remote::NodeLink>>>>,
    /// What each peer link offered, as registered here.
    remote_views: Mutex<rustc_hash::FxHashMap<PeerLink, remote::PeerView>>,
    /// The running services as peers see them, by path.
    catalog: Mutex<BTreeMap<Arc<str>, wire::ServiceDescriptor>>,
    registry: Registry,
    services: tokio::sync::Mutex<Vec<ServiceEntry>>,
    state: AtomicU8,
    retained: Mutex<events::RetainedStore>,
    next_subscription: AtomicU64,
    /// Requests with peers still in flight when `stop` ended its grace period.
    dropped_at_stop: AtomicU64,
    /// Peers whose handshakes were refused, and why.
    refusals: Mutex<readiness::Refusals>,
    /// What became of the node's events (see [`NodeStats`]).
    counters: stats::NodeCounters,
    /// When the node was created (its uptime, for introspection).
    created: std::time::Instant,
}

impl Drop for NodeInner {
    /// The last handle is gone without `stop`: leave the network as `stop` would, without
    /// waiting (goodbyes queued, connections closed, the endpoint and discovery stopped), so
    /// that no socket or task outlives the node.
    fn drop(&mut self) {
        let mesh = lock(&self.mesh).take();
        if let Some(mesh) = mesh {
            mesh.stop_now();
        }
    }
}

struct ServiceEntry {
    service: Arc<dyn DynService>,
    path: Arc<str>,
    state: ServiceState,
    registrations: Arc<Mutex<Registrations>>,
}

impl Node {
    /// Creates a node. It serves nothing until [`start`](Self::start).
    pub async fn new(config: NodeConfig) -> Result<Node> {
        let network = &config.default_network;
        if network.is_empty()
            || !matches!(split_network(network), Ok((None, _)))
            || network.contains('/')
        {
            return Err(Error::invalid_argument(format!(
                "invalid default network `{network}`: use a non-empty name without `:` or `/`"
            )));
        }
        if config.event_queue_capacity == 0 {
            return Err(Error::invalid_argument(
                "event_queue_capacity must be at least 1",
            ));
        }
        if config.max_path_len == 0 || config.max_path_depth == 0 {
            return Err(Error::invalid_argument(
                "max_path_len and max_path_depth must be at least 1",
            ));
        }
        if config.request_timeout.is_zero() {
            return Err(Error::invalid_argument(
                "request_timeout must be more than zero",
            ));
        }
        if let Some(network) = &config.network {
            network.validate()?;
        }
        if let Some(network) = &config.network
            && network.key.is_none()
            && !network.insecure_dev_key
        {
            return Err(Error::invalid_argument(format!(
                "network `{}` has no key: set one with NetworkConfig::with_key \
                 (NetworkKey::from_secret or from_bytes), or opt into an insecure key derived \
                 from the network name with NetworkConfig::with_insecure_dev_key()",
                config.default_network
            )));
        }
        let keypair = match config
            .network
            .as_ref()
            .and_then(|n| n.keypair_path.as_ref())
        {
            Some(path) => NodeKeypair::load_or_generate(path)?,
            None => NodeKeypair::generate()?,
        };
        Ok(Node {
            inner: Arc::new(NodeInner {
                node_id: keypair.node_id(),
                keypair: Arc::new(keypair),
                mesh: Mutex::default(),
                remote_views: Mutex::default(),
                catalog: Mutex::default(),
                network: network.as_str().into(),
                config,
                registry: Registry::default(),
                services: tokio::sync::Mutex::new(Vec::new()),
                state: AtomicU8::new(CREATED),
                retained: Mutex::default(),
                next_subscription: AtomicU64::new(1),
                dropped_at_stop: AtomicU64::new(0),
                refusals: Mutex::default(),
                counters: stats::NodeCounters::default(),
                created: std::time::Instant::now(),
            }),
        })
    }

    /// The node's routing tables, for the fuzz targets' checks.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Node {
        Node { inner }
    }

    pub(crate) fn next_subscription_id(&self) -> SubscriptionId {
        SubscriptionId(self.inner.next_subscription.fetch_add(1, Ordering::Relaxed))
    }

    /// The running services, as announced to peers.
    pub(crate) fn catalog(&self) -> Vec<wire::ServiceDescriptor> {
        lock(&self.inner.catalog).values().cloned().collect()
    }

    pub(crate) fn mesh(&self) -> Option<Arc<Mesh<remote::NodeLink>>> {
        lock(&self.inner.mesh).clone()
    }

    /// Tells connected peers that this node's services or subscriptions changed, and waits
    /// (briefly) until they know.
    pub(crate) async fn announce(&self) {
        if let Some(mesh) = self.mesh() {
            mesh.announce().await;
        }
    }

    /// The node's id, derived from its public key: what peers know it by.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The QUIC address the node listens on, once started with a network configuration.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.mesh().and_then(|m| m.local_addr().ok())
    }

    /// The peers this node is connected to.
    pub fn peers(&self) -> Vec<NodeId> {
        self.mesh().map(|m| m.peer_ids()).unwrap_or_default()
    }

    /// How many requests with peers were still in flight, and so cut, when
    /// [`stop`](Self::stop) ended its grace period (`NetworkConfig::shutdown_grace`).
    pub fn requests_dropped_at_stop(&self) -> u64 {
        self.inner.dropped_at_stop.load(Ordering::Relaxed)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The node's default network.
    pub fn network(&self) -> &str {
        &self.inner.network
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Fails with `Unavailable` once the node has stopped (requests, publishes and subscriptions
    /// are refused from then on).
    pub(crate) fn check_not_stopped(&self) -> Result<()> {
        if self.inner.state.load(Ordering::Acquire) == STOPPED {
            return Err(Error::unavailable("the node has stopped"));
        }
        Ok(())
    }

    /// True between a successful [`start`](Self::start) and [`stop`](Self::stop).
    pub fn is_running(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == RUNNING
    }

    /// Adds a service. Before [`start`](Self::start) it waits for the node to start; after, it is
    /// initialized and started at once. A second service with the same path is refused with
    /// `AlreadyExists`; a service whose `init` or `start` fails is not added and its error is
    /// returned.
    pub async fn add_service<S: AbstractService>(&self, service: S) -> Result<()> {
        let service: Arc<dyn DynService> = Arc::new(service);
        let path = service.path().to_owned();
        let parsed = TopicPath::parse_within(&path, self.inner.config.path_limits())
            .map_err(|e| Error::invalid_argument(format!("service `{}`: {e}", service.name())))?;
        if parsed.network().is_some() || parsed.is_pattern() {
            return Err(Error::invalid_argument(format!(
                "service `{}`: the path `{path}` must be literal segments without `network:`",
                service.name()
            )));
        }
        let mut services = self.inner.services.lock().await;
        if services.iter().any(|s| *s.path == *path) {
            return Err(Error::already_exists(format!(
                "a service with path `{path}` is already on this node"
            )));
        }
        let mut entry = ServiceEntry {
            service,
            path: path.into(),
            state: ServiceState::Created,
            registrations: Arc::default(),
        };
        let running = match self.inner.state.load(Ordering::Acquire) {
            RUNNING => {
                self.init_service(&mut entry).await?;
                self.start_service(&mut entry).await?;
                true
            }
            STOPPED => return Err(Error::unavailable("the node has stopped")),
            _ => false,
        };
        services.push(entry);
        drop(services);
        if running {
            self.announce().await;
        }
        Ok(())
    }

    /// Stops and removes the service at `path`.
    pub async fn remove_service(&self, path: &str) -> Result<()> {
        let mut services = self.inner.services.lock().await;
        let index = services
            .iter()
            .position(|s| &*s.path == path)
            .ok_or_else(|| Error::not_found(format!("no service with path `{path}`")))?;
        let mut entry = services.remove(index);
        let stopped = self.stop_service(&mut entry).await;
        drop(services);
        self.announce().await;
        stopped
    }

    /// What the node knows of its services, in the order they were added.
    pub async fn services(&self) -> Vec<ServiceInfo> {
        let services = self.inner.services.lock().await;
        services
            .iter()
            .map(|s| ServiceInfo {
                name: s.service.name().to_owned(),
                path: s.path.to_string(),
                version: s.service.version().to_owned(),
                description: s.service.description().to_owned(),
                state: s.state,
                schema: s.service.schema(),
            })
            .collect()
    }

    /// Every action path registered in the default network, sorted (without the built-in
    /// `$runar/…` introspection actions).
    pub fn actions(&self) -> Vec<String> {
        let mut actions = self.inner.registry.action_paths(&self.inner.network);
        actions.retain(|path| !path.starts_with('$'));
        actions
    }

    /// Starts the node: initializes every service in the order they were added, then starts
    /// them. The first failure stops the sequence and is returned, naming the service.
    pub async fn start(&self) -> Result<()> {
        let mut services = self.inner.services.lock().await;
        match self.inner.state.load(Ordering::Acquire) {
            RUNNING => return Ok(()),
            STOPPED => return Err(Error::unavailable("the node has stopped; create a new one")),
            _ => {}
        }
        // Bind first: a port that cannot be had fails the start before any service runs.
        let mesh = match &self.inner.config.network {
            Some(network) => {
                let key = network.key.clone().unwrap_or_else(|| {
                    // Only reachable with `with_insecure_dev_key` (checked in `Node::new`).
                    tracing::warn!(
                        network = %self.inner.network,
                        "insecure development key: derived from the network name, which anyone who knows the name can do"
                    );
                    NetworkKey::from_secret(format!("runar-default-key:{}", self.inner.network))
                });
                let settings = MeshSettings {
                    name: self.name().to_owned(),
                    network: self.inner.network.to_string(),
                    event_counters: self.inner.counters.peers.clone(),
                    drain_timeout: self.inner.config.request_timeout,
                };
                Some(Mesh::bind(
                    remote::NodeLink::new(self),
                    settings,
                    network.clone(),
                    self.inner.keypair.clone(),
                    key,
                )?)
            }
            None => None,
        };
        if self.inner.config.introspection {
            self.register_introspection()?;
        }
        for entry in services.iter_mut() {
            if entry.state == ServiceState::Created {
                self.init_service(entry).await?;
            }
        }
        for entry in services.iter_mut() {
            if entry.state == ServiceState::Initialized {
                self.start_service(entry).await?;
            }
        }
        self.inner.state.store(RUNNING, Ordering::Release);
        if let Some(mesh) = mesh {
            mesh.run().await?;
            tracing::info!(node = %self.name(), id = %self.node_id(), addr = ?mesh.local_addr().ok(), "listening");
            *lock(&self.inner.mesh) = Some(mesh);
        }
        #[cfg(feature = "metrics")]
        self.spawn_metrics_recorder();
        tracing::info!(node = %self.name(), services = services.len(), "node started");
        Ok(())
    }

    /// Stops the node: stops its services in reverse order, removes every action and
    /// subscription. Every service is stopped even if one fails; the first error is returned.
    pub async fn stop(&self) -> Result<()> {
        let mut services = self.inner.services.lock().await;
        if self.inner.state.swap(STOPPED, Ordering::AcqRel) == STOPPED {
            return Ok(());
        }
        let mesh = lock(&self.inner.mesh).take();
        if let Some(mesh) = mesh {
            let grace = self
                .inner
                .config
                .network
                .as_ref()
                .map_or(Duration::ZERO, |n| n.shutdown_grace);
            let dropped = mesh.stop(grace).await;
            self.inner.dropped_at_stop.fetch_add(
                u64::try_from(dropped).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        let mut first_error = None;
        for entry in services.iter_mut().rev() {
            if let Err(e) = self.stop_service(entry).await {
                first_error.get_or_insert(e);
            }
        }
        self.inner.registry.clear();
        lock(&self.inner.remote_views).clear();
        tracing::info!(node = %self.name(), "node stopped");
        first_error.map_or(Ok(()), Err)
    }

    fn lifecycle_context(&self, entry: &ServiceEntry) -> LifecycleContext {
        LifecycleContext::new(
            self.clone(),
            entry.path.clone(),
            entry.registrations.clone(),
            entry.service.schema(),
        )
    }

    async fn init_service(&self, entry: &mut ServiceEntry) -> Result<()> {
        let ctx = self.lifecycle_context(entry);
        match entry.service.init(&ctx).await {
            Ok(()) => {
                entry.state = ServiceState::Initialized;
                Ok(())
            }
            Err(e) => Err(self.service_failed(entry, e, "initialize").await),
        }
    }

    async fn start_service(&self, entry: &mut ServiceEntry) -> Result<()> {
        let ctx = self.lifecycle_context(entry);
        match entry.service.start(&ctx).await {
            Ok(()) => {
                entry.state = ServiceState::Running;
                self.catalog_insert(entry);
                self.publish_service_event(&entry.path, entry.service.name(), entry.state)
                    .await;
                Ok(())
            }
            Err(e) => Err(self.service_failed(entry, e, "start").await),
        }
    }

    /// Marks a service whose `init` or `start` failed, removes what it registered, and returns
    /// its error naming the service.
    async fn service_failed(&self, entry: &mut ServiceEntry, error: Error, phase: &str) -> Error {
        entry.state = ServiceState::Failed;
        self.remove_registrations(entry);
        self.publish_service_event(&entry.path, entry.service.name(), entry.state)
            .await;
        tracing::error!(service = %entry.path, %error, "service failed to {phase}");
        error.context(format!("service `{}` failed to {phase}", entry.path))
    }

    async fn stop_service(&self, entry: &mut ServiceEntry) -> Result<()> {
        if !matches!(
            entry.state,
            ServiceState::Running | ServiceState::Initialized
        ) {
            return Ok(());
        }
        lock(&self.inner.catalog).remove(&entry.path);
        let ctx = self.lifecycle_context(entry);
        let result = entry.service.stop(&ctx).await;
        entry.state = ServiceState::Stopped;
        self.remove_registrations(entry);
        self.publish_service_event(&entry.path, entry.service.name(), entry.state)
            .await;
        result.map_err(|e| e.context(format!("service `{}` failed to stop", entry.path)))
    }

    fn catalog_insert(&self, entry: &ServiceEntry) {
        let actions = lock(&entry.registrations)
            .actions
            .iter()
            .map(|p| p.path().to_owned())
            .collect();
        let service = &entry.service;
        let descriptor = wire::ServiceDescriptor {
            path: entry.path.to_string(),
            name: service.name().to_owned(),
            version: service.version().to_owned(),
            description: service.description().to_owned(),
            network: self.inner.network.to_string(),
            actions,
            schema: service
                .schema()
                .map(bytes::Bytes::from_static)
                .unwrap_or_default(),
        };
        lock(&self.inner.catalog).insert(entry.path.clone(), descriptor);
    }

    fn remove_registrations(&self, entry: &ServiceEntry) {
        let registrations = std::mem::take(&mut *lock(&entry.registrations));
        for pattern in &registrations.actions {
            self.inner
                .registry
                .remove_action(&self.inner.network, pattern, &Origin::Local);
        }
        for id in registrations.subscriptions {
            self.inner.registry.remove_subscription(id);
        }
    }

    /// Registers a local action of service `service` (used by [`LifecycleContext`]).
    pub(crate) fn register_action(
        &self,
        pattern: TopicPath,
        service: &str,
        handler: ActionHandler,
        types: Option<Arc<MessageTypes>>,
    ) -> Result<TopicPath> {
        let pattern = action_pattern(pattern, &format!("service `{service}`"))?;
        let instance = ActionInstance {
            origin: Origin::Local,
            handler,
            health: Default::default(),
            types,
            stats: Some(Arc::new(registry::ActionCounters::new(
                self.inner.config.latency_sample_every,
            ))),
        };
        self.inner
            .registry
            .add_action(&self.inner.network, pattern.clone(), instance)?;
        Ok(pattern)
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.config.name)
            .field("network", &self.inner.network)
            .field("id", &self.inner.node_id)
            .field("running", &self.is_running())
            .finish()
    }
}

/// `pattern` if it may name an action of `owner` (a local service or a peer's): templates
/// (`{param}`) are allowed, wildcards (`*`, `>`) and a network prefix are not. Local and remote
/// actions pass this same check.
pub(crate) fn action_pattern(pattern: TopicPath, owner: &str) -> Result<TopicPath> {
    if pattern
        .segments()
        .iter()
        .any(|s| matches!(s, Segment::Rest | Segment::Single))
    {
        return Err(Error::invalid_argument(format!(
            "action `{pattern}` of {owner}: actions take `{{param}}` templates, not `*` or `>`"
        )));
    }
    if pattern.network().is_some() {
        return Err(Error::invalid_argument(format!(
            "action `{pattern}` of {owner}: an action lives in its service's network"
        )));
    }
    Ok(pattern)
}
