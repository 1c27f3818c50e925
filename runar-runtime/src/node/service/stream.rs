//! Streaming calls: [`CallKind`], the incoming message stream [`Streaming`], and the type-erased
//! [`StreamHandler`] a streaming action registers.
//!
//! At the runtime level every stream is bidirectional: the caller sends a stream of requests and
//! gets a stream of replies. Unary, server-, client- and bidirectional streaming differ only in
//! how many messages each side sends, which [`CallKind`] records (generated code adapts the four
//! kinds onto this one shape).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, Stream, StreamExt as _};

use crate::error::{Error, Result};
use crate::node::request::panic_message;
use crate::node::service::RequestContext;
use crate::value::{Payload, Value};

/// How many messages each side of an action sends. Stored with every registered action (unary
/// actions are `Unary`), so introspection and schemas can report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CallKind {
    /// One request, one reply ([`Node::request`](crate::Node::request)).
    #[default]
    Unary,
    /// One request, a stream of replies.
    ServerStreaming,
    /// A stream of requests, one reply.
    ClientStreaming,
    /// A stream of requests, a stream of replies.
    Bidi,
}

impl CallKind {
    /// True for the three streaming kinds (served through
    /// [`Node::request_stream`](crate::Node::request_stream)).
    pub fn is_streaming(self) -> bool {
        self != CallKind::Unary
    }

    /// The kind as in a schema: `unary`, `server_streaming`, `client_streaming`, `bidi`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::ServerStreaming => "server_streaming",
            CallKind::ClientStreaming => "client_streaming",
            CallKind::Bidi => "bidi",
        }
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type-erased streaming action handler: takes the caller's messages, returns (once the call
/// is accepted) the stream of replies.
pub(crate) type StreamHandler = Arc<
    dyn Fn(
            RawStreaming,
            RequestContext,
        ) -> BoxFuture<'static, Result<BoxStream<'static, Result<Value>>>>
        + Send
        + Sync,
>;

/// Ends a call when dropped (aborts the task serving it, resets its QUIC stream, …).
pub(crate) type CallGuard = Box<dyn Send>;

/// The untyped form of [`Streaming`]: a stream of [`Value`]s that ends at the first error, at
/// its deadline (if any), or when the other side ends it. Dropping it cancels the call.
pub(crate) struct RawStreaming {
    source: BoxStream<'static, Result<Value>>,
    deadline: Option<Deadline>,
    done: bool,
    /// Dropped with the stream: cancels whatever produces the messages.
    _guard: Option<CallGuard>,
}

/// A whole call's deadline, as the consumer of its replies enforces it.
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    path: Arc<str>,
}

impl RawStreaming {
    /// A stream of `source`'s messages, which cancels nothing more when dropped.
    pub(crate) fn new(source: BoxStream<'static, Result<Value>>) -> Self {
        RawStreaming {
            source,
            deadline: None,
            done: false,
            _guard: None,
        }
    }

    /// Keeps `guard` until the stream is dropped.
    pub(crate) fn with_guard(mut self, guard: CallGuard) -> Self {
        self._guard = Some(guard);
        self
    }

    /// Ends the stream with `DeadlineExceeded` (and cancels the call) `timeout` from now.
    pub(crate) fn with_timeout(mut self, timeout: Option<Duration>, path: Arc<str>) -> Self {
        self.deadline = timeout.map(|timeout| Deadline {
            sleep: Box::pin(tokio::time::sleep_until(
                crate::node::request::deadline_after(timeout).into(),
            )),
            timeout,
            path,
        });
        self
    }

    /// Ends the stream now: drops the source and the guard, which cancels the call.
    fn end(&mut self) {
        self.done = true;
        self.source = futures::stream::empty().boxed();
        self._guard = None;
        self.deadline = None;
    }
}

