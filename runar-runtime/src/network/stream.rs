//! Streaming calls over QUIC: one bidirectional stream (kind [`KIND_STREAM`]) per call.
//!
//! The caller writes a `Request` header and its initial credit, then one
//! `StreamFrame { message }` per request and `StreamFrame { trailer }` when its requests end;
//! the server writes its initial credit, one `StreamFrame { message }` per reply and ends with
//! one `StreamFrame { trailer }` (see `proto/runar/v1/README.md`).
//!
//! **Flow control is per message, by credit.** Each side grants the other as many messages as
//! it buffers (`stream_buffer`) and grants more as its consumer takes them; a sender takes its
//! producer's next message only when it holds a credit. Each side reads its stream eagerly into
//! that bounded buffer, so a consumer that stops reading stops its producer without leaving
//! unread bytes in QUIC's buffers: the connection's flow-control window is never held by a
//! stalled stream, and other streams and unary requests on the connection carry on. A peer that
//! sends past its credit breaks the protocol and the call ends.
//!
//! Each side runs a reader task (frames in: messages to the consumer's buffer, credits to the
//! writer) and a writer (messages out as credit allows, grants out as the consumer takes
//! messages).
//!
//! **Batching.** Per-message costs are what limit a stream of small messages, so the writer
//! encodes every message its producer has ready (within its credit) into one reused buffer,
//! with the grants it owes, and writes it at once — a typed producer ([`Messages::poll_frame`])
//! encodes each message there directly, with no [`Value`] per message; the reader hands the
//! consumer every complete frame of a received chunk before it waits again, waking the consumer
//! once, consecutive message frames as one run (a slice of the chunk, taken apart by the
//! consumer: the chunk is shared once per run, not once per message, and the per-message
//! slicing happens on the consumer's thread); the consumer takes the whole queue in one lock
//! and grants credit back in batches of half its window. Cancellation: dropping the caller's
//! reply stream resets its send side and stops its receive side; the server drops the
//! handler's streams as soon as it sees either.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use quinn::{RecvStream, SendStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::TransportError;
use super::budget::{Held, PeerBudget};
use super::frames::{Measured, RequestFrame, append_response_frame, decode_request};
use super::framing::{BufferPool, FrameReader, encode_frame, read_body, read_header, split_frame};
use super::interface::{InboundStream, NodeHandler};
use super::lane::{KIND_CALLS, serve_calls};
use super::peer::{
    KIND_REQUEST, Peer, codes, cut_slow_stream, read_kind, serve_request, unknown_kind,
    within_read_timeout,
};
use super::transport::OpenBidiStream;
use crate::coop;
use crate::error::{Code, Error, Result};
use crate::identity::NodeId;
use crate::metadata::Metadata;
use crate::value::Value;
use crate::value::scope::Scope;
use crate::wire;

/// The first byte of a streaming call's stream.
pub(crate) const KIND_STREAM: u8 = 4;

/// The most bytes of ready messages gathered into one write.
pub(super) const BATCH_BYTES: usize = 64 * 1024;

/// How many batch buffers a writer keeps for reuse once QUIC gives them back (about as many
/// as a fast stream has unacknowledged on loopback).
const BATCH_BUFFERS_KEPT: usize = 16;

/// The most credit a sender may hold: a peer granting more breaks the protocol.
pub(crate) const MAX_CREDIT: usize = 1 << 24;

/// A stream of messages (requests or replies) that ends at its first error, as it arrives.
pub(crate) type ValueStream = BoxStream<'static, Result<Value>>;

/// A call's outgoing messages (requests or replies), ending at the first error: a stream of
/// [`Value`]s, as a local consumer takes them, which a writer to a peer asks instead to append
/// each message to its buffer as a frame ([`poll_frame`](Self::poll_frame)). A typed source
/// (`node::service::stream`) encodes its messages there as they are, without a `Value` (and
/// the allocation that boxes a typed message into one) per message.
pub(crate) trait Messages: Stream<Item = Result<Value>> + Send {
    /// Polls for the next message and appends it to `out` as one `StreamFrame { message }`
    /// frame of at most `max` bytes, encoded within the seal `scope` if there is one:
    /// `Some(Ok(Err(_)))` for a message over `max` (`out` unchanged), `Some(Err(_))` for the
    /// stream's error, `None` at its end.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
        max: usize,
        scope: Option<&Arc<dyn Scope>>,
    ) -> Poll<Option<Result<std::result::Result<(), TransportError>>>> {
        self.poll_next(cx).map(|next| {
            next.map(|message| {
                message.map(|value| {
                    append_response_frame(out, Measured::new(&value.within(scope)), max)
                })
            })
        })
    }
}

/// Outgoing messages, boxed.
pub(crate) type MessageStream = Pin<Box<dyn Messages>>;

/// Any stream of [`Value`]s as [`Messages`] (each message encoded from its value). `Unpin`,
/// so an already boxed stream is not boxed again (box one that is not).
pub(crate) fn value_messages(
    values: impl Stream<Item = Result<Value>> + Send + Unpin + 'static,
) -> MessageStream {
    Box::pin(Values(values))
}

/// See [`value_messages`].
struct Values<S>(S);

impl<S: Stream<Item = Result<Value>> + Unpin> Stream for Values<S> {
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_next_unpin(cx)
    }
}

impl<S: Stream<Item = Result<Value>> + Send + Unpin> Messages for Values<S> {}

