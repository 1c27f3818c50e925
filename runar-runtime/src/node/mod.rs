//! The [`Node`]: hosts services, routes requests and events.

mod access;
mod config;
mod events;
#[cfg(any(feature = "metrics", feature = "prometheus"))]
mod exporter;
pub(crate) mod introspection;
mod reachable;
mod readiness;
pub(crate) mod registry;
mod registry_events;
mod remote;
mod request;
mod sealing;
pub(crate) mod service;
mod stats;
mod stream;
mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use crate::node::registry::SubscriptionId;
pub use config::{BroadcastMode, NodeConfig, PublishOptions, RequestOptions, SubscribeOptions};
#[cfg(feature = "prometheus")]
pub use exporter::PrometheusOptions;
pub use reachable::ReachableService;
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
use crate::node::service::context::{Registrations, ServiceSchema};
use crate::node::service::{
    AbstractService, ActionHandler, CallKind, DynService, LifecycleContext, ServiceInfo,
    ServiceState, StreamHandler,
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
    /// The node's connections, once started with a network configuration: one mesh per
    /// network, the default first, all over one endpoint.
    meshes: Mutex<Vec<Arc<Mesh<remote::NodeLink>>>>,
    /// What each peer link offered, as registered here.
    remote_views: Mutex<rustc_hash::FxHashMap<PeerLink, remote::PeerView>>,
    /// The running services as peers see them, by network and path.
    catalog: Mutex<BTreeMap<CatalogKey, wire::ServiceDescriptor>>,
    registry: Registry,
    /// The route caches of the node's own network, found without the registry's lock.
    routes: Arc<registry::RouteCaches>,
    services: tokio::sync::Mutex<Vec<ServiceEntry>>,
    state: AtomicU8,
    retained: Mutex<events::RetainedStore>,
    next_subscription: AtomicU64,
    /// Requests with peers still in flight when `stop` ended its grace period.
    dropped_at_stop: AtomicU64,
    /// Cancelled when [`Node::stop`] begins (see [`Node::stopped`]).
    stopping: tokio_util::sync::CancellationToken,
    /// Peers whose handshakes were refused, and why.
    refusals: Mutex<readiness::Refusals>,
    /// What became of the node's events (see [`NodeStats`]).
    counters: stats::NodeCounters,
    /// When the node was created (its uptime, for introspection).
    created: std::time::Instant,
    /// The access policy of each network that has one (see `access.rs`).
    policies: RwLock<rustc_hash::FxHashMap<Arc<str>, Arc<crate::policy::Enforced>>>,
    /// Some network has a policy: the one branch the request and event paths pay without.
    policed: AtomicBool,
    /// The node's sealing key and seal scope (see `sealing.rs`).
    sealing: sealing::Sealing,
}

/// A running service's place: (network, path).
type CatalogKey = (Arc<str>, Arc<str>);

impl Drop for NodeInner {
    /// The last handle is gone without `stop`: leave the network as `stop` would, without
    /// waiting (goodbyes queued, connections closed, the endpoint and discovery stopped), so
    /// that no socket or task outlives the node.
    fn drop(&mut self) {
        let meshes = std::mem::take(&mut *lock(&self.meshes));
        for mesh in meshes {
            mesh.stop_now();
        }
    }
}

struct ServiceEntry {
    service: Arc<dyn DynService>,
    /// The network the service is in (and its actions and subscriptions, unless they name
    /// another).
    network: Arc<str>,
    path: Arc<str>,
    state: ServiceState,
    registrations: Arc<Mutex<Registrations>>,
}

