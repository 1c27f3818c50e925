//! The request path: resolve the action, run its handler under the deadline, catch panics.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{Node, RequestOptions};
use crate::error::{Code, Error, Result};
use crate::identity::NodeId;
use crate::metadata::Metadata;
use crate::network::InboundRequest;
use crate::node::registry::{ActionCounters, Origin, Resolved};
use crate::node::service::{ActionHandler, Call, Caller, RequestContext};
use crate::policy::Access;
use crate::routing::split_network;
use crate::value::types::known_name;
use crate::value::{Payload, Value};

/// A call from this node, routed ([`Node::route`]): the path as resolved (with the call's
/// network prefix), the action, and the metadata the interceptors left.
pub(super) struct Routed<'p> {
    pub(super) path: std::borrow::Cow<'p, str>,
    pub(super) resolved: Resolved,
    pub(super) metadata: Metadata,
}

/// A path resolved by [`Node::route_now`], before the interceptors: the path with the call's
/// network prefix, and the action.
struct Resolution<'p> {
    path: std::borrow::Cow<'p, str>,
    resolved: Resolved,
}

/// A peer's request, admitted ([`Node::admit_request`]): what serving it needs.
struct Admitted {
    /// The connection's network, as a handler's context keeps it.
    network: Option<Arc<str>>,
    /// The action's path as the peer sent it (without the network).
    path: String,
    from: NodeId,
    resolved: Resolved,
    metadata: Metadata,
    payload: Value,
    deadline: Instant,
    timeout: Duration,
}

impl<'p> Resolution<'p> {
    /// The call routed, with the metadata it carries.
    fn with_metadata(self, metadata: Metadata) -> Routed<'p> {
        Routed {
            path: self.path,
            resolved: self.resolved,
            metadata,
        }
    }
}