/// How many messages of one streaming call a side buffers: the credit it grants at first, and
/// the most its credit grows to (see [`Inbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamBuffer {
    /// The credit granted at first (`NodeConfig::stream_buffer`).
    pub(crate) initial: usize,
    /// The most credit a consumer that keeps up grows it to (`NodeConfig::stream_buffer_max`).
    pub(crate) max: usize,
}

impl StreamBuffer {
    /// `initial` messages at first, growing to `max` (at least `initial`, at most the most
    /// credit a peer accepts).
    pub(crate) fn new(initial: usize, max: usize) -> Self {
        let initial = initial.clamp(1, MAX_CREDIT);
        StreamBuffer {
            initial,
            max: max.clamp(initial, MAX_CREDIT),
        }
    }
}

/// The streaming calls one connection may have open on this node at once.
#[derive(Clone)]
pub(crate) struct StreamSlots {
    permits: Arc<Semaphore>,
    max: u32,
}

impl StreamSlots {
    /// Room for `max` streaming calls at once.
    pub(crate) fn new(max: u32) -> Self {
        StreamSlots {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }
}

/// One decoded frame of a streaming call.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// A message, still encoded.
    Message(Value),
    /// The end of the sender's messages: `None` for a clean end, else its error.
    End(Option<Error>),
    /// The receiver of the frame may send this many more messages.
    Credit(u32),
}

/// Decodes one `StreamFrame`. A frame that is not one (or has no member) is an error.
pub(crate) fn decode_stream_frame(frame: Bytes) -> Result<StreamItem> {
    if let Some(message) = message_of(&frame) {
        return Ok(StreamItem::Message(Value::from_encoded(message)));
    }
    let frame = wire::StreamFrame::decode(frame)
        .map_err(|e| Error::invalid_argument(format!("malformed stream frame: {e}")))?;
    match frame.kind {
        Some(wire::stream_frame::Kind::Message(bytes)) => {
            Ok(StreamItem::Message(Value::from_encoded(bytes)))
        }
        Some(wire::stream_frame::Kind::Trailer(trailer)) => {
            Ok(StreamItem::End(trailer.error.map(|status| {
                Error::new(Code::from_u32(status.code), status.message)
            })))
        }
        Some(wire::stream_frame::Kind::Credit(n)) => Ok(StreamItem::Credit(n)),
        None => Err(Error::invalid_argument("an empty stream frame")),
    }
}

/// The message of a frame that is `StreamFrame { message }` alone (field 1, length-delimited,
/// its length the rest of the frame), as prost would decode it, without prost's decoder: the
/// frame nearly every call is made of. `None` for any other frame.
fn message_of(frame: &Bytes) -> Option<Bytes> {
    match message_head(frame) {
        0 => None,
        start => Some(frame.slice(start..)),
    }
}

/// How many bytes lead the message of a frame body that is `StreamFrame { message }` alone
/// (its key and length); 0 for any other frame (a message frame has at least 2).
fn message_head(body: &[u8]) -> usize {
    let Some((&key, mut rest)) = body.split_first() else {
        return 0;
    };
    // Field 1, wire type 2 (length-delimited).
    if key != 0x0A {
        return 0;
    }
    match prost::encoding::decode_varint(&mut rest) {
        Ok(len) if u64::try_from(rest.len()) == Ok(len) => body.len().saturating_sub(rest.len()),
        _ => 0,
    }
}

/// One frame holding `StreamFrame { credit }`.
fn credit_frame(credit: u32) -> Option<Bytes> {
    let frame = wire::StreamFrame {
        kind: Some(wire::stream_frame::Kind::Credit(credit)),
    };
    // A few bytes: within any maximum message size worth having.
    encode_frame(None, &frame, usize::MAX).ok()
}

/// One frame holding the trailer for `outcome`.
fn trailer_frame(outcome: &Result<()>, max: usize) -> Option<Bytes> {
    let trailer = |error: Option<&Error>| wire::StreamFrame {
        kind: Some(wire::stream_frame::Kind::Trailer(wire::Trailer {
            error: error.map(|e| wire::ErrorStatus {
                code: e.code().as_u32(),
                message: e.message().to_owned(),
            }),
        })),
    };
    match encode_frame(None, &trailer(outcome.as_ref().err()), max) {
        Ok(frame) => Some(frame),
        // An error message too long for the frame: its code alone still fits.
        Err(_) => {
            let code = outcome.as_ref().err().map_or(Code::Internal, Error::code);
            encode_frame(None, &trailer(Some(&Error::new(code, ""))), max).ok()
        }
    }
}

/// The error for a transport failure on a streaming call's stream.
fn transport_error(peer: NodeId, path: &str, error: TransportError) -> Error {
    match error {
        TransportError::FrameTooLarge { len, max } => Error::resource_exhausted(format!(
            "a message of the stream `{path}` is {len} bytes, over the maximum message size of {max}"
        )),
        TransportError::OverBudget(len) => Error::resource_exhausted(format!(
            "no room for a message of {len} bytes of the stream `{path}` in the node's budget"
        )),
        TransportError::Read(quinn::ReadError::Reset(code)) => Error::unavailable(format!(
            "peer {peer} reset the stream `{path}` (code {code})"
        )),
        e => Error::unavailable(format!("the stream `{path}` with peer {peer} failed: {e}")),
    }
}

/// Credit this side grants the peer as its consumer takes messages: the writer sends it.
#[derive(Default)]
struct Grants {
    pending: AtomicU32,
    notify: Notify,
}

impl Grants {
    fn add(&self, n: u32) {
        self.pending.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }

