//! The request path: resolve the action, run its handler under the deadline, catch panics.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{Node, RequestOptions};
use crate::error::{Error, Result};
use crate::network::InboundRequest;
use crate::node::service::{ActionHandler, Caller, RequestContext};
use crate::value::{Payload, Value};

impl Node {
    /// Sends `request` to the action at `path` and waits for its typed answer, within the node's
    /// request timeout. A local handler is called in memory: nothing is encoded.
    ///
    /// Fails with `NotFound` at once when no instance serves `path`, `DeadlineExceeded` when the
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

    /// [`request`](Self::request) with per-call options (a timeout).
    pub async fn request_with<Req: Payload, Resp: Payload>(
        &self,
        path: impl AsRef<str>,
        request: Req,
        options: RequestOptions,
    ) -> Result<Resp> {
        self.request_value(path, Value::new(request), options)
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
        let path = path.as_ref();
        self.check_not_stopped()?;
        let timeout = options.timeout.unwrap_or(self.inner.config.request_timeout);
        let deadline = Instant::now() + timeout;
        let resolved = self
            .inner
            .registry
            .resolve_action(&self.inner.network, path)?;
        let instance = resolved
            .slot
            .pick()
            .ok_or_else(|| Error::not_found(format!("no instance serves `{path}`")))?;
        let handler = instance.handler.clone();
        let ctx = RequestContext::new(
            self.clone(),
            resolved.path,
            resolved.params,
            Caller::Local,
            deadline,
        );
        run_handler(&handler, request, ctx, deadline, timeout, path).await
    }

    /// Serves a request from a peer with this node's own instance of the action (never
    /// forwarding it to another peer), within the caller's timeout.
    pub(crate) async fn serve_remote(&self, request: InboundRequest) -> Result<Value> {
        self.check_not_stopped()?;
        let timeout = request.timeout.min(MAX_REMOTE_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let path = request.path.as_str();
        let resolved = self.inner.registry.resolve_action(&request.network, path)?;
        let handler = resolved
            .slot
            .local()
            .map(|instance| instance.handler.clone())
            .ok_or_else(|| Error::not_found(format!("no action `{path}` on this node")))?;
        let ctx = RequestContext::new(
            self.clone(),
            resolved.path,
            resolved.params,
            Caller::Remote(request.from),
            deadline,
        );
        run_handler(&handler, request.payload, ctx, deadline, timeout, path).await
    }
}

/// A day: the longest a peer may ask a handler to run.
const MAX_REMOTE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs a handler under its deadline, turning a panic into `Internal`.
async fn run_handler(
    handler: &ActionHandler,
    request: Value,
    ctx: RequestContext,
    deadline: Instant,
    timeout: Duration,
    path: &str,
) -> Result<Value> {
    let mut answer = AssertUnwindSafe(handler(request, ctx)).catch_unwind();
    // Most local handlers answer on their first poll: only arm a timer when one does not.
    let outcome = match futures::poll!(&mut answer) {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(deadline_exceeded(path, timeout)),
        },
    };
    outcome.unwrap_or_else(|panic| {
        Err(Error::internal(format!(
            "the handler of `{path}` panicked: {}",
            panic_message(panic.as_ref())
        )))
    })
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