impl Node {
    /// Creates a node. It serves nothing until [`start`](Self::start).
    pub async fn new(config: NodeConfig) -> Result<Node> {
        let network = &config.default_network;
        check_network_name(network, "default network")?;
        let mut ids = vec![
            config
                .network
                .as_ref()
                .and_then(|n| n.key.as_ref())
                .map(NetworkKey::network_id),
        ];
        for (name, key) in &config.additional_networks {
            check_network_name(name, "additional network")?;
            if config.network.is_none() {
                return Err(Error::invalid_argument(format!(
                    "additional network `{name}` needs a network configuration \
                     (NodeConfig::with_network_config), whose endpoint it shares"
                )));
            }
            if *name == config.default_network
                || config
                    .additional_networks
                    .iter()
                    .filter(|(n, _)| n == name)
                    .count()
                    > 1
            {
                return Err(Error::invalid_argument(format!(
                    "network `{name}` is named twice"
                )));
            }
            let id = Some(key.network_id());
            if ids.contains(&id) {
                return Err(Error::invalid_argument(format!(
                    "additional network `{name}` has the key of another network of this node: \
                     each network needs its own key"
                )));
            }
            ids.push(id);
        }
        if config.event_queue_capacity == 0 {
            return Err(Error::invalid_argument(
                "event_queue_capacity must be at least 1",
            ));
        }
        if config.stream_buffer == 0 {
            return Err(Error::invalid_argument("stream_buffer must be at least 1"));
        }
        if config.stream_buffer.max(config.stream_buffer_max) > crate::network::MAX_CREDIT {
            return Err(Error::invalid_argument(format!(
                "stream_buffer ({}) and stream_buffer_max ({}) must be at most {}",
                config.stream_buffer,
                config.stream_buffer_max,
                crate::network::MAX_CREDIT
            )));
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
        let registry = Registry::default();
        let routes = registry.routes(network.as_str());
        Ok(Node {
            inner: Arc::new(NodeInner {
                sealing: sealing::Sealing::new(&config, keypair.node_id()),
                node_id: keypair.node_id(),
                keypair: Arc::new(keypair),
                meshes: Mutex::default(),
                remote_views: Mutex::default(),
                catalog: Mutex::default(),
                network: network.as_str().into(),
                config,
                registry,
                routes,
                services: tokio::sync::Mutex::new(Vec::new()),
                state: AtomicU8::new(CREATED),
                retained: Mutex::default(),
                next_subscription: AtomicU64::new(1),
                dropped_at_stop: AtomicU64::new(0),
                stopping: tokio_util::sync::CancellationToken::new(),
                refusals: Mutex::default(),
                counters: stats::NodeCounters::default(),
                created: std::time::Instant::now(),
                policies: RwLock::default(),
                policed: AtomicBool::new(false),
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

    /// The running services of `network`, as announced to its peers.
    pub(crate) fn catalog(&self, network: &str) -> Vec<wire::ServiceDescriptor> {
        lock(&self.inner.catalog)
            .iter()
            .filter(|((n, _), _)| &**n == network)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// The mesh of the default network (whose endpoint every network shares).
    pub(crate) fn mesh(&self) -> Option<Arc<Mesh<remote::NodeLink>>> {
        lock(&self.inner.meshes).first().cloned()
    }

    /// The mesh of every network, the default first.
    pub(crate) fn meshes(&self) -> Vec<Arc<Mesh<remote::NodeLink>>> {
        lock(&self.inner.meshes).clone()
    }

    /// The node's networks: the default first, then the additional ones in order.
    pub fn networks(&self) -> Vec<String> {
        let config = &self.inner.config;
        std::iter::once(config.default_network.clone())
            .chain(config.additional_networks.iter().map(|(n, _)| n.clone()))
            .collect()
    }

    /// Tells connected peers that this node's services or subscriptions changed, and waits
    /// (briefly) until they know.
    pub(crate) async fn announce(&self) {
        futures::future::join_all(self.meshes().iter().map(|mesh| mesh.announce())).await;
    }

    /// [`announce`](Self::announce) in `network` only.
    pub(crate) async fn announce_in(&self, network: &str) {
        let index = self.networks().iter().position(|n| n == network);
        let mesh = index.and_then(|i| self.meshes().get(i).cloned());
        if let Some(mesh) = mesh {
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

    /// The peers this node is connected to, in any of its networks.
    pub fn peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.meshes().iter().flat_map(|m| m.peer_ids()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The peers this node is connected to in `network` (empty for a network it is not in).
    pub fn peers_in(&self, network: &str) -> Vec<NodeId> {
        let index = self.networks().iter().position(|n| n == network);
        index
            .and_then(|i| self.meshes().get(i).map(|m| m.peer_ids()))
            .unwrap_or_default()
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

    /// `network` as a handler's context keeps it: `None` for the default network (nothing to
    /// keep), else its name.
    pub(crate) fn other_network(&self, network: &str) -> Option<Arc<str>> {
        (network != &*self.inner.network).then(|| network.into())
    }

    /// The network a call resolved in (`named`: the one its path's prefix named, if any), as
    /// [`other_network`](Self::other_network) keeps it.
    pub(crate) fn network_of_call(&self, named: Option<Arc<str>>) -> Option<Arc<str>> {
        named.filter(|network| **network != *self.inner.network)
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Fails with `Unavailable` once the node has stopped (requests, publishes and subscriptions
    /// are refused from then on).
    #[inline]
    pub(crate) fn check_not_stopped(&self) -> Result<()> {
        if self.inner.state.load(Ordering::Acquire) == STOPPED {
            return Err(stopped());
        }
        Ok(())
    }

    /// True between a successful [`start`](Self::start) and [`stop`](Self::stop).
    pub fn is_running(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == RUNNING
    }

    /// Resolves once [`stop`](Self::stop) has begun (at once if it already has): from then on
    /// the node takes no new calls. For what runs beside a node and should end with it, such
    /// as a gateway in front of it.
    pub async fn stopped(&self) {
        self.inner.stopping.cancelled().await;
    }

    /// Adds a service. Before [`start`](Self::start) it waits for the node to start; after, it is
    /// initialized and started at once. A second service with the same path is refused with
    /// `AlreadyExists`; a service whose `init` or `start` fails is not added and its error is
    /// returned.
    pub async fn add_service<S: AbstractService>(&self, service: S) -> Result<()> {
        let network = self.inner.network.clone();
        self.add_service_in(network, Arc::new(service)).await
    }

    /// [`add_service`](Self::add_service) in `network`, one of the node's networks: only that
    /// network's peers see and call it, and its actions and subscriptions are in that network
    /// (`network:` prefixed paths reach them from this node). Fails with `InvalidArgument` for
    /// a network the node is not in.
    pub async fn add_service_to<S: AbstractService>(
        &self,
        network: &str,
        service: S,
    ) -> Result<()> {
        if !self.networks().iter().any(|n| n == network) {
            return Err(Error::invalid_argument(format!(
                "`{network}` is not a network of this node (add it with NodeConfig::with_additional_network)"
            )));
        }
        self.add_service_in(network.into(), Arc::new(service)).await
    }

    async fn add_service_in(&self, network: Arc<str>, service: Arc<dyn DynService>) -> Result<()> {
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
        if services
            .iter()
            .any(|s| *s.path == *path && s.network == network)
        {
            return Err(Error::already_exists(format!(
                "a service with path `{path}` is already on this node"
            )));
        }
        let mut entry = ServiceEntry {
            service,
            network,
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

    /// Stops and removes the service at `path` (`network:path` for one in another network
    /// than the default).
    pub async fn remove_service(&self, path: &str) -> Result<()> {
        let (network, path) = match split_network(path) {
            Ok((Some(network), path)) => (network, path),
            _ => (&*self.inner.network, path),
        };
        let mut services = self.inner.services.lock().await;
        let index = services
            .iter()
            .position(|s| &*s.path == path && &*s.network == network)
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

    /// Every action path registered in `network`, sorted (empty for a network the node is not
    /// in; without the built-in `$runar/…` introspection actions).
    pub fn actions_in(&self, network: &str) -> Vec<String> {
        let mut actions = self.inner.registry.action_paths(network);
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
        let meshes = match &self.inner.config.network {
            Some(network) => {
                let key = network.key.clone().unwrap_or_else(|| {
                    // Only reachable with `with_insecure_dev_key` (checked in `Node::new`).
                    tracing::warn!(
                        network = %self.inner.network,
                        "insecure development key: derived from the network name, which anyone who knows the name can do"
                    );
                    NetworkKey::from_secret(format!("runar-default-key:{}", self.inner.network))
                });
                let settings = |network: &str| MeshSettings {
                    name: self.name().to_owned(),
                    network: network.to_owned(),
                    event_counters: self.inner.counters.peers.clone(),
                    drain_timeout: self.inner.config.request_timeout,
                    sealing_key: self.sealing_key(),
                };
                let mut networks = vec![(
                    remote::NodeLink::new(self, self.inner.network.clone()),
                    settings(&self.inner.network),
                    key,
                )];
                for (name, key) in &self.inner.config.additional_networks {
                    networks.push((
                        remote::NodeLink::new(self, name.as_str().into()),
                        settings(name),
                        key.clone(),
                    ));
                }
                Mesh::bind_networks(network.clone(), self.inner.keypair.clone(), networks)?
            }
            None => Vec::new(),
        };
        if self.inner.config.introspection {
            self.register_introspection()?;
        }
        self.log_policies();

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
        if !meshes.is_empty() {
            // Listed first: a peer accepted while the others start finds its network's mesh.
            *lock(&self.inner.meshes) = meshes.clone();
            let networks = self.networks();
            for (mesh, network) in meshes.iter().zip(&networks) {
                if let Err(e) = mesh.run().await {
                    // Leave no endpoint or task behind, as if the node had never bound.
                    for mesh in std::mem::take(&mut *lock(&self.inner.meshes)) {
                        mesh.stop_now();
                    }
                    return Err(e);
                }
                tracing::info!(node = %self.name(), id = %self.node_id(), %network, addr = ?mesh.local_addr().ok(), "listening");
            }
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
        self.inner.stopping.cancel();
        let meshes = std::mem::take(&mut *lock(&self.inner.meshes));
        if let Some(first) = meshes.first() {
            let grace = self
                .inner
                .config
                .network
                .as_ref()
                .map_or(Duration::ZERO, |n| n.shutdown_grace);
            let stopped = futures::future::join_all(meshes.iter().map(|m| m.stop(grace))).await;
            first.close_endpoint().await;
            let dropped: usize = stopped.iter().sum();
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
            entry.network.clone(),
            entry.path.clone(),
            entry.registrations.clone(),
            entry
                .service
                .schema()
                .map(|schema| Arc::new(ServiceSchema::new(entry.service.name(), schema))),
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
        lock(&self.inner.catalog).remove(&(entry.network.clone(), entry.path.clone()));
        self.inner.registry.notify_changed();
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
            network: entry.network.to_string(),
            actions,
            schema: service
                .schema()
                .map(bytes::Bytes::from_static)
                .unwrap_or_default(),
        };
        lock(&self.inner.catalog).insert((entry.network.clone(), entry.path.clone()), descriptor);
        // Seen by `catalog_version` readers only now that the schema is listed.
        self.inner.registry.notify_changed();
    }

    fn remove_registrations(&self, entry: &ServiceEntry) {
        let registrations = std::mem::take(&mut *lock(&entry.registrations));
        for pattern in &registrations.actions {
            self.inner
                .registry
                .remove_action(&entry.network, pattern, &Origin::Local);
        }
        for id in registrations.subscriptions {
            self.inner.registry.remove_subscription(id);
        }
    }

    /// Registers a local action of service `service` in `network` (used by
    /// [`LifecycleContext`]).
    pub(crate) fn register_action(
        &self,
        network: &str,
        pattern: TopicPath,
        service: &str,
        handler: ActionHandler,
        types: Option<Arc<MessageTypes>>,
        stream: Option<(CallKind, StreamHandler)>,
    ) -> Result<TopicPath> {
        let pattern = action_pattern(pattern, &format!("service `{service}`"))?;
        let (kind, stream) = match stream {
            Some((kind, handler)) => (kind, Some(handler)),
            None => (CallKind::Unary, None),
        };
        let instance = ActionInstance {
            origin: Origin::Local,
            handler,
            health: Default::default(),
            types,
            kind,
            stream,
            stats: Some(Arc::new(registry::ActionCounters::new(
                self.inner.config.latency_sample_every,
            ))),
        };
        self.inner
            .registry
            .add_action(network, pattern.clone(), instance)?;
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

/// Checks a network's name: not empty, without `:` or `/`.
fn check_network_name(network: &str, what: &str) -> Result<()> {
    if network.is_empty()
        || !matches!(split_network(network), Ok((None, _)))
        || network.contains('/')
    {
        return Err(Error::invalid_argument(format!(
            "invalid {what} `{network}`: use a non-empty name without `:` or `/`"
        )));
    }
    Ok(())
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

/// The error of a call on a stopped node (out of line: [`Node::check_not_stopped`] is inlined).
#[cold]
#[inline(never)]
fn stopped() -> Error {
    Error::unavailable("the node has stopped")
}
