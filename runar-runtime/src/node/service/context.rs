use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::lock::lock;
use crate::metadata::{Metadata, TRACEPARENT};
use crate::node::service::stream::stream_handler;
use crate::node::service::{
    ActionHandler, CallKind, EventHandler, StreamHandler, Streaming, action_handler,
};
use crate::node::{Node, PublishOptions, RequestOptions, SubscribeOptions, SubscriptionId};
use crate::routing::{PathParams, TopicPath, in_network};
use crate::value::{Payload, Value, types};

/// Who sent a request or published an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Caller {
    /// Code running on this node.
    Local,
    /// Another node, identified by the key it proved in the TLS handshake.
    Remote(NodeId),
}

/// What a request handler knows about the request it serves.
pub struct RequestContext {
    node: Node,
    /// The network the call came in: `None` for the node's default network.
    network: Option<Arc<str>>,
    path: Arc<str>,
    params: PathParams,
    caller: Caller,
    deadline: Instant,
    metadata: Metadata,
}

impl RequestContext {
    pub(crate) fn new(
        node: Node,
        network: Option<Arc<str>>,
        path: Arc<str>,
        params: PathParams,
        caller: Caller,
        deadline: Instant,
        metadata: Metadata,
    ) -> Self {
        RequestContext {
            node,
            network,
            path,
            params,
            caller,
            deadline,
            metadata,
        }
    }

    /// The request's metadata: what the caller set (per call, per client, by its interceptors)
    /// and what this node's incoming interceptors added.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The path that was requested (without network), e.g. `inventory/items/7`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The network the request came in (the action's network). The handler's downstream
    /// requests and publishes ([`request`](Self::request), [`publish`](Self::publish)) stay in
    /// it unless they name another.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(self.node.network())
    }

    /// [`path`](Self::path), shared.
    pub(crate) fn shared_path(&self) -> &Arc<str> {
        &self.path
    }

    /// The value of the template parameter `name` (`{name}` in the registered action path).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// All template parameters.
    pub fn params(&self) -> &PathParams {
        &self.params
    }

    /// Who sent the request.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The node serving the request.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Makes a downstream request that inherits this request's deadline and its trace context
    /// (the `traceparent` entry, when present). Other metadata is not copied: pass it on with
    /// [`request_with`](Self::request_with) if the downstream call needs it.
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
    ) -> Result<Resp> {
        self.request_with(path, request, RequestOptions::default())
            .await
    }

    /// A downstream request with options: the deadline is this request's unless `options` has
    /// an earlier one (a streaming call without a deadline passes none on), and the trace
    /// context is added to `options`' metadata unless it has one.
    pub async fn request_with<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
        mut options: RequestOptions,
    ) -> Result<Resp> {
        // A streaming call's handler may have no deadline: its downstream requests then get
        // their own (the node's request timeout unless `options` set one).
        if let Some(remaining) = crate::node::stream::finite(self.remaining()) {
            options.timeout = Some(options.timeout.map_or(remaining, |t| t.min(remaining)));
        }
        pass_on_trace_context(&mut options, &self.metadata);
        stay_in(&self.network, &mut options);
        self.node.request_with(path, request, options).await
    }

    /// Starts a downstream streaming call that inherits this request's deadline (if it has
    /// one: a streaming call's handler has none unless its caller set one) and its trace
    /// context, as [`request`](Self::request) does.
    pub async fn request_stream<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        requests: impl futures::Stream<Item = Req> + Send + 'static,
    ) -> Result<Streaming<Resp>> {
        self.request_stream_with(path, requests, RequestOptions::default())
            .await
    }

    /// [`request_stream`](Self::request_stream) with options (the earlier of the two deadlines
    /// applies).
    pub async fn request_stream_with<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        requests: impl futures::Stream<Item = Req> + Send + 'static,
        mut options: RequestOptions,
    ) -> Result<Streaming<Resp>> {
        if let Some(remaining) = crate::node::stream::finite(self.remaining()) {
            options.timeout = Some(options.timeout.map_or(remaining, |t| t.min(remaining)));
        }
        pass_on_trace_context(&mut options, &self.metadata);
        stay_in(&self.network, &mut options);
        self.node.request_stream_with(path, requests, options).await
    }

    /// Publishes an event, in this request's network unless `path` names another.
    pub async fn publish<T: Payload>(&self, path: impl AsRef<str>, event: T) -> Result<()> {
        self.node
            .publish(in_network(self.network.as_deref(), path.as_ref()), event)
            .await
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("path", &self.path)
            .field("params", &self.params)
            .field("caller", &self.caller)
            .field("remaining", &self.remaining())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// What an event handler knows about the event it receives.
pub struct EventContext {
    node: Node,
    /// The subscription's network: `None` for the node's default network.
    network: Option<Arc<str>>,
    topic: Arc<str>,
    params: PathParams,
    publisher: Caller,
    retained: bool,
    metadata: Metadata,
}

impl EventContext {
    pub(crate) fn new(
        node: Node,
        network: Option<Arc<str>>,
        topic: Arc<str>,
        params: PathParams,
        publisher: Caller,
        retained: bool,
        metadata: Metadata,
    ) -> Self {
        EventContext {
            node,
            network,
            topic,
            params,
            publisher,
            retained,
            metadata,
        }
    }

    /// The event's metadata, as its publisher set it
    /// ([`PublishOptions::with_metadata`](crate::PublishOptions::with_metadata)).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The concrete topic the event was published on, e.g. `math/computed`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The network of the subscription (and of the event). The handler's requests and
    /// publishes ([`request`](Self::request), [`publish`](Self::publish)) stay in it unless
    /// they name another.
    pub fn network(&self) -> &str {
        self.network.as_deref().unwrap_or(self.node.network())
    }

    /// The value of the template parameter `name` in the subscription's pattern.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// All template parameters.
    pub fn params(&self) -> &PathParams {
        &self.params
    }

    /// Who published the event.
    pub fn publisher(&self) -> &Caller {
        &self.publisher
    }

    /// True when the event was published before the subscription existed and delivered from
    /// the retained store.
    pub fn is_retained(&self) -> bool {
        self.retained
    }

    /// The node delivering the event.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Makes a request that carries on the event's trace context (its `traceparent` entry,
    /// when present), as [`RequestContext::request`] does.
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
    ) -> Result<Resp> {
        let mut options = RequestOptions::default();
        pass_on_trace_context(&mut options, &self.metadata);
        stay_in(&self.network, &mut options);
        self.node.request_with(path, request, options).await
    }

    /// Publishes an event, in the subscription's network unless `path` names another.
    pub async fn publish<T: Payload>(&self, path: impl AsRef<str>, event: T) -> Result<()> {
        self.node
            .publish(in_network(self.network.as_deref(), path.as_ref()), event)
            .await
    }
}