    fn take(&self) -> u32 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

/// What the reader task hands the consumer.
enum Inbound {
    /// A message.
    Message(Value),
    /// Consecutive message frames as they arrived, headers included
    /// ([`FrameReader::ready_run`]): the consumer takes them apart, so a received chunk is
    /// shared once per run rather than once per message, and by the consumer's thread alone.
    Run(Bytes),
    /// The room in the peer's budget that the messages queued before it hold: released as
    /// the last of them is taken.
    Release(Held),
    /// The end of the peer's messages: clean, or with an error.
    End(Option<Error>),
}

/// The messages waiting for a call's consumer, shared by whoever fills them ([`InboxTx`]) and
/// the consumer ([`Inbox`]), which takes all of them at once when it has none left.
struct Queue {
    items: VecDeque<Inbound>,
    /// The messages the peer may still send: the credit granted and not yet used.
    room: usize,
    /// The consumer, waiting for an item.
    waker: Option<Waker>,
    /// Live [`InboxTx`] handles: with none left and nothing queued, the stream closed.
    senders: usize,
    /// False once the consumer is gone: messages are dropped.
    open: bool,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes the consumer, if it waits, once the lock is released.
fn wake(mut queue: MutexGuard<'_, Queue>) {
    let waker = queue.waker.take();
    drop(queue);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Fills a call's [`Inbox`]: the reader task, and on the caller's side the request writer
/// (which may end the call with the request side's error).
struct InboxTx(Arc<Mutex<Queue>>);

/// A message that the peer sent without credit for it.
struct OverCredit;

impl InboxTx {
    /// Queues `batch` (its `count` messages dropped if the consumer is gone), `held` released
    /// when the last of them is taken; the peer must have had credit for all of them.
    fn messages(
        &self,
        batch: &mut Vec<Inbound>,
        count: usize,
        held: Held,
    ) -> Result<(), OverCredit> {
        let mut queue = lock(&self.0);
        if !queue.open {
            drop(queue);
            batch.clear();
            return Ok(());
        }
        queue.room = queue.room.checked_sub(count).ok_or(OverCredit)?;
        queue.items.extend(batch.drain(..));
        queue.items.push_back(Inbound::Release(held));
        wake(queue);
        Ok(())
    }

    /// The messages the peer may still send.
    fn room(&self) -> usize {
        lock(&self.0).room
    }

    /// Queues the end of the messages, clean or with an error.
    fn end(&self, end: Option<Error>) {
        let mut queue = lock(&self.0);
        if queue.open {
            queue.items.push_back(Inbound::End(end));
            wake(queue);
        }
    }
}

impl Clone for InboxTx {
    fn clone(&self) -> Self {
        let mut queue = lock(&self.0);
        queue.senders = queue.senders.saturating_add(1);
        drop(queue);
        InboxTx(self.0.clone())
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        let mut queue = lock(&self.0);
        queue.senders = queue.senders.saturating_sub(1);
        if queue.senders == 0 {
            wake(queue);
        }
    }
}

/// The consumer's side of a call's incoming messages: a bounded buffer the reader task fills
/// (never past the credit granted), and the grants given back as messages are taken.
struct Inbox {
    queue: Arc<Mutex<Queue>>,
    /// Items taken from the queue in one go, not yet handed out.
    taken_items: VecDeque<Inbound>,
    /// What is left of the run of message frames being handed out.
    run: Bytes,
    /// Messages of runs handed out since the cooperative budget was last consulted.
    unbudgeted: coop::Steps,
    grants: Arc<Grants>,
    /// The credit window: the messages the peer may have sent and not had taken.
    window: usize,
    /// The most the window grows to.
    max_window: usize,
    /// Messages taken and not yet granted back: they go back in batches of half the window.
    taken: usize,
    done: bool,
    /// Dropped with the inbox (the caller's side: cancels the call).
    _guard: Option<tokio_util::sync::DropGuard>,
}

impl Inbox {
    /// The next item: from those already taken, else all the queue holds. `None` while the
    /// queue is empty (the waker then registered), `Some(None)` once it closed.
    fn next_item(&mut self, cx: &mut Context<'_>) -> Option<Option<Inbound>> {
        if let Some(item) = self.taken_items.pop_front() {
            return Some(Some(item));
        }
        let mut queue = lock(&self.queue);
        if queue.items.is_empty() {
            if queue.senders == 0 {
                return Some(None);
            }
            match &queue.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => queue.waker = Some(cx.waker().clone()),
            }
            return None;
        }
        std::mem::swap(&mut queue.items, &mut self.taken_items);
        drop(queue);
        Some(self.taken_items.pop_front())
    }
}

impl Inbox {
    /// A run (or a lone message) is handed out: the last of a batch releases the batch's room
    /// in the budget.
    fn took_last_of_run(&mut self) {
        if let Some(Inbound::Release(_)) = self.taken_items.front() {
            self.taken_items.pop_front();
        }
    }