impl Node {
    /// Sends `request` to the action at `path` and waits for its typed answer, within the node's
    /// request timeout. A local handler is called in memory: nothing is encoded.
    ///
    /// Fails with `NotFound` at once when no instance serves `path` (unless the call sets
    /// [`RequestOptions::with_wait_for_ready`]), `DeadlineExceeded` when the
    /// answer does not come in time, the handler's own error when it fails, and `Internal` when
    /// it panics.
    pub async fn request<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
    ) -> Result<Resp> {
        self.request_with(path, request, RequestOptions::default())
            .await
    }

    /// [`request`](Self::request) with per-call options (a timeout, wait-for-ready, metadata,
    /// interceptors).
    pub async fn request_with<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
        options: RequestOptions,
    ) -> Result<Resp> {
        let wanted = known_name::<Resp>();
        self.call(path.as_ref(), Value::new(request), options, wanted)
            .await?
            .into_typed()
    }

    /// The dynamic form of [`request`](Self::request): a type-erased [`Value`] in and out.
    pub async fn request_value(
        &self,
        path: impl AsRef<str>,
        request: Value,
        options: RequestOptions,
    ) -> Result<Value> {
        self.call(path.as_ref(), request, options, None).await
    }

    /// Resolves `path`, runs the outgoing interceptors, checks the message types when the
    /// action's schema names them (the caller expects a response named `wanted`, when known),
    /// runs the incoming interceptors when the instance is local, and runs the handler.
    async fn call(
        &self,
        path: &str,
        request: Value,
        options: RequestOptions,
        wanted: Option<&'static str>,
    ) -> Result<Value> {
        self.check_not_stopped()?;
        let config = &self.inner.config;
        let timeout = options.timeout.unwrap_or(config.request_timeout);
        let deadline = deadline_after(timeout);
        // Without outgoing interceptors, a call to a routable path is routed without an
        // `.await`; the general (boxed) `route` waits for the path or runs the interceptors.
        let no_interceptors = config.outgoing.is_empty() && options.interceptors.is_empty();
        let now = if no_interceptors {
            self.route_now(path, &options)?
        } else {
            None
        };
        let routed = match now {
            Some(resolved) => {
                let metadata = options.metadata;
                metadata.check_limits(config.max_metadata_size, config.max_metadata_entries)?;
                resolved.with_metadata(metadata)
            }
            None => Box::pin(self.route(path, options, deadline, (deadline, timeout))).await?,
        };
        let (path, resolved, mut metadata) = (&*routed.path, routed.resolved, routed.metadata);
        // The slot is held for the call: its instance's handler and health need no copies.
        let slot = resolved.slot;
        let instance = slot
            .pick()
            .ok_or_else(|| Error::not_found(format!("no instance serves `{path}`")))?;
        if let Some(types) = &instance.types {
            // The handler's own Rust type needs no look (generated clients): only another
            // type, whose name is known, is compared with the schema's.
            if let Some(rust) = types.request_rust {
                if !request.holds(rust) {
                    types.check_request(path, request.known_name())?;
                }
            }
            types.check_response(path, wanted)?;
        }
        if instance.origin == Origin::Local {
            self.check_local_access(path, Access::Call, &resolved.path)?;
        }
        if instance.origin == Origin::Local && !config.incoming.is_empty() {
            // Boxed: the calls without incoming interceptors keep a smaller future.
            let incoming =
                self.intercept_incoming(&resolved.path, Caller::Local, metadata, deadline, timeout);
            metadata = Box::pin(incoming).await?;
        }
        let ctx = RequestContext::new(
            self.clone(),
            self.network_of_call(resolved.named_network),
            resolved.path,
            resolved.params,
            Caller::Local,
            deadline,
            metadata,
        );
        let stats = instance.stats.as_deref();
        // A peer's answer is never there at the first poll: polling it before the timer is
        // armed would only poll its stream twice.
        let local = instance.origin == Origin::Local;
        let answer = run_handler(
            &instance.handler,
            request,
            ctx,
            (deadline, timeout),
            local,
            path,
            stats,
        )
        .await;
        if matches!(&answer, Err(e) if e.code() == Code::DeadlineExceeded) {
            // Other instances serve the next calls for a while; this one is retried later.
            instance.health.timed_out(self.inner.config.timeout_penalty);
        }
        answer
    }

    /// Serves a request from a peer with this node's own instance of the action (never
    /// forwarding it to another peer), within the caller's timeout. The request is admitted
    /// (metadata, action, access, message type) before the future is made, and the future
    /// owns only what it needs while it waits: the mesh boxes one per call, and a future
    /// within the allocator's small sizes (about 1 KiB) is allocated and freed the cheap way.
    pub(crate) fn serve_remote(
        self,
        request: InboundRequest,
    ) -> impl Future<Output = Result<Value>> + Send + 'static {
        let admitted = self.admit_request(request);
        async move {
            let Admitted {
                network,
                path,
                from,
                resolved,
                mut metadata,
                payload,
                deadline,
                timeout,
            } = admitted?;
            let config = &self.inner.config;
            let slot = resolved.slot;
            let instance = slot
                .local()
                .ok_or_else(|| Error::not_found(format!("no action `{path}` on this node")))?;
            let caller = Caller::Remote(from);
            if !config.incoming.is_empty() {
                // Boxed, as for a local call: the calls without incoming interceptors keep a
                // smaller future.
                let incoming = self.intercept_incoming(
                    &resolved.path,
                    caller.clone(),
                    metadata,
                    deadline,
                    timeout,
                );
                metadata = Box::pin(incoming).await?;
            }
            let span = super::trace::server_span(&resolved.path, from, &metadata);
            let ctx = RequestContext::new(
                self.clone(),
                network,
                resolved.path,
                resolved.params,
                caller,
                deadline,
                metadata,
            );
            let stats = instance.stats.as_deref();
            let handler = &instance.handler;
            let request = self.sealed_scope(payload);
            let limit = (deadline, timeout);
            // The handler's future made where it is awaited (made first and awaited after, it
            // would be copied into the await's slot).
            let answer = if span.is_disabled() {
                run_handler(handler, request, ctx, limit, true, &path, stats).await
            } else {
                let run = run_handler(handler, request, ctx, limit, true, &path, stats);
                tracing::Instrument::instrument(run, span).await
            };
            answer.map(|value| self.sealed_scope(value))
        }
    }

    /// A peer's request checked before it is served: the node is running, the metadata
    /// within limits, the action this node's own and the peer allowed to call it, and the
    /// message type the one the action takes.
    fn admit_request(&self, request: InboundRequest) -> Result<Admitted> {
        self.check_not_stopped()?;
        let timeout = request.timeout.min(MAX_REMOTE_TIMEOUT);
        let deadline = deadline_after(timeout);
        let path = request.path;
        let (resolved, metadata) = self.admit_remote(
            &request.network,
            &path,
            &request.from,
            request.metadata,
            Access::Call,
        )?;
        let instance = resolved
            .slot
            .local()
            .ok_or_else(|| Error::not_found(format!("no action `{path}` on this node")))?;
        if let Some(types) = &instance.types {
            // The caller names its message type when prost does (a scalar, `String`, `()`).
            let sent = Some(request.payload_type.as_str()).filter(|t| !t.is_empty());
            types.check_request(&path, sent)?;
        }
        Ok(Admitted {
            network: self.other_network(&request.network),
            path,
            from: request.from,
            resolved,
            metadata,
            payload: request.payload,
            deadline,
            timeout,
        })
    }

    /// What every call from this node does before it picks an instance: resolves `path` in the
    /// call's network (waiting for it to be routable, within `setup`, when the call asks to),
    /// runs the node's outgoing interceptors and the call's own on its metadata (within
    /// `setup`; the interceptors see `deadline`, the whole call's), and checks the metadata
    /// against the node's limits. Shared by unary and streaming calls.
    pub(super) async fn route<'p>(
        &self,
        path: &'p str,
        options: RequestOptions,
        deadline: Instant,
        (setup_deadline, setup): (Instant, Duration),
    ) -> Result<Routed<'p>> {
        let config = &self.inner.config;
        let (in_network, resolved) = match self.route_now(path, &options)? {
            Some(routed) => (routed.path, routed.resolved),
            None => {
                let in_network = options.path_in_network(path);
                self.wait_routable(&in_network, setup_deadline).await?;
                let resolved = self
                    .inner
                    .registry
                    .resolve_action(&self.inner.network, &in_network, config.path_limits())
                    .map_err(|_| self.not_found(&in_network))?;
                (in_network, resolved)
            }
        };
        let mut metadata = options.metadata;
        if !config.outgoing.is_empty() || !options.interceptors.is_empty() {
            let call = Call {
                path: resolved.path.clone(),
                caller: Caller::Local,
                metadata,
                deadline,
            };
            let intercepted = async {
                let call = config.outgoing.run(call).await?;
                options.interceptors.run(call).await
            };
            metadata = within(setup_deadline, setup, &in_network, intercepted)
                .await?
                .metadata;
        }
        metadata.check_limits(config.max_metadata_size, config.max_metadata_entries)?;
        Ok(Routed {
            path: in_network,
            resolved,
            metadata,
        })
    }

    /// Resolves `path` in the call's network (a path without a prefix is in the call's
    /// network, else the node's default), synchronously: `Ok(None)` when no instance serves it
    /// yet and the call waits for one, `NotFound` when it does not wait. Inlined: it is all
    /// the routing most calls do.
    #[inline]
    fn route_now<'p>(
        &self,
        path: &'p str,
        options: &RequestOptions,
    ) -> Result<Option<Resolution<'p>>> {
        let in_network = options.path_in_network(path);
        let limits = self.inner.config.path_limits();
        match self
            .inner
            .registry
            .resolve_action(&self.inner.network, &in_network, limits)
        {
            Ok(resolved) => Ok(Some(Resolution {
                path: in_network,
                resolved,
            })),
            Err(e) if e.code() == Code::NotFound && options.wait_for_ready => Ok(None),
            Err(e) if e.code() == Code::NotFound => Err(self.not_found(&in_network)),
            Err(e) => Err(e),
        }
    }

    /// Checks `access` for a local caller on this node's own action `resolved` (called as
    /// `path`, perhaps with a network prefix). Without a policy, this one branch (inlined into
    /// the caller) is all a call pays for access control.
    #[inline]
    pub(super) fn check_local_access(
        &self,
        path: &str,
        access: Access,
        resolved: &str,
    ) -> Result<()> {
        if !self.inner.policed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.check_local_access_policed(path, access, resolved)
    }

    /// [`check_local_access`](Self::check_local_access) on a node with a policy.
    #[cold]
    #[inline(never)]
    fn check_local_access_policed(&self, path: &str, access: Access, resolved: &str) -> Result<()> {
        let network = match split_network(path) {
            Ok((Some(network), _)) => network,
            _ => &self.inner.network,
        };
        self.check_access(network, None, access, resolved)
    }

    /// What every call from a peer does before it reaches this node's own instance: its
    /// metadata checked against this node's limits, the action resolved in the peer's network
    /// (`NotFound` unless this node serves it itself, and for a path that names a network of
    /// its own), and `access` checked for the peer (whose id is its certificate's: a peer
    /// cannot claim another). Shared by unary and streaming calls.
    pub(super) fn admit_remote(
        &self,
        network: &str,
        path: &str,
        from: &NodeId,
        metadata: Vec<(String, bytes::Bytes)>,
        access: Access,
    ) -> Result<(Resolved, Metadata)> {
        let config = &self.inner.config;
        // The connection's network is the only one a peer reaches: a path that names a network
        // of its own (`ops:admin/x`) is as if it did not exist, whatever network it names (a
        // malformed prefix is an invalid argument, as ever).
        if let (Some(_), _) = split_network(path)? {
            return Err(Error::not_found(format!(
                "no action `{}` in network `{network}`",
                super::remote::shorten(path)
            )));
        }
        let metadata = Metadata::from_wire(
            metadata,
            config.max_metadata_size,
            config.max_metadata_entries,
        )?;
        let resolved = self
            .inner
            .registry
            .resolve_action(network, path, config.path_limits())?;
        if resolved.slot.local().is_none() {
            return Err(Error::not_found(format!("no action `{path}` on this node")));
        }
        if self.inner.policed.load(Ordering::Relaxed) {
            self.check_access(network, Some(from), access, &resolved.path)?;
        }
        Ok((resolved, metadata))
    }

    /// Runs the node's incoming interceptors on a call about to reach a local handler; returns
    /// the metadata the handler gets.
    pub(super) async fn intercept_incoming(
        &self,
        path: &Arc<str>,
        caller: Caller,
        metadata: Metadata,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Metadata> {
        let call = Call {
            path: path.clone(),
            caller,
            metadata,
            deadline,
        };
        let incoming = self.inner.config.incoming.run(call);
        Ok(within(deadline, timeout, path, incoming).await?.metadata)
    }
}

