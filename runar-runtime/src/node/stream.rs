//! The streaming call path: resolve the action as a request does, then run its stream handler.
//!
//! A local call runs the handler in a task of its own: it reads the caller's request stream
//! directly (polled only when the handler asks for the next message, never encoded), and its
//! replies wait in a channel of [`NodeConfig::stream_buffer`](crate::NodeConfig) messages (the
//! reply stream is polled only when the channel has room). Dropping the caller's [`Streaming`]
//! aborts that task, which drops the handler and its streams. A remote call opens one QUIC
//! stream to the peer (see `network/stream.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;

use super::Node;
use super::request::deadline_after;
use crate::error::{Error, Result};
use crate::network::{InboundStream, MessageStream, value_messages};
use crate::node::RequestOptions;
use crate::node::registry::Origin;
use crate::node::service::stream::{Typed, start_handler};
use crate::node::service::{
    CallKind, Caller, RawStreaming, RequestContext, StreamHandler, Streaming,
};
use crate::policy::Access;
use crate::value::{Payload, Value};

/// Longer than this is no deadline at all (see [`finite`]).
const UNBOUNDED: Duration = Duration::from_secs(50 * 365 * 24 * 60 * 60);

/// `remaining` when it is a real deadline; `None` for a call without one (a streaming call
/// whose caller set no timeout has a deadline a century away).
pub(crate) fn finite(remaining: Duration) -> Option<Duration> {
    (remaining < UNBOUNDED).then_some(remaining)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    /// Starts a streaming call to the action at `path` (registered with
    /// [`LifecycleContext::register_stream`](crate::LifecycleContext::register_stream)), sending
    /// `requests`, and returns the stream of replies.
    ///
    /// It returns as soon as the call is started (remote: the QUIC stream opened and the header
    /// written), never waiting for a first reply. Requests are taken from `requests` only when
    /// there is room for them (a local handler asks for the next one; a peer granted credit
    /// for it); the end of `requests` ends the request side. Dropping the returned
    /// [`Streaming`] cancels the call: the handler and its streams are dropped, on a peer
    /// within one round trip.
    ///
    /// A streaming call has no default deadline (a watch may live for hours): the node's
    /// request timeout does not apply, only a timeout the caller sets
    /// ([`request_stream_with`](Self::request_stream_with)), which bounds the whole call. A
    /// peer that vanishes ends the call with `Unavailable` within the network's failure
    /// detection (`NetworkConfig::idle_timeout`, with keep-alives every
    /// `keep_alive_interval`).
    ///
    /// ```
    /// use runar_runtime::{AbstractService, CallKind, LifecycleContext, Node, NodeConfig, Streaming};
    ///
    /// struct Counter;
    /// impl AbstractService for Counter {
    ///     fn name(&self) -> &str { "Counter" }
    ///     fn path(&self) -> &str { "counter" }
    ///     async fn init(&self, ctx: &LifecycleContext) -> runar_runtime::Result<()> {
    ///         ctx.register_stream("upto", CallKind::ServerStreaming, |mut req: Streaming<u32>, _ctx| async move {
    ///             let n = req.message().await?.unwrap_or(0);
    ///             Ok(futures::stream::iter((1..=n).map(Ok)))
    ///         })
    ///         .await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> runar_runtime::Result<()> {
    /// let node = Node::new(NodeConfig::new("node-a", "demo")).await?;
    /// node.add_service(Counter).await?;
    /// node.start().await?;
    /// let mut numbers: Streaming<u32> =
    ///     node.request_stream("counter/upto", runar_runtime::stream_once(3u32)).await?;
    /// let mut seen = Vec::new();
    /// while let Some(n) = numbers.message().await? {
    ///     seen.push(n);
    /// }
    /// assert_eq!(seen, [1, 2, 3]);
    /// node.stop().await
    /// # }
    /// ```
    pub async fn request_stream<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        requests: impl Stream<Item = Req> + Send + 'static,
    ) -> Result<Streaming<Resp>> {
        self.request_stream_with(path, requests, RequestOptions::default())
            .await
    }

    /// The dynamic form of [`request_stream_with`](Self::request_stream_with): type-erased
    /// [`Value`]s in and out (as [`request_value`](Self::request_value) is for unary calls),
    /// for tools that work from schemas, such as the `runar` CLI and gateways. Dropping the
    /// returned stream cancels the call.
    pub async fn request_stream_value(
        &self,
        path: impl AsRef<str>,
        requests: impl Stream<Item = Value> + Send + 'static,
        options: RequestOptions,
    ) -> Result<BoxStream<'static, Result<Value>>> {
        let requests = value_messages(requests.map(Ok).boxed());
        let raw = self.call_stream(path.as_ref(), requests, options).await?;
        Ok(raw.boxed())
    }

    /// How many messages each side of the action at `path` sends, when this node serves it
    /// itself (`None` otherwise: a peer's action's kind is the peer's to check).
    pub fn call_kind(&self, path: impl AsRef<str>) -> Option<CallKind> {
        let limits = self.inner.config.path_limits();
        let resolved = self
            .inner
            .registry
            .resolve_action(&self.inner.network, path.as_ref(), limits)
            .ok()?;
        resolved.slot.local().map(|instance| instance.kind)
    }

    /// [`request_stream`](Self::request_stream) with per-call options: a timeout (which bounds
    /// the whole call), wait-for-ready (within the timeout, else the node's request timeout),
    /// metadata, interceptors.
    pub async fn request_stream_with<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        requests: impl Stream<Item = Req> + Send + 'static,
        options: RequestOptions,
    ) -> Result<Streaming<Resp>> {
        let path = path.as_ref();
        let requests: MessageStream = Box::pin(Typed::new(requests.map(Ok), u64::MAX, path.into()));
        let raw = self.call_stream(path, requests, options).await?;
        Ok(Streaming::from_raw(raw))
    }

    /// Resolves `path`, runs the outgoing (and, for a local instance, incoming) interceptors,
    /// and starts the instance's stream handler.
    async fn call_stream(
        &self,
        path: &str,
        requests: MessageStream,
        options: RequestOptions,
    ) -> Result<RawStreaming> {
        self.check_not_stopped()?;
        let config = &self.inner.config;
        let timeout = options.timeout;
        // Finding an instance and running interceptors are bounded even without a deadline.
        let setup = timeout.unwrap_or(config.request_timeout);
        let setup_deadline = deadline_after(setup);
        let deadline = deadline_after(timeout.unwrap_or(Duration::MAX));
        let routed = self
            .route(path, options, deadline, (setup_deadline, setup))
            .await?;
        let (path, resolved, mut metadata) = (&*routed.path, routed.resolved, routed.metadata);
        let instance = resolved
            .slot
            .pick()
            .ok_or_else(|| Error::not_found(format!("no instance serves `{path}`")))?;
        let Some(handler) = instance.stream.clone() else {
            return Err(Error::invalid_argument(format!(
                "`{path}` is a unary action: call it with request"
            )));
        };
        let local = instance.origin == Origin::Local;
        if local {
            self.check_local_access(path, Access::Stream, &resolved.path)?;
        }
        if local && !config.incoming.is_empty() {
            metadata = self
                .intercept_incoming(
                    &resolved.path,
                    Caller::Local,
                    metadata,
                    setup_deadline,
                    setup,
                )
                .await?;
        }
        let ctx = RequestContext::new(
            self.clone(),
            self.network_of_call(resolved.named_network),
            resolved.path.clone(),
            resolved.params,
            Caller::Local,
            deadline,
            metadata,
        );
        let requests = RawStreaming::new(requests);
        let replies = if local {
            spawn_local(
                handler,
                requests,
                ctx,
                config.stream_buffer,
                resolved.path.clone(),
            )
        } else {
            // The peer's stream handler opens the QUIC stream and writes the header.
            RawStreaming::new(start_handler(&handler, requests, ctx, path).await?)
        };
        Ok(replies.with_timeout(timeout, resolved.path))
    }
}