    /// Counts a message handed out, granting the peer credit for a batch of them. A grant
    /// that finds the peer out of credit (it has sent all it was allowed: the producer is held
    /// by the grants, not the other way round) also doubles the window, up to its maximum, so
    /// that the grants' round trip stops holding a producer and consumer that keep up.
    fn took_message(&mut self) {
        self.taken = self.taken.saturating_add(1);
        if self.taken >= (self.window / 2).max(1) {
            // Room first: the grant may reach the peer, and its messages this side, as soon
            // as it is added.
            let mut queue = lock(&self.queue);
            let mut grant = self.taken;
            if queue.room == 0 && self.window < self.max_window {
                let grow = self.window.min(self.max_window - self.window);
                self.window += grow;
                grant += grow;
            }
            queue.room = queue.room.saturating_add(grant);
            drop(queue);
            self.grants.add(u32::try_from(grant).unwrap_or(u32::MAX));
            self.taken = 0;
        }
    }
}

impl Stream for Inbox {
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if !this.run.is_empty() {
                // A run's messages count against the task's cooperative budget (which makes a
                // consumer that always finds a message yield now and then) in steps of
                // `coop::ITEMS_PER_UNIT`.
                std::task::ready!(this.unbudgeted.poll_proceed(cx, coop::ITEMS_PER_UNIT));
                this.unbudgeted.took();
                // The reader queued only whole message frames.
                let Some(mut body) = split_frame(&mut this.run) else {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::internal(
                        "a broken run of stream frames",
                    ))));
                };
                body.advance(message_head(&body));
                if this.run.is_empty() {
                    this.took_last_of_run();
                }
                this.took_message();
                return Poll::Ready(Some(Ok(Value::from_encoded(body))));
            }
            // A consumer that always finds more still yields to other tasks now and then.
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let Some(item) = this.next_item(cx) else {
                return Poll::Pending;
            };
            coop.made_progress();
            return match item {
                Some(Inbound::Run(run)) => {
                    this.run = run;
                    continue;
                }
                Some(Inbound::Message(value)) => {
                    this.took_last_of_run();
                    this.took_message();
                    Poll::Ready(Some(Ok(value)))
                }
                Some(Inbound::End(end)) => {
                    this.done = true;
                    Poll::Ready(end.map(Err))
                }
                // Released with its batch's last message; never first in a queue.
                Some(Inbound::Release(held)) => {
                    drop(held);
                    continue;
                }
                None => {
                    this.done = true;
                    Poll::Ready(Some(Err(Error::unavailable("the stream closed"))))
                }
            };
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = lock(&self.queue);
        queue.open = false;
        let items = std::mem::take(&mut queue.items);
        drop(queue);
        // Messages still queued release their room in the peer's budget.
        drop(items);
    }
}

/// What a reader task needs.
struct Reader {
    recv: RecvStream,
    frames: FrameReader,
    /// Where messages go; `None` once the peer's messages ended (credits may still come).
    inbox: Option<InboxTx>,
    /// The credit this side may spend sending.
    credit: Arc<Semaphore>,
    /// Cancelled when the call is over (either side).
    stop: CancellationToken,
    /// The caller's side: the peer's trailer ends the call.
    caller: bool,
    /// Where queued messages hold their bytes: the peer's budget.
    budget: PeerBudget,
    /// The longest the reader waits for room in the budget (the connection's read timeout);
    /// then the call fails.
    read_timeout: Duration,
    /// Messages of frames already received, not yet queued: they go to the consumer together
    /// (one lock, one take from the budget) before the reader waits again.
    batch: Vec<Inbound>,
    /// How many messages `batch` holds.
    batch_messages: usize,
    /// Their bytes.
    batch_bytes: usize,
    peer: NodeId,
    path: Arc<str>,
}

impl Reader {
    /// Queues the batch of messages for the consumer, their bytes held in the peer's budget
    /// until the last of them is taken (waiting for room unless `cancelled`). `Ok(false)`: the
    /// call stopped meanwhile; an error: the peer sent past its credit, or the connection is
    /// closing.
    async fn deliver(&mut self, cancelled: Pin<&mut impl Future<Output = ()>>) -> Result<bool> {
        if self.batch.is_empty() {
            return Ok(true);
        }
        let len = std::mem::take(&mut self.batch_bytes);
        let count = std::mem::take(&mut self.batch_messages);
        let held = match self.budget.try_acquire(len) {
            Some(held) => held,
            None => {
                // No waiting for room for messages the peer had no credit for.
                if let Some(inbox) = &self.inbox
                    && inbox.room() < count
                {
                    return Err(Error::invalid_argument(
                        "the peer sent past the credit it was granted",
                    ));
                }
                let held = tokio::select! {
                    _ = cancelled => return Ok(false),
                    held = tokio::time::timeout(self.read_timeout, self.budget.acquire(len)) => held,
                };
                match held {
                    Ok(Some(held)) => held,
                    Ok(None) => return Err(Error::unavailable("the connection is closing")),
                    Err(_) => return Err(super::budget::stayed_full()),
                }
            }
        };
        match &self.inbox {
            Some(inbox) => inbox
                .messages(&mut self.batch, count, held)
                .map_err(|OverCredit| {
                    Error::invalid_argument("the peer sent past the credit it was granted")
                })?,
            None => self.batch.clear(),
        }
        Ok(true)
    }

    /// Ends the call with `failure`: the consumer gets it after the messages queued before it;
    /// the call stops at once, even while the consumer does not read.
    fn fail(&mut self, failure: Error) {
        tracing::debug!(peer = %self.peer, path = %self.path, error = %failure, "a streaming call failed");
        let _ = self.recv.stop(codes::PROTOCOL);
        self.end(Some(failure));
        self.stop.cancel();
    }

    /// Hands `end` to the consumer.
    fn end(&mut self, end: Option<Error>) {
        if let Some(inbox) = self.inbox.take() {
            inbox.end(end);
        }
    }
}

/// A frame decoded, with its length.
fn decoded(frame: Bytes) -> (Result<StreamItem>, usize) {
    let len = frame.len();
    (decode_stream_frame(frame), len)
}

