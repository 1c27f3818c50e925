//! The request path: resolve the action, run its handler under the deadline, catch panics.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{Node, RequestOptions, STOPPED};
use crate::error::{Error, Result};
use crate::service::{Caller, RequestContext};
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
        if self.inner.state.load(Ordering::Acquire) == STOPPED {
            return Err(Error::unavailable("the node has stopped"));
        }
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
        let ctx = RequestContext::new(
            self.clone(),
            resolved.path,
            resolved.params,
            Caller::Local,
            deadline,
        );
        let answer = (instance.handler)(request, ctx);
        let guarded = AssertUnwindSafe(answer).catch_unwind();
        match tokio::time::timeout_at(deadline.into(), guarded).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(Error::internal(format!(
                "the handler of `{path}` panicked: {}",
                panic_message(panic.as_ref())
            ))),
            Err(_) => Err(deadline_exceeded(path, timeout)),
        }
    }
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