/// Runs interceptors under the call's deadline, turning a panic into `Internal`.
pub(super) async fn within(
    deadline: Instant,
    timeout: Duration,
    path: &str,
    interceptors: impl Future<Output = Result<Call>>,
) -> Result<Call> {
    let interceptors = AssertUnwindSafe(interceptors).catch_unwind();
    match tokio::time::timeout_at(deadline.into(), interceptors).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Err(Error::internal(format!(
            "an interceptor of `{path}` panicked: {}",
            panic_message(panic.as_ref())
        ))),
        Err(_) => Err(deadline_exceeded(path, timeout)),
    }
}

/// The instant `timeout` from now; a timeout too long to represent (such as `Duration::MAX`)
/// means a century, never a panic. Inlined into every call's future (the clock read stays a
/// call).
#[inline]
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

/// What "no deadline" means: longer than any process lives.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A day: the longest a peer may ask a handler to run.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs a handler under its deadline (the instant, and the timeout it came from), turning a
/// panic into `Internal`; counts the call in the local instance's `stats`. Most local handlers
/// answer on their first poll: when `poll_first`, the timer is armed only if the handler does
/// not.
async fn run_handler(
    handler: &ActionHandler,
    request: Value,
    ctx: RequestContext,
    (deadline, timeout): (Instant, Duration),
    poll_first: bool,
    path: &str,
    stats: Option<&ActionCounters>,
) -> Result<Value> {
    let timer = stats.map(ActionCounters::start);
    let mut answer = AssertUnwindSafe(handler(request, ctx)).catch_unwind();
    let first = if poll_first {
        futures::poll!(&mut answer)
    } else {
        Poll::Pending
    };
    let outcome = match first {
        Poll::Ready(outcome) => Ok(outcome),
        Poll::Pending => tokio::time::timeout_at(deadline.into(), answer).await,
    };
    let answer = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(panic)) => Err(Error::internal(format!(
            "the handler of `{path}` panicked: {}",
            panic_message(panic.as_ref())
        ))),
        Err(_) => Err(deadline_exceeded(path, timeout)),
    };
    if let Some(timer) = timer {
        timer.finish(answer.as_ref().err().map(Error::code));
    }
    answer
}

fn deadline_exceeded(path: &str, timeout: Duration) -> Error {
    Error::deadline_exceeded(format!("`{path}` did not answer within {timeout:?}"))
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