/// A handler's downstream call stays in `network` (the network its own call or event came in;
/// `None`: the node's default, where it goes anyway) unless `options` name another.
fn stay_in(network: &Option<Arc<str>>, options: &mut RequestOptions) {
    if options.network.is_none() {
        options.network = network.as_deref().map(str::to_owned);
    }
}

impl fmt::Debug for EventContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventContext")
            .field("topic", &self.topic)
            .field("params", &self.params)
            .field("publisher", &self.publisher)
            .field("retained", &self.retained)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// What a service registered, so the node can remove it when the service stops.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    pub(crate) actions: Vec<TopicPath>,
    pub(crate) subscriptions: Vec<SubscriptionId>,
}

/// Handed to a service's `init`, `start` and `stop`: registers its actions and subscriptions and
/// lets it publish and make requests.
#[derive(Clone)]
pub struct LifecycleContext {
    node: Node,
    /// The service's network.
    network: Arc<str>,
    service_path: Arc<str>,
    registrations: Arc<Mutex<Registrations>>,
    /// The service's schema, which names its actions' message types.
    schema: Option<Arc<ServiceSchema>>,
}

/// A service's schema as the registrations of its actions read it: decoded once, at the
/// first, and the service's name (which picks its own rpcs in a file of several services).
pub(crate) struct ServiceSchema {
    name: Box<str>,
    encoded: &'static [u8],
    decoded: std::sync::OnceLock<Option<prost_types::FileDescriptorProto>>,
}

impl ServiceSchema {
    /// The schema `encoded` (a `FileDescriptorProto`) of the service named `name`.
    pub(crate) fn new(name: &str, encoded: &'static [u8]) -> Self {
        ServiceSchema {
            name: name.into(),
            encoded,
            decoded: std::sync::OnceLock::new(),
        }
    }