impl Stream for RawStreaming {
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.source.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(value))) => return Poll::Ready(Some(Ok(value))),
            Poll::Ready(Some(Err(error))) => {
                this.end();
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(None) => {
                this.end();
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        // The clock too: a source that always has a message is `Pending` only when the task's
        // budget runs out, and then the timer is not ready either, however late it is.
        if let Some(deadline) = &mut this.deadline
            && (deadline.sleep.as_mut().poll(cx).is_ready()
                || deadline.sleep.deadline() <= tokio::time::Instant::now())
        {
            let error = Error::deadline_exceeded(format!(
                "the stream `{}` did not end within {:?}",
                deadline.path, deadline.timeout
            ));
            this.end();
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Pending
    }
}

impl fmt::Debug for RawStreaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStreaming")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// An incoming stream of messages: the requests a streaming handler reads, or the replies a
/// streaming call returns. Dropping it cancels the call.
///
/// It is a [`Stream`] of `Result<T>` (and `Unpin`); [`message`](Self::message) is the same
/// as a loop over it with `?`:
///
/// ```
/// # async fn demo(mut updates: runar_runtime::Streaming<String>) -> runar_runtime::Result<()> {
/// while let Some(update) = updates.message().await? {
///     println!("{update}");
/// }
/// # Ok(()) }
/// ```
///
/// The stream ends with `Ok(None)` when the other side ended it cleanly; an error (the
/// handler's, with its code and message, `Unavailable` when the peer vanished,
/// `DeadlineExceeded` past the call's timeout) is the last item. A message is held in memory
/// as it was sent (a local call's is never encoded) and decoded into `T` only when taken.
pub struct Streaming<T> {
    raw: RawStreaming,
    _type: PhantomData<fn() -> T>,
}

impl<T: Payload> Streaming<T> {
    pub(crate) fn from_raw(raw: RawStreaming) -> Self {
        Streaming {
            raw,
            _type: PhantomData,
        }
    }

    /// The next message; `Ok(None)` once the stream ended cleanly.
    pub async fn message(&mut self) -> Result<Option<T>> {
        self.next().await.transpose()
    }
}

impl<T: Payload> Stream for Streaming<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.raw.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(value))) => match value.into_typed::<T>() {
                Ok(message) => Poll::Ready(Some(Ok(message))),
                Err(error) => {
                    self.raw.end();
                    Poll::Ready(Some(Err(error)))
                }
            },
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("type", &std::any::type_name::<T>())
            .field("done", &self.raw.done)
            .finish()
    }
}

/// A stream of exactly one item: what a client-streaming handler returns (`stream_once(Ok(reply))`)
/// and what a server-streaming client sends (`stream_once(request)`).
pub fn stream_once<T: Send + 'static>(item: T) -> futures::stream::Iter<std::option::IntoIter<T>> {
    futures::stream::iter(Some(item))
}

/// Wraps a typed streaming handler as a [`StreamHandler`]. Its replies end at the first error
/// (a panic of the reply stream becomes `Internal`); for `ClientStreaming`, only the first
/// reply is sent (the call ends after it).
pub(crate) fn stream_handler<Req, Resp, F, Fut, S>(kind: CallKind, f: F) -> StreamHandler
where
    Req: Payload,
    Resp: Payload,
    F: Fn(Streaming<Req>, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S>> + Send + 'static,
    S: Stream<Item = Result<Resp>> + Send + 'static,
{
    Arc::new(move |requests: RawStreaming, ctx: RequestContext| {
        let path = ctx.shared_path().clone();
        let fut = f(Streaming::from_raw(requests), ctx);
        Box::pin(async move {
            let replies = fut.await?;
            Ok(Replies {
                source: Some(Box::pin(replies)),
                left: match kind {
                    CallKind::ClientStreaming => 1,
                    _ => u64::MAX,
                },
                path,
            }
            .boxed())
        })
    })
}

/// A typed handler's reply stream as [`Value`]s, in one layer: each reply is moved into a
/// `Value` as it is taken, the stream ends after its first error (or after `left` replies),
/// and a panic while polling it ends it with `Internal`.
struct Replies<S> {
    /// `None` once the stream ended.
    source: Option<Pin<Box<S>>>,
    /// The replies still to send.
    left: u64,
    path: Arc<str>,
}

impl<S, Resp> Stream for Replies<S>
where
    S: Stream<Item = Result<Resp>>,
    Resp: Payload,
{
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(source) = this.source.as_mut() else {
            return Poll::Ready(None);
        };
        let item =
            match std::panic::catch_unwind(AssertUnwindSafe(|| source.as_mut().poll_next(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Some(Ok(reply)))) => {
                    this.left = this.left.saturating_sub(1);
                    if this.left == 0 {
                        this.source = None;
                    }
                    return Poll::Ready(Some(Ok(Value::new(reply))));
                }
                Ok(Poll::Ready(item)) => item.map(|e| e.map(Value::new)),
                Err(panic) => Some(Err(Error::internal(format!(
                    "the stream of `{}` panicked: {}",
                    this.path,
                    panic_message(panic.as_ref())
                )))),
            };
        this.source = None;
        Poll::Ready(item)
    }
}

/// Starts `handler` on `requests`, a panic turned into `Internal`.
pub(crate) async fn start_handler(
    handler: &StreamHandler,
    requests: RawStreaming,
    ctx: RequestContext,
    path: &str,
) -> Result<BoxStream<'static, Result<Value>>> {
    match AssertUnwindSafe(handler(requests, ctx))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(panic) => Err(Error::internal(format!(
            "the handler of `{path}` panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}
