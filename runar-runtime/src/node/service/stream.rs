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
use futures::{FutureExt as _, Stream, StreamExt as _};

use bytes::BytesMut;

use crate::error::{Error, Result};
use crate::network::frames::append_message_frame;
use crate::network::{MessageStream, Messages, TransportError, value_messages};
use crate::node::request::panic_message;
use crate::node::service::RequestContext;
use crate::value::scope::{self, Scope};
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
    dyn Fn(RawStreaming, RequestContext) -> BoxFuture<'static, Result<MessageStream>> + Send + Sync,
>;

/// Ends a call when dropped (aborts the task serving it, resets its QUIC stream, …).
pub(crate) type CallGuard = Box<dyn Send>;

/// The untyped form of [`Streaming`]: a stream of [`Value`]s that ends at the first error, at
/// its deadline (if any), or when the other side ends it. Dropping it cancels the call.
pub(crate) struct RawStreaming {
    source: MessageStream,
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
    pub(crate) fn new(source: MessageStream) -> Self {
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
        self.source = value_messages(futures::stream::empty());
        self._guard = None;
        self.deadline = None;
    }
}

impl RawStreaming {
    /// Polls the source with `poll` (for the next message, as a value or as a frame), ending
    /// the stream at its first error, at its end and at the deadline.
    fn poll_source<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut dyn Messages>, &mut Context<'_>) -> Poll<Option<Result<T>>>,
    ) -> Poll<Option<Result<T>>> {
        let this = self;
        if this.done {
            return Poll::Ready(None);
        }
        match poll(this.source.as_mut(), cx) {
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

impl Stream for RawStreaming {
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_source(cx, |source, cx| source.poll_next(cx))
    }
}

impl Messages for RawStreaming {
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
        max: usize,
        scope: Option<&Arc<dyn Scope>>,
    ) -> Poll<Option<Result<std::result::Result<(), TransportError>>>> {
        self.poll_source(cx, |source, cx| source.poll_frame(cx, out, max, scope))
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
            let left = match kind {
                CallKind::ClientStreaming => 1,
                _ => u64::MAX,
            };
            Ok(Box::pin(Typed::new(replies, left, path)) as MessageStream)
        })
    })
}

/// Typed messages (a handler's replies, a caller's requests) as [`Messages`], in one layer:
/// each message is moved into a [`Value`] as it is taken, or encoded straight into a writer's
/// frame for a peer (no `Value`, no allocation); the stream ends after its first error (or
/// after `left` messages), and a panic while polling it ends it with `Internal`.
pub(crate) struct Typed<S> {
    /// `None` once the stream ended.
    source: Option<Pin<Box<S>>>,
    /// The messages still to send.
    left: u64,
    path: Arc<str>,
}

impl<S> Typed<S> {
    /// `source`'s first `left` messages, for the call to `path` (named in a panic's error).
    pub(crate) fn new(source: S, left: u64, path: Arc<str>) -> Self {
        Typed {
            source: Some(Box::pin(source)),
            left,
            path,
        }
    }
}

impl<S, M> Typed<S>
where
    S: Stream<Item = Result<M>>,
{
    /// The next message, handed to `take`; the stream ended after an error, a panic, its end
    /// or its last allowed message.
    fn poll_typed<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(M) -> T,
    ) -> Poll<Option<Result<T>>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(None);
        };
        let item =
            match std::panic::catch_unwind(AssertUnwindSafe(|| source.as_mut().poll_next(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Some(Ok(message)))) => {
                    self.left = self.left.saturating_sub(1);
                    if self.left == 0 {
                        self.source = None;
                    }
                    return Poll::Ready(Some(Ok(take(message))));
                }
                Ok(Poll::Ready(Some(Err(error)))) => Some(Err(error)),
                Ok(Poll::Ready(None)) => None,
                Err(panic) => Some(Err(Error::internal(format!(
                    "the stream of `{}` panicked: {}",
                    self.path,
                    panic_message(panic.as_ref())
                )))),
            };
        self.source = None;
        Poll::Ready(item)
    }
}

impl<S, M> Stream for Typed<S>
where
    S: Stream<Item = Result<M>>,
    M: Payload,
{
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_typed(cx, Value::new)
    }
}

impl<S, M> Messages for Typed<S>
where
    S: Stream<Item = Result<M>> + Send,
    M: Payload,
{
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
        max: usize,
        scope: Option<&Arc<dyn Scope>>,
    ) -> Poll<Option<Result<std::result::Result<(), TransportError>>>> {
        self.poll_typed(cx, |message| match scope {
            Some(scope) => scope::within(scope, || append_message_frame(out, &message, max)),
            None => append_message_frame(out, &message, max),
        })
    }
}

/// Starts `handler` on `requests`, a panic turned into `Internal`.
pub(crate) async fn start_handler(
    handler: &StreamHandler,
    requests: RawStreaming,
    ctx: RequestContext,
    path: &str,
) -> Result<MessageStream> {
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
