//! Services: the [`AbstractService`] trait and the contexts handlers receive.
//!
//! A service has a path (`math`) under which it registers actions (`math/add`) and
//! subscriptions while it initializes. Generated code (from a `.proto` or from
//! `#[runar::service]`) implements [`AbstractService`]; it can also be written by hand.

pub(crate) mod context;
mod interceptor;
pub(crate) mod stream;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use context::{Caller, EventContext, LifecycleContext, RequestContext};
pub(crate) use interceptor::Interceptors;
pub use interceptor::{Call, Interceptor};
pub use stream::{CallKind, Streaming, stream_once};
pub(crate) use stream::{RawStreaming, StreamHandler};

use crate::error::Result;
use crate::value::{EventValue, Payload, Value};

/// A service hosted by a node.
///
/// The node calls [`init`](Self::init) on every service (in the order they were added), then
/// [`start`](Self::start) on every service, and on shutdown [`stop`](Self::stop) in reverse
/// order. Actions and subscriptions are registered through the [`LifecycleContext`], usually in
/// `init`; the node removes them when the service stops.
///
/// ```
/// use runar_runtime::{AbstractService, LifecycleContext, Result};
///
/// struct Greeter;
///
/// impl AbstractService for Greeter {
///     fn name(&self) -> &str { "Greeter" }
///     fn path(&self) -> &str { "greeter" }
///     async fn init(&self, ctx: &LifecycleContext) -> Result<()> {
///         ctx.register_action("hello", |name: String, _ctx| async move {
///             Ok(format!("hello, {name}"))
///         })
///         .await
///     }
/// }
/// ```
pub trait AbstractService: Send + Sync + 'static {
    /// A human-readable name.
    fn name(&self) -> &str;

    /// The path under which the service's actions live (`math` for `math/add`).
    fn path(&self) -> &str;

    /// The service's version.
    fn version(&self) -> &str {
        "0.0.0"
    }

    /// A one-line description.
    fn description(&self) -> &str {
        ""
    }

    /// The service's schema: an encoded `google.protobuf.FileDescriptorProto` describing its
    /// messages and methods, when it has one (generated services do).
    fn schema(&self) -> Option<&'static [u8]> {
        None
    }

    /// Registers the service's actions and subscriptions.
    fn init(&self, ctx: &LifecycleContext) -> impl Future<Output = Result<()>> + Send;

    /// Called once every service is initialized.
    fn start(&self, ctx: &LifecycleContext) -> impl Future<Output = Result<()>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Called when the service is removed or the node stops.
    fn stop(&self, ctx: &LifecycleContext) -> impl Future<Output = Result<()>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }
}

/// The object-safe form of [`AbstractService`] the node stores.
pub(crate) trait DynService: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn path(&self) -> &str;
    fn version(&self) -> &str;
    fn description(&self) -> &str;
    fn schema(&self) -> Option<&'static [u8]>;
    fn init<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>>;
    fn start<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>>;
    fn stop<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>>;
}

impl<S: AbstractService> DynService for S {
    fn name(&self) -> &str {
        AbstractService::name(self)
    }
    fn path(&self) -> &str {
        AbstractService::path(self)
    }
    fn version(&self) -> &str {
        AbstractService::version(self)
    }
    fn description(&self) -> &str {
        AbstractService::description(self)
    }
    fn schema(&self) -> Option<&'static [u8]> {
        AbstractService::schema(self)
    }
    fn init<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(AbstractService::init(self, ctx))
    }
    fn start<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(AbstractService::start(self, ctx))
    }
    fn stop<'a>(&'a self, ctx: &'a LifecycleContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(AbstractService::stop(self, ctx))
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceState {
    /// Added, not yet initialized (the node has not started).
    Created,
    /// `init` succeeded; `start` has not run yet.
    Initialized,
    /// `start` succeeded: the service is serving.
    Running,
    /// `stop` ran.
    Stopped,
    /// `init` or `start` failed.
    Failed,
}

/// What the node knows of one of its services.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// The service's path.
    pub path: String,
    /// The service's version.
    pub version: String,
    /// The service's description.
    pub description: String,
    /// The service's state.
    pub state: ServiceState,
    /// The service's schema (an encoded `FileDescriptorProto`), when it has one.
    pub schema: Option<&'static [u8]>,
}

/// A type-erased action handler: takes the request [`Value`], returns the response [`Value`].
pub type ActionHandler =
    Arc<dyn Fn(Value, RequestContext) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// A type-erased event handler.
pub type EventHandler =
    Arc<dyn Fn(Arc<Value>, EventContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Wraps a typed async function as an [`ActionHandler`]. A request that does not decode as
/// `Req` fails with `InvalidArgument` before the function runs.
pub fn action_handler<Req, Resp, F, Fut>(f: F) -> ActionHandler
where
    Req: Payload,
    Resp: Payload,
    F: Fn(Req, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    Arc::new(
        move |value: Value, ctx: RequestContext| match value.into_typed::<Req>() {
            Ok(req) => {
                let fut = f(req, ctx);
                Box::pin(async move { fut.await.map(Value::new) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        },
    )
}

/// What a subscription's task calls for each event: a typed function ([`TypedEventHandler`]:
/// the value moved or decoded into its type, its future not boxed) or a type-erased
/// [`EventHandler`].
pub(crate) trait HandleEvent: Send + Sync + 'static {
    /// The handling of one event.
    type Future: Future<Output = Result<()>> + Send + 'static;

    /// Starts handling `value`.
    fn handle(&self, value: EventValue, ctx: EventContext) -> Self::Future;
}

impl HandleEvent for EventHandler {
    type Future = BoxFuture<'static, Result<()>>;

    fn handle(&self, mut value: EventValue, ctx: EventContext) -> Self::Future {
        self(value.take_shared(), ctx)
    }
}

/// A typed async function as a subscription's handler: an event that does not decode as `T`
/// is reported as an `InvalidArgument` error without calling the function. [`event_handler`]
/// is this, type-erased.
pub(crate) struct TypedEventHandler<T, F> {
    f: F,
    event: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> TypedEventHandler<T, F> {
    pub(crate) fn new(f: F) -> Self {
        TypedEventHandler {
            f,
            event: std::marker::PhantomData,
        }
    }
}

impl<T, F, Fut> HandleEvent for TypedEventHandler<T, F>
where
    T: Payload,
    F: Fn(T, EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    type Future = futures::future::Either<Fut, std::future::Ready<Result<()>>>;

    fn handle(&self, value: EventValue, ctx: EventContext) -> Self::Future {
        match value.into_typed::<T>() {
            Ok(event) => futures::future::Either::Left((self.f)(event, ctx)),
            Err(e) => futures::future::Either::Right(std::future::ready(Err(e))),
        }
    }
}

/// Wraps a typed async function as an [`EventHandler`]. An event that does not decode as `T`
/// is reported as an `InvalidArgument` error (and logged) without calling the function.
pub fn event_handler<T, F, Fut>(f: F) -> EventHandler
where
    T: Payload,
    F: Fn(T, EventContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let typed = TypedEventHandler::new(f);
    Arc::new(move |value: Arc<Value>, ctx: EventContext| {
        Box::pin(typed.handle(EventValue::Shared(value), ctx))
    })
}