/// Reads a call's frames as they come: messages into the consumer's bounded buffer (a peer that
/// sends past its credit breaks the protocol), credits to this side's writer, the trailer to
/// the consumer. On the caller's side the server's trailer (or any failure) ends the call.
///
/// Every frame of a received chunk is handled before the next wait (one wake-up of the
/// consumer per chunk, not per message).
async fn read_frames(mut reader: Reader) {
    let stop = reader.stop.clone();
    let mut cancelled = std::pin::pin!(stop.cancelled());
    loop {
        // Message frames that have arrived go to the consumer as they lie, a run at a time.
        if reader.inbox.is_some() {
            let (run, count) = reader
                .frames
                .ready_run(|body| message_head(body) > 0, usize::MAX);
            if count > 0 {
                reader.batch_bytes = reader.batch_bytes.saturating_add(run.len());
                reader.batch_messages = reader.batch_messages.saturating_add(count);
                reader.batch.push(Inbound::Run(run));
            }
        }
        // Any other frame that has arrived (a credit, a trailer, a message after the trailer).
        // A frame gathered from pieces already holds its room in the budget (`gathered`).
        let mut gathered = None;
        let frame = match reader.frames.ready() {
            Some(frame) => frame.map(|frame| Some(decoded(frame))),
            None => {
                // Everything received is handled: the messages go to the consumer at once.
                match reader.deliver(cancelled.as_mut()).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(failure) => {
                        reader.fail(failure);
                        return;
                    }
                }
                tokio::select! {
                    biased;
                    _ = cancelled.as_mut() => {
                        let _ = reader.recv.stop(codes::CANCELLED);
                        return;
                    }
                    frame = reader.frames.next(&mut reader.recv) => {
                        gathered = reader.frames.take_held();
                        frame.map(|f| f.map(decoded))
                    }
                }
            }
        };
        let failure = match frame {
            Ok(Some((item, len))) => {
                match item {
                    Ok(StreamItem::Message(value)) => {
                        if reader.inbox.is_some() {
                            reader.batch.push(Inbound::Message(value));
                            reader.batch_messages = reader.batch_messages.saturating_add(1);
                            match gathered {
                                // Its room goes with it, released once it is taken.
                                Some(held) => reader.batch.push(Inbound::Release(held)),
                                None => reader.batch_bytes = reader.batch_bytes.saturating_add(len),
                            }
                            continue;
                        }
                        Error::invalid_argument("the peer sent a message after its trailer")
                    }
                    Ok(StreamItem::Credit(n)) => {
                        let n = n as usize;
                        if reader.credit.available_permits().saturating_add(n) > MAX_CREDIT {
                            Error::invalid_argument("the peer granted too much credit")
                        } else {
                            reader.credit.add_permits(n);
                            continue;
                        }
                    }
                    Ok(StreamItem::End(end)) => {
                        match reader.deliver(cancelled.as_mut()).await {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(failure) => {
                                reader.fail(failure);
                                return;
                            }
                        }
                        reader.end(end);
                        if reader.caller {
                            // The server's trailer: the call is over.
                            reader.stop.cancel();
                            return;
                        }
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Ok(None) => {
                if reader.caller && reader.inbox.is_some() {
                    Error::unavailable(format!(
                        "peer {} ended the stream `{}` without a trailer",
                        reader.peer, reader.path
                    ))
                } else {
                    // The caller finishes its side once the call is over.
                    reader.end(None);
                    return;
                }
            }
            Err(TransportError::Read(quinn::ReadError::Reset(_))) if !reader.caller => {
                Error::cancelled(format!("the caller cancelled the stream `{}`", reader.path))
            }
            Err(e) => transport_error(reader.peer, &reader.path, e),
        };
        // The messages before the failure first, if they fit.
        if let Ok(false) | Err(_) = reader.deliver(cancelled.as_mut()).await {
            reader.batch.clear();
        }
        reader.fail(failure);
        return;
    }
}

/// How a side's messages ended, as [`pump`] saw it.
enum Pumped {
    /// The producer ended, cleanly or with an error (a deadline, a message over the size).
    Ended(Result<()>),
    /// The call stopped (cancelled, the peer stopped reading, the stream failed).
    Stopped,
}

/// What [`pump`] sends with.
struct Pump<'a> {
    send: &'a mut SendStream,
    credit: &'a Semaphore,
    grants: &'a Grants,
    stop: &'a CancellationToken,
    deadline: Option<tokio::time::Instant>,
    max: usize,
    peer: NodeId,
    path: &'a str,
}

/// Takes all the credit `credit` holds now (none if it holds none).
fn take_credit(credit: &Semaphore) -> usize {
    let n = u32::try_from(credit.available_permits()).unwrap_or(u32::MAX);
    match credit.try_acquire_many(n) {
        Ok(permits) if n > 0 => {
            permits.forget();
            n as usize
        }
        _ => 0,
    }
}

/// Sends `messages` as the peer's credit allows (the producer is polled only with a credit in
/// hand), and this side's grants as they come, until the messages end or the call stops.
///
/// Every message the producer has ready (and credit allows) goes into one buffer, with any
/// grants due, and out in one write of at most about [`BATCH_BYTES`]; the buffer is reused.
async fn pump<F: Future>(
    p: Pump<'_>,
    messages: &mut MessageStream,
    mut stopped: Pin<&mut F>,
) -> Pumped {
    let mut expired = std::pin::pin!(async {
        match p.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    // Credit taken from `p.credit` and not yet spent: one message each.
    let mut credit = 0usize;
    // The outcome of a poll of the producer not acted on yet: a message is in `chunk` already.
    type Framed = Option<Result<std::result::Result<(), TransportError>>>;
    let mut pending: Option<Framed> = None;
    let buffers = BufferPool::new(BATCH_BUFFERS_KEPT, 2 * BATCH_BYTES);
    let mut chunk = buffers.take(0);
    let max = p.max;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => {
                if credit == 0 {
                    credit = take_credit(p.credit);
                }
                tokio::select! {
                    biased;
                    _ = p.stop.cancelled() => return Pumped::Stopped,
                    _ = stopped.as_mut() => return Pumped::Stopped,
                    _ = &mut expired => {
                        return Pumped::Ended(Err(Error::deadline_exceeded(format!(
                            "the stream `{}` did not end within its deadline",
                            p.path
                        ))));
                    }
                    _ = p.grants.notify.notified() => {
                        let n = p.grants.take();
                        if n > 0 && !write(p.send, credit_frame(n), p.stop).await {
                            return Pumped::Stopped;
                        }
                        continue;
                    }
                    permit = p.credit.acquire(), if credit == 0 => {
                        match permit {
                            Ok(permit) => permit.forget(),
                            Err(_) => return Pumped::Stopped,
                        }
                        credit = 1;
                        continue;
                    }
                    next = std::future::poll_fn(|cx| messages.as_mut().poll_frame(cx, &mut chunk, max, None)),
                        if credit > 0 => next,
                }
            }
        };
        let mut framed = match next {
            Some(Ok(framed)) => framed,
            Some(Err(error)) => return Pumped::Ended(Err(error)),
            None => return Pumped::Ended(Ok(())),
        };
        // Messages that are ready now go out in the same write, as credit allows.
        loop {
            credit = credit.saturating_sub(1);
            if let Err(e) = framed {
                return Pumped::Ended(Err(transport_error(p.peer, p.path, e)));
            }
            if chunk.len() >= BATCH_BYTES {
                break;
            }
            if credit == 0 {
                credit = take_credit(p.credit);
                if credit == 0 {
                    break;
                }
            }
            let mut noop = Context::from_waker(Waker::noop());
            match messages
                .as_mut()
                .poll_frame(&mut noop, &mut chunk, max, None)
            {
                Poll::Ready(Some(Ok(next))) => framed = next,
                Poll::Ready(other) => {
                    pending = Some(other);
                    break;
                }
                Poll::Pending => break,
            }
        }
        let n = p.grants.take();
        if n > 0 {
            chunk.put_slice(&credit_frame(n).unwrap_or_default());
        }
        let batch = buffers.freeze(std::mem::replace(&mut chunk, buffers.take(0)));
        if !write(p.send, Some(batch), p.stop).await {
            return Pumped::Stopped;
        }
    }
}

/// Writes `chunk` unless the call stops first; false when it did not go out.
async fn write(send: &mut SendStream, chunk: Option<Bytes>, stop: &CancellationToken) -> bool {
    let Some(chunk) = chunk else {
        return false;
    };
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        written = send.write_chunk(chunk) => written.is_ok(),
    }
}