impl Node {
    /// Serves a streaming call from a peer with this node's own instance of the action (never
    /// forwarding it), under the caller's deadline if it set one. The returned replies end at
    /// the handler's first error; a panic becomes `Internal` (the handler's reply stream does
    /// both, as `register_stream` wraps it).
    pub(crate) async fn serve_remote_stream(&self, stream: InboundStream) -> Result<MessageStream> {
        self.check_not_stopped()?;
        let config = &self.inner.config;
        let setup = stream.timeout.unwrap_or(config.request_timeout);
        let deadline = deadline_after(stream.timeout.unwrap_or(Duration::MAX));
        let path = stream.path.as_str();
        let (resolved, mut metadata) = self.admit_remote(
            &stream.network,
            path,
            &stream.from,
            stream.metadata,
            Access::Stream,
        )?;
        let instance = resolved
            .slot
            .local()
            .ok_or_else(|| Error::not_found(format!("no action `{path}` on this node")))?;
        let Some(handler) = instance.stream.clone() else {
            return Err(Error::invalid_argument(format!(
                "`{path}` is a unary action: call it with request"
            )));
        };
        let caller = Caller::Remote(stream.from);
        if !config.incoming.is_empty() {
            let setup_deadline = deadline_after(setup);
            metadata = self
                .intercept_incoming(
                    &resolved.path,
                    caller.clone(),
                    metadata,
                    setup_deadline,
                    setup,
                )
                .await?;
        }
        let ctx = RequestContext::new(
            self.clone(),
            self.other_network(&stream.network),
            resolved.path.clone(),
            resolved.params,
            caller,
            deadline,
            metadata,
        );
        // The caller's messages open as the handler decodes them; the replies seal as they
        // are written for the caller.
        let requests = RawStreaming::new(value_messages(self.sealed_stream(stream.requests)));
        let replies = start_handler(&handler, requests, ctx, path).await?;
        Ok(self.sealed_messages(replies))
    }
}

/// Runs a local stream handler in a task of its own; its replies wait in a channel of
/// `buffer` messages. The returned stream aborts the task when dropped.
fn spawn_local(
    handler: StreamHandler,
    requests: RawStreaming,
    ctx: RequestContext,
    buffer: usize,
    path: Arc<str>,
) -> RawStreaming {
    let (replies_tx, mut replies_rx) = mpsc::channel(buffer.max(1));
    let task = tokio::spawn(async move {
        let mut replies = match start_handler(&handler, requests, ctx, &path).await {
            Ok(replies) => replies,
            Err(error) => {
                let _ = replies_tx.send(Err(error)).await;
                return;
            }
        };
        // Room first, then the next reply: the handler's stream is polled only with room.
        while let Ok(permit) = replies_tx.reserve().await {
            // The replies end at their first error; a panic is `Internal` (see
            // `stream_handler`).
            match replies.next().await {
                Some(reply) => {
                    let last = reply.is_err();
                    permit.send(reply);
                    if last {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    let source = value_messages(futures::stream::poll_fn(move |cx| replies_rx.poll_recv(cx)));
    RawStreaming::new(source).with_guard(Box::new(AbortOnDrop(task.abort_handle())))
}