    /// The message types of the service's action `action` (see [`types::types_in`]); `None`
    /// also when the schema does not decode.
    fn action_types(&self, action: &str) -> Option<(Box<str>, Box<str>)> {
        let file = self
            .decoded
            .get_or_init(|| prost::Message::decode(self.encoded).ok());
        types::types_in(file.as_ref()?, &self.name, action)
    }
}

impl LifecycleContext {
    pub(crate) fn new(
        node: Node,
        network: Arc<str>,
        service_path: Arc<str>,
        registrations: Arc<Mutex<Registrations>>,
        schema: Option<Arc<ServiceSchema>>,
    ) -> Self {
        LifecycleContext {
            node,
            network,
            service_path,
            registrations,
            schema,
        }
    }

    /// The service's path.
    pub fn service_path(&self) -> &str {
        &self.service_path
    }

    /// The node hosting the service.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The network the service is in (see `Node::add_service_to`).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Registers the action `<service path>/<name>` with a typed handler. `name` may have
    /// several segments and `{param}` templates (`items/{id}`).
    ///
    /// When the service has a schema naming the action's rpc, a dynamic call with another
    /// message type than the rpc's (say a `String` to an action that takes a `Todo`) fails
    /// with `InvalidArgument` naming both types, instead of decoding whatever fits.
    pub async fn register_action<Req, Resp, F, Fut>(&self, name: &str, handler: F) -> Result<()>
    where
        Req: Payload,
        Resp: Payload,
        F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        let types = self
            .schema
            .as_ref()
            .and_then(|schema| schema.action_types(name))
            .map(|(request, response)| {
                Arc::new(types::MessageTypes {
                    request,
                    response,
                    request_rust: Some(std::any::TypeId::of::<Req>()),
                    request_alias: types::known_name::<Req>(),
                })
            });
        self.register(name, action_handler(handler), types, None)
    }

    /// Registers the action `<service path>/<name>` with a type-erased handler.
    pub async fn register_action_raw(&self, name: &str, handler: ActionHandler) -> Result<()> {
        self.register(name, handler, None, None)
    }

    /// Registers the streaming action `<service path>/<name>`: the handler reads the caller's
    /// messages from a [`Streaming`] and returns (once it accepts the call) any stream of
    /// replies; the call ends when that stream ends (the caller sees `Ok(None)`) or yields an
    /// error (the caller gets it, code and message kept). Callers use
    /// [`Node::request_stream`](crate::Node::request_stream).
    ///
    /// At the runtime level every stream is bidirectional; `kind` is recorded (introspection,
    /// schema), and for `ClientStreaming` only the first reply is sent. A unary
    /// [`request`](crate::Node::request) to a streaming action fails with `InvalidArgument`.
    ///
    /// The handler's reply stream is polled only when there is room for a reply in the
    /// caller's buffer ([`NodeConfig::stream_buffer`](crate::NodeConfig), granted as credit
    /// over the network), and dropped, with the handler, when the caller goes away.
    ///
    /// ```
    /// use runar_runtime::{CallKind, LifecycleContext, Result, Streaming};
    /// # async fn init(ctx: &LifecycleContext) -> Result<()> {
    /// ctx.register_stream("count", CallKind::ServerStreaming, |mut req: Streaming<u32>, _ctx| async move {
    ///     let upto = req.message().await?.unwrap_or(0);
    ///     Ok(futures::stream::iter((0..upto).map(Ok::<u32, runar_runtime::Error>)))
    /// })
    /// .await
    /// # }
    /// ```
    pub async fn register_stream<Req, Resp, F, Fut, S>(
        &self,
        name: &str,
        kind: CallKind,
        handler: F,
    ) -> Result<()>
    where
        Req: Payload,
        Resp: Payload,
        F: Fn(Streaming<Req>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
        S: futures::Stream<Item = Result<Resp>> + Send + 'static,
    {
        let full: Arc<str> = format!("{}/{}", self.service_path, name).into();
        let unary: ActionHandler = Arc::new(move |_, _| {
            let error = Error::invalid_argument(format!(
                "`{full}` is a {kind} action: call it with request_stream"
            ));
            Box::pin(std::future::ready(Err(error)))
        });
        let stream = stream_handler(kind, handler);
        self.register(name, unary, None, Some((kind, stream)))
    }

    fn register(
        &self,
        name: &str,
        handler: ActionHandler,
        types: Option<Arc<types::MessageTypes>>,
        stream: Option<(CallKind, StreamHandler)>,
    ) -> Result<()> {
        let full = format!("{}/{}", self.service_path, name);
        let pattern = TopicPath::parse_within(&full, self.node.config().path_limits())?;
        if pattern.network().is_some() {
            return Err(Error::invalid_argument(format!(
                "action `{name}`: an action lives in its service's network; drop the `network:` prefix"
            )));
        }
        let pattern = self.node.register_action(
            &self.network,
            pattern,
            &self.service_path,
            handler,
            types,
            stream,
        )?;
        lock(&self.registrations).actions.push(pattern);
        Ok(())
    }

    /// Subscribes the service to `pattern` with a typed handler. The subscription belongs to
    /// the service: with [`BroadcastMode::OnePerService`](crate::BroadcastMode), one instance
    /// of the service receives each event.
    pub async fn subscribe<T, F, Fut>(&self, pattern: &str, handler: F) -> Result<SubscriptionId>
    where
        T: Payload,
        F: Fn(T, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.subscribe_handler(
            pattern,
            SubscribeOptions::default(),
            super::TypedEventHandler::new(handler),
        )
        .await
    }

    /// Subscribes the service to `pattern` with options and a type-erased handler. A pattern
    /// without a `network:` prefix is in the service's network.
    pub async fn subscribe_raw(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        handler: EventHandler,
    ) -> Result<SubscriptionId> {
        self.subscribe_handler(pattern, options, handler).await
    }

    /// [`subscribe_raw`](Self::subscribe_raw) with any kind of handler.
    async fn subscribe_handler(
        &self,
        pattern: &str,
        options: SubscribeOptions,
        handler: impl super::HandleEvent,
    ) -> Result<SubscriptionId> {
        let prefixed;
        let pattern = match crate::routing::split_network(pattern) {
            Ok((None, _)) if *self.network != *self.node.network() => {
                prefixed = format!("{}:{pattern}", self.network);
                prefixed.as_str()
            }
            _ => pattern,
        };
        let id = self
            .node
            .subscribe_raw(pattern, options, Some(self.service_path.clone()), handler)
            .await?;
        lock(&self.registrations).subscriptions.push(id);
        Ok(id)
    }

    /// Removes one of the service's subscriptions.
    pub async fn unsubscribe(&self, id: SubscriptionId) -> Result<()> {
        lock(&self.registrations).subscriptions.retain(|s| *s != id);
        self.node.unsubscribe(id).await
    }

    /// Publishes an event.
    pub async fn publish<T: Payload>(&self, path: impl AsRef<str>, event: T) -> Result<()> {
        self.node.publish(path, event).await
    }

    /// Publishes an event with options.
    pub async fn publish_with<T: Payload>(
        &self,
        path: impl AsRef<str>,
        event: T,
        options: PublishOptions,
    ) -> Result<()> {
        self.node.publish_with(path, event, options).await
    }

    /// Makes a request.
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
    ) -> Result<Resp> {
        self.node.request(path, request).await
    }

    /// Starts a streaming call (see [`Node::request_stream`]).
    pub async fn request_stream<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        requests: impl futures::Stream<Item = Req> + Send + 'static,
    ) -> Result<Streaming<Resp>> {
        self.node.request_stream(path, requests).await
    }

    /// Makes a request with a type-erased value.
    pub async fn request_value(&self, path: impl AsRef<str>, request: Value) -> Result<Value> {
        self.node
            .request_value(path, request, RequestOptions::default())
            .await
    }
}

impl fmt::Debug for LifecycleContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleContext")
            .field("service_path", &self.service_path)
            .finish()
    }
}

/// Adds the trace context (`traceparent`) of `incoming` to a downstream call's metadata,
/// unless the call sets its own.
fn pass_on_trace_context(options: &mut RequestOptions, incoming: &Metadata) {
    if options.metadata.get(TRACEPARENT).is_none() && !incoming.is_empty() {
        options.metadata.extend(&incoming.only(TRACEPARENT));
    }
}