/// The pieces shared by a call's reader task, its writer and its consumer.
struct Link {
    credit: Arc<Semaphore>,
    grants: Arc<Grants>,
    stop: CancellationToken,
}

impl Link {
    fn new() -> Self {
        Link {
            credit: Arc::new(Semaphore::new(0)),
            grants: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    /// The consumer's buffer (`buffer` messages, the credit granted at first, plus the end)
    /// and the handle that fills it.
    fn inbox(&self, buffer: StreamBuffer, guard: bool) -> (InboxTx, Inbox) {
        let queue = Arc::new(Mutex::new(Queue {
            items: VecDeque::new(),
            room: buffer.initial,
            waker: None,
            senders: 1,
            open: true,
        }));
        let tx = InboxTx(queue.clone());
        let inbox = Inbox {
            queue,
            taken_items: VecDeque::new(),
            run: Bytes::new(),
            unbudgeted: coop::Steps::new(),
            grants: self.grants.clone(),
            window: buffer.initial,
            max_window: buffer.max,
            taken: 0,
            done: false,
            _guard: guard.then(|| self.stop.clone().drop_guard()),
        };
        (tx, inbox)
    }
}

/// The credit a side grants at first.
fn initial_credit(buffer: StreamBuffer) -> u32 {
    u32::try_from(buffer.initial).unwrap_or(u32::MAX)
}

impl Peer {
    /// Starts a streaming call to the peer: opens a stream, writes the header and the initial
    /// credit, and returns the stream of replies at once (never waiting for one). `requests`
    /// are written by a task of their own, each taken only with a credit from the server;
    /// their end sends the caller's trailer. Dropping the returned stream cancels the call.
    pub(crate) async fn open_stream(
        &self,
        network: &str,
        path: &str,
        requests: MessageStream,
        timeout: Option<Duration>,
        metadata: &Metadata,
        buffer: StreamBuffer,
    ) -> Result<ValueStream> {
        let max = self.max_message_size();
        // Absent means no deadline; a deadline under a millisecond is one millisecond.
        let timeout_ms = timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let empty = Value::empty();
        let header = RequestFrame {
            kind: Some(KIND_STREAM),
            call: 0,
            network,
            path,
            payload: Measured::new(&empty),
            timeout_ms,
            metadata,
        }
        .encode(max)
        .map_err(|e| transport_error(self.id, path, e))?;
        let mut first = BytesMut::from(header);
        first.put_slice(&credit_frame(initial_credit(buffer)).unwrap_or_default());
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::unavailable(format!("peer {} is unreachable: {e}", self.id))
        };
        let (mut send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|e| unreachable(&e))?;
        send.write_chunk(first.freeze())
            .await
            .map_err(|e| unreachable(&e))?;
        let path: Arc<str> = path.into();
        let link = Link::new();
        let (inbox_tx, inbox) = link.inbox(buffer, true);
        tokio::spawn(read_frames(Reader {
            recv,
            frames: FrameReader::new(max, Some(self.read_timeout()))
                .waiting_for_budget(self.budget().clone()),
            inbox: Some(inbox_tx.clone()),
            credit: link.credit.clone(),
            stop: link.stop.clone(),
            caller: true,
            budget: self.budget().clone(),
            read_timeout: self.read_timeout(),
            batch: Vec::new(),
            batch_messages: 0,
            batch_bytes: 0,
            peer: self.id,
            path: path.clone(),
        }));
        tokio::spawn(write_requests(RequestWriter {
            send,
            requests,
            link: Link {
                credit: link.credit.clone(),
                grants: link.grants.clone(),
                stop: link.stop.clone(),
            },
            failed: inbox_tx,
            peer: self.id,
            path,
            max,
        }));
        Ok(inbox.boxed())
    }
}

/// What writes a call's requests.
struct RequestWriter {
    send: SendStream,
    requests: MessageStream,
    link: Link,
    /// Where a failure of the request side (a request over the size limit, the request stream
    /// failing) goes, to end the caller's reply stream with it.
    failed: InboxTx,
    peer: NodeId,
    path: Arc<str>,
    max: usize,
}

/// Writes the requests of a call as the server's credit allows, then the caller's trailer, then
/// grants for the replies until the call is over (then finishes the send side). A cancelled
/// call (the reply stream dropped) or a failed request side resets the send side.
async fn write_requests(writer: RequestWriter) {
    let RequestWriter {
        mut send,
        mut requests,
        link,
        failed,
        peer,
        path,
        max,
    } = writer;
    let stopped = send.stopped();
    let mut stopped = std::pin::pin!(stopped);
    let pumped = pump(
        Pump {
            send: &mut send,
            credit: &link.credit,
            grants: &link.grants,
            stop: &link.stop,
            deadline: None,
            max,
            peer,
            path: &path,
        },
        &mut requests,
        stopped.as_mut(),
    )
    .await;
    drop(requests);
    match pumped {
        Pumped::Ended(Ok(())) => {
            if !write(&mut send, trailer_frame(&Ok(()), max), &link.stop).await {
                let _ = send.reset(codes::CANCELLED);
                return;
            }
        }
        Pumped::Ended(Err(error)) => {
            let _ = send.reset(codes::CANCELLED);
            failed.end(Some(error));
            link.stop.cancel();
            return;
        }
        Pumped::Stopped => {
            let _ = send.reset(codes::CANCELLED);
            return;
        }
    }
    drop(failed);
    // The requests ended: grants for the replies go on until the call is over.
    let mut none = value_messages(futures::stream::pending());
    let after = pump(
        Pump {
            send: &mut send,
            credit: &Semaphore::new(0),
            grants: &link.grants,
            stop: &link.stop,
            deadline: None,
            max,
            peer,
            path: &path,
        },
        &mut none,
        stopped.as_mut(),
    )
    .await;
    drop(after);
    let _ = send.finish();
}

/// Serves one bidirectional stream the peer opened: a request (kind 2), a streaming call
/// (kind 4) or a call stream (kind 5), told apart by the kind byte, which is due within the read timeout. The stream
/// counts against the peer's grant of streams (`open`) until this returns.
pub(crate) async fn serve_bi<H: NodeHandler>(
    node: H,
    from: Arc<Peer>,
    mut send: SendStream,
    mut recv: RecvStream,
    streams: StreamSlots,
    open: OpenBidiStream,
) {
    let _open = open;
    let max = from.max_message_size();
    let timeout = from.read_timeout();
    match within_read_timeout(timeout, read_kind(&mut recv)).await {
        Ok(Ok(KIND_REQUEST)) => serve_request(node, from, send, recv, max).await,
        // Boxed: a streaming call's state would make every request stream's task larger.
        Ok(Ok(KIND_STREAM)) => Box::pin(serve_stream(node, from, send, recv, streams)).await,
        Ok(Ok(KIND_CALLS)) => Box::pin(serve_calls(node, from, send, recv)).await,
        Ok(Ok(kind)) => unknown_kind(from.id, kind, send, recv, max).await,
        Ok(Err(e)) => {
            tracing::debug!(peer = %from.id, error = %e, "stream ended before its kind byte")
        }
        Err(_) => cut_slow_stream(from.id, timeout, "kind byte", &mut send, &mut recv),
    }
}

/// Serves one streaming call: reads the header, grants the caller its initial credit, asks the
/// node for the reply stream (handing it the requests), writes the replies as the caller's
/// credit allows and the trailer. Stops as soon as the caller goes away (its receive side
/// stopped, its send side reset, or the connection lost), dropping the handler's streams.
async fn serve_stream<H: NodeHandler>(
    node: H,
    from: Arc<Peer>,
    mut send: SendStream,
    mut recv: RecvStream,
    streams: StreamSlots,
) {
    let max = from.max_message_size();
    let timeout = from.read_timeout();
    let header = match within_read_timeout(timeout, read_header_frame(&from, &mut recv, max)).await
    {
        Ok(header) => header,
        Err(_) => {
            cut_slow_stream(
                from.id,
                timeout,
                "streaming call's header",
                &mut send,
                &mut recv,
            );
            return;
        }
    };
    let header = match header {
        Ok(header) => header,
        Err(error) => return end(send, Err(error), max).await,
    };
    let Ok(_slot) = streams.permits.try_acquire_owned() else {
        let _ = recv.stop(codes::CANCELLED);
        let error = Error::resource_exhausted(format!(
            "too many streaming calls on this connection (at most {})",
            streams.max
        ));
        return end(send, Err(error), max).await;
    };
    let buffer = node.stream_buffer();
    let link = Link::new();
    if !write(&mut send, credit_frame(initial_credit(buffer)), &link.stop).await {
        return;
    }
    let path: Arc<str> = header.path.as_str().into();
    let (inbox_tx, inbox) = link.inbox(buffer, false);
    tokio::spawn(read_frames(Reader {
        recv,
        frames: FrameReader::new(max, Some(timeout)).waiting_for_budget(from.budget().clone()),
        inbox: Some(inbox_tx),
        credit: link.credit.clone(),
        stop: link.stop.clone(),
        caller: false,
        budget: from.budget().clone(),
        read_timeout: timeout,
        batch: Vec::new(),
        batch_messages: 0,
        batch_bytes: 0,
        peer: from.id,
        path: path.clone(),
    }));
    // Stops the reader however this ends.
    let _stop = link.stop.clone().drop_guard();
    let deadline = header
        .timeout
        .and_then(|t| tokio::time::Instant::now().checked_add(t));
    let inbound = InboundStream {
        from: from.id,
        network: header.network,
        path: header.path,
        timeout: header.timeout,
        metadata: header.metadata,
        requests: inbox.boxed(),
    };
    let stopped = send.stopped();
    let mut stopped = std::pin::pin!(stopped);
    let mut expired = std::pin::pin!(async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    // The handler may read requests before it returns its replies (a client-streaming one
    // reads them all): grants go out meanwhile.
    let mut serving = std::pin::pin!(node.serve_stream(inbound));
    let mut replies = loop {
        tokio::select! {
            biased;
            _ = link.stop.cancelled() => return,
            _ = stopped.as_mut() => return,
            _ = &mut expired => {
                let error = Error::deadline_exceeded(format!(
                    "the stream `{path}` did not end within its deadline"
                ));
                return end(send, Err(error), max).await;
            }
            _ = link.grants.notify.notified() => {
                let n = link.grants.take();
                if n > 0 && !write(&mut send, credit_frame(n), &link.stop).await {
                    return;
                }
            }
            replies = &mut serving => match replies {
                Ok(replies) => break replies,
                Err(error) => return end(send, Err(error), max).await,
            },
        }
    };
    let pumped = pump(
        Pump {
            send: &mut send,
            credit: &link.credit,
            grants: &link.grants,
            stop: &link.stop,
            deadline,
            max,
            peer: from.id,
            path: &path,
        },
        &mut replies,
        stopped.as_mut(),
    )
    .await;
    drop(replies);
    match pumped {
        Pumped::Ended(outcome) => end(send, outcome, max).await,
        Pumped::Stopped => {
            tracing::debug!(peer = %from.id, %path, "a stream stopped: the caller left, or broke the protocol");
            let _ = send.reset(codes::CANCELLED);
        }
    }
}

/// Writes the trailer for `outcome` and finishes the stream.
async fn end(mut send: SendStream, outcome: Result<()>, max: usize) {
    if let Some(frame) = trailer_frame(&outcome, max)
        && send.write_chunk(frame).await.is_ok()
    {
        let _ = send.finish();
    }
}

/// A streaming call's header, decoded.
struct Header {
    network: String,
    path: String,
    timeout: Option<Duration>,
    metadata: Vec<(String, Bytes)>,
}

/// Reads and decodes the `Request` header of a streaming call; its bytes count against the
/// peer's budget while it is read.
async fn read_header_frame(from: &Peer, recv: &mut RecvStream, max: usize) -> Result<Header> {
    let len = match read_header(recv, max).await {
        Ok(Some(len)) => len,
        Ok(None) => {
            return Err(Error::invalid_argument(
                "the stream ended before its header",
            ));
        }
        Err(e) => {
            if matches!(e, TransportError::FrameTooLarge { .. }) {
                let _ = recv.stop(codes::TOO_LARGE);
            }
            return Err(transport_error(from.id, "(header)", e));
        }
    };
    let Some(_held) = from.budget().acquire(len).await else {
        return Err(Error::unavailable("the connection is closing"));
    };
    let frame = read_body(recv, len)
        .await
        .map_err(|e| Error::invalid_argument(format!("unreadable stream header: {e}")))?;
    decode_header(frame)
}

/// Decodes a streaming call's header: a `Request` (as a request stream's, `decode_request`)
/// whose `runar-timeout` entry, when present, is the call's deadline (absent: none).
fn decode_header(frame: Bytes) -> Result<Header> {
    let request = decode_request(frame).map_err(|e| Error::invalid_argument(e.to_string()))?;
    Ok(Header {
        network: request.network,
        path: request.path,
        timeout: request.timeout_ms.map(Duration::from_millis),
        metadata: request.metadata,
    })
}

/// Decodes a streaming call's header as `serve_stream` does (for the fuzz target): its
/// network, path, deadline and number of metadata entries.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode_for_fuzzing(
    header: Bytes,
) -> Result<(String, String, Option<Duration>, usize)> {
    decode_header(header).map(|h| (h.network, h.path, h.timeout, h.metadata.len()))
}
