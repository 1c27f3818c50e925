//! Small requests multiplexed on one long-lived stream per connection: the call stream.
//!
//! Opening and finishing a QUIC stream is most of what a small call costs the transport
//! (BENCHMARKS.md, issue 14: 23,843 instructions per call at 64 in flight with a stream per
//! call, 8,190 with every call on one framed stream). So a caller sends each request whose
//! payload is at most `small_request_size` bytes on one bidirectional stream of kind
//! [`KIND_CALLS`] that it keeps open to the peer. Larger requests and streaming calls keep a
//! stream of their own, so a small call is never queued behind a large message it did not ask
//! for. Answers come back on the call stream whatever their size.
//!
//! **Frames** (the usual length-delimited frames, see `framing`): the caller's are `Request`s
//! carrying `call`, an id unique among its calls on the stream, or
//! `Request { call, cancel: true }` once the caller stops waiting (the server then drops that
//! handler); the server's are `Response`s carrying the `call` they answer, in the order the
//! handlers finish. See `proto/runar/v1/README.md`.
//!
//! **Writing.** Both sides write through an [`Outbox`]: a frame is appended to one buffer,
//! and one writer task writes everything appended since its last write in one write (many
//! small writes cost QUIC a chunk each, and a packet each when its connection task runs in
//! between). A caller alone on the stream (sequential calls) hands its request to QUIC in its
//! own task instead, so that a lone call's way out wakes no other task. On the server the
//! writer shares the reader's task and runs after it: the answers to the calls of a received
//! chunk go out in one write. A reader takes every frame of a received chunk before it waits
//! again.
//!
//! **Bounds.** A caller has at most `max_concurrent_requests` calls in flight on its call
//! stream (more wait for a slot); the server serves at most that many of one connection's
//! calls at once and answers a call past them `ResourceExhausted`. The server reads the stream
//! as frames arrive, so that it never holds the connection's flow-control window (the peer's
//! other streams go on). A request's bytes count against the peer's request budget until it
//! is answered, as on a stream of its own; reading waits for room in the budget (within the
//! read timeout). An outbox takes a frame at once only while less than [`BATCH_BYTES`] wait;
//! an answer that finds more waits in a task of its own, its bytes counted against the peer's
//! budget, and when the budget has no room for it (the peer neither reads its answers nor stops
//! calling) the stream is reset ([`codes::SLOW`]). A frame whose body does not follow its header
//! within the read timeout ends the call stream; a malformed frame ends it too. Ending a call
//! stream fails the caller's calls on it with `Unavailable` (its next call opens a new one) and
//! drops the server's handlers for it.

use std::future::Future as _;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{AbortHandle, Abortable};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use super::TransportError;
use super::budget::Held;
use super::frames::{
    Measured, RequestFrame, append_answer_frame, append_cancel_frame, decode_request,
    decode_response,
};
use super::framing::{FrameReader, encode_frame};
use super::interface::NodeHandler;
use super::log_limit::warn_limited;
use super::peer::{Peer, codes, error_response, inbound_request, to_error, within_read_timeout};
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::value::Value;
use crate::wire;

/// The first byte of a call stream.
pub(crate) const KIND_CALLS: u8 = 5;

/// An outbox takes new frames while fewer bytes than this wait to be written (one write's
/// worth; see `stream::BATCH_BYTES`).
const BATCH_BYTES: usize = super::stream::BATCH_BYTES;

/// A call past the connection's slots is refused (`ResourceExhausted`) while fewer bytes than
/// this wait in the answers' outbox; past it, the caller neither reads its answers nor stops
/// calling, and the call stream is cut.
const REFUSALS_BYTES: usize = 2 * BATCH_BYTES;

/// The frames waiting to be written on one stream, appended by any task. Whoever appends to an
/// idle stream hands its frame to QUIC at once, in its own task (no wake-up of another task on
/// a call's way out); what QUIC does not take at once (its flow control) is written by one
/// writer task ([`write_out`]), then everything appended meanwhile in one write.
struct Outbox {
    state: Mutex<Pending>,
    /// Wakes the writer when it has something to write, or on closing.
    wake: Notify,
    /// Wakes those waiting for room once the writer has taken the buffer, or on closing.
    room: Notify,
}

struct Pending {
    /// Appended, not yet handed to QUIC.
    buf: BytesMut,
    /// What QUIC did not take at once: the writer's to write, before `buf`.
    unsent: Option<Bytes>,
    /// The stream; `None` before it is open and once the outbox ended.
    send: Option<SendStream>,
    closed: bool,
    /// The code the stream was reset with, if it was.
    reset: Option<VarInt>,
    /// Someone waits for room: the writer wakes them when it takes `buf`.
    room_wanted: bool,
}

impl Pending {
    /// Hands what was appended to QUIC now if the stream is idle, else leaves it to the
    /// writer. True when the writer needs waking.
    fn write_now(&mut self) -> bool {
        let Pending {
            buf, unsent, send, ..
        } = self;
        let Some(send) = send.as_mut() else {
            // Not open yet: the writer starts with what waits.
            return true;
        };
        if unsent.is_some() {
            // The writer is at work: it takes `buf` next.
            return false;
        }
        let mut chunk = buf.split().freeze();
        let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
        // Cancel-safe: if it does not resolve, nothing was written (the writer, woken, waits
        // for the stream with its own waker); if in part, `chunk` is what is left.
        let polled = pin!(send.write_chunks(std::slice::from_mut(&mut chunk))).poll(&mut cx);
        match polled {
            Poll::Ready(Ok(_)) if chunk.is_empty() => false,
            Poll::Ready(Ok(_)) | Poll::Pending => {
                *unsent = Some(chunk);
                true
            }
            Poll::Ready(Err(_)) => {
                self.closed = true;
                true
            }
        }
    }
}

impl Outbox {
    /// An outbox whose first bytes are `first`, written once a stream is
    /// [attached](Self::attach).
    fn new(first: &[u8]) -> Self {
        Outbox {
            state: Mutex::new(Pending {
                buf: BytesMut::from(first),
                unsent: None,
                send: None,
                closed: false,
                reset: None,
                room_wanted: false,
            }),
            wake: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Writes on `send` from now on, starting with what waits.
    fn attach(&self, send: SendStream) {
        let mut state = lock(&self.state);
        state.send = Some(send);
        if state.closed {
            drop(state);
            self.end(None);
            return;
        }
        if !state.buf.is_empty() {
            state.unsent = Some(state.buf.split().freeze());
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Appends with `append` once fewer than [`BATCH_BYTES`] wait to be written, and writes
    /// it at once if the stream is idle; `None` (and `append` not called) once the outbox is
    /// closed.
    async fn push<T>(&self, now: bool, append: impl FnOnce(&mut BytesMut) -> T) -> Option<T> {
        let mut append = Some(append);
        loop {
            let mut room = pin!(self.room.notified());
            {
                let mut state = lock(&self.state);
                if state.closed {
                    return None;
                }
                if state.buf.len() < BATCH_BYTES {
                    let appended = append.take().map(|append| append(&mut state.buf));
                    let wake = !now || state.write_now();
                    drop(state);
                    if wake {
                        self.wake.notify_one();
                    }
                    return appended;
                }
                // No room: registered before the lock is released, and the writer told, so
                // that the room it makes next wakes this (a wait is rare: no registration
                // on the way of a call that finds room).
                room.as_mut().enable();
                state.room_wanted = true;
            }
            room.await;
        }
    }

    /// Appends with `append` at once if fewer than `limit` bytes wait to be written (and the
    /// outbox is open), and writes it at once if the stream is idle; false when it did not.
    fn push_within(&self, limit: usize, now: bool, append: impl FnOnce(&mut BytesMut)) -> bool {
        let mut state = lock(&self.state);
        if state.closed || state.buf.len() >= limit {
            return false;
        }
        append(&mut state.buf);
        let wake = !now || state.write_now();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Takes no more frames and ends the stream: reset with `code` (what was not sent is
    /// dropped), or finished (what was handed to QUIC is still delivered). Wakes the writer
    /// and everyone waiting for room. False if it had ended already.
    fn end(&self, code: Option<VarInt>) -> bool {
        let send = {
            let mut state = lock(&self.state);
            if state.closed && state.send.is_none() {
                return false;
            }
            state.closed = true;
            if state.reset.is_none() {
                state.reset = code;
            }
            state.send.take()
        };
        if let Some(mut send) = send {
            let _ = match code {
                Some(code) => send.reset(code),
                None => send.finish(),
            };
        }
        self.room.notify_waiters();
        self.wake.notify_one();
        true
    }

    /// True once the outbox takes no more frames.
    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The code the stream was reset with, if it was.
    fn reset_code(&self) -> Option<VarInt> {
        lock(&self.state).reset
    }
}

/// Writes what appenders to `out` could not hand to QUIC themselves, until `out` ends or the
/// stream fails (then `out` ends).
async fn write_out(out: &Outbox) {
    loop {
        // `wake` is only ever `notify_one`d, which leaves a permit when the writer is not
        // waiting: a wake between the look and the wait is not lost.
        match take_for_writer(out) {
            Some(Taken::Write { room_wanted }) => {
                if room_wanted {
                    out.room.notify_waiters();
                }
            }
            Some(Taken::Nothing) => {
                out.wake.notified().await;
                continue;
            }
            None => return,
        }
        let written = futures::future::poll_fn(|cx| {
            let mut state = lock(&out.state);
            let Pending { unsent, send, .. } = &mut *state;
            let (Some(send), Some(chunk)) = (send.as_mut(), unsent.as_mut()) else {
                return Poll::Ready(Err(()));
            };
            loop {
                let polled = pin!(send.write_chunks(std::slice::from_mut(chunk))).poll(cx);
                match polled {
                    Poll::Ready(Ok(_)) if chunk.is_empty() => break,
                    // Taken in part: the rest now, or once QUIC has room.
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            *unsent = None;
            Poll::Ready(Ok(()))
        })
        .await;
        if written.is_err() {
            break;
        }
    }
    out.end(None);
}

/// What the writer found to do.
enum Taken {
    /// `unsent` is to be written; `room_wanted`: someone waited for the room taking it made.
    Write { room_wanted: bool },
    /// Nothing to write.
    Nothing,
}

/// Readies the writer's next write: [`Taken::Write`] with `unsent` to write (what QUIC did
/// not take, else everything appended), [`Taken::Nothing`] when there is nothing to write,
/// `None` once the outbox ended.
fn take_for_writer(out: &Outbox) -> Option<Taken> {
    let mut state = lock(&out.state);
    if state.closed || state.send.is_none() {
        return if state.closed {
            None
        } else {
            Some(Taken::Nothing)
        };
    }
    if state.unsent.is_none() {
        if state.buf.is_empty() {
            return Some(Taken::Nothing);
        }
        state.unsent = Some(state.buf.split().freeze());
    }
    Some(Taken::Write {
        room_wanted: std::mem::take(&mut state.room_wanted),
    })
}

/// Why a call on a call stream failed.
pub(crate) enum CallFailure {
    /// The request could not be encoded (over the maximum message size).
    Encode(TransportError),
    /// The call stream ended before the answer came: why.
    Lost(Arc<str>),
}

/// Where a call's answer goes: the `Response`, or why the call stream ended first.
type Answer = oneshot::Sender<Result<wire::Response, Arc<str>>>;

/// A caller's call stream to one peer: its calls in flight, by id.
pub(crate) struct CallLane {
    out: Outbox,
    /// The calls waiting for their answer; `None` once the stream ended.
    calls: Mutex<Option<FxHashMap<u64, Answer>>>,
    next_call: AtomicU64,
    /// One per call in flight (`max_concurrent_requests`).
    slots: Semaphore,
    max_calls: usize,
    ended: AtomicBool,
}

impl CallLane {
    /// A call stream to the peer of `connection`, taking calls at once; the stream itself is
    /// opened in the background (its first calls are written once it is). At most `max_calls`
    /// calls are in flight on it, each answer at most `max` bytes, due in full within
    /// `read_timeout` once it starts arriving.
    pub(crate) fn open(
        connection: &Connection,
        max_calls: usize,
        max: usize,
        read_timeout: Duration,
    ) -> Arc<CallLane> {
        let lane = Arc::new(CallLane {
            out: Outbox::new(&[KIND_CALLS]),
            calls: Mutex::new(Some(FxHashMap::default())),
            next_call: AtomicU64::new(1),
            slots: Semaphore::new(max_calls.max(1)),
            max_calls: max_calls.max(1),
            ended: AtomicBool::new(false),
        });
        let connection = connection.clone();
        let running = lane.clone();
        tokio::spawn(async move {
            let why: Arc<str> = match connection.open_bi().await {
                Ok((send, mut recv)) => {
                    running.out.attach(send);
                    // No budget: one answer at a time is read, of at most `max` bytes.
                    let reader = FrameReader::new(max, Some(read_timeout));
                    tokio::select! {
                        why = running.read_answers(reader, &mut recv) => why,
                        () = write_out(&running.out) => "the call stream failed".into(),
                    }
                }
                Err(e) => format!("{e}").into(),
            };
            running.end(why);
        });
        lane
    }

    /// False once the stream ended: the next call needs a new one.
    pub(crate) fn is_open(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }

    /// Sends `request` (its `call` set here) and waits for its answer. Dropping the future
    /// cancels the call on the peer.
    pub(crate) async fn call(
        &self,
        mut request: RequestFrame<'_>,
        max: usize,
    ) -> Result<wire::Response, CallFailure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| CallFailure::Lost("the call stream is closed".into()))?;
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        match lock(&self.calls).as_mut() {
            Some(calls) => calls.insert(call, answer),
            None => return Err(CallFailure::Lost("the call stream ended".into())),
        };
        let mut waiting = Waiting {
            lane: self,
            call,
            sent: false,
            answered: false,
        };
        request.call = call;
        // Alone on the stream (a sequential caller), the request is written in this task:
        // no other task woken on its way out. With others in flight, the writer task takes
        // them all in one write.
        let alone = self.slots.available_permits() + 1 >= self.max_calls;
        match self
            .out
            .push(alone, |buf| request.append_to(buf, max))
            .await
        {
            Some(Ok(())) => waiting.sent = true,
            Some(Err(e)) => return Err(CallFailure::Encode(e)),
            None => return Err(CallFailure::Lost("the call stream ended".into())),
        }
        let answer = answered.await;
        // Answered (or the stream ended): its entry is gone, nothing to cancel.
        waiting.answered = true;
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(why)) => Err(CallFailure::Lost(why)),
            Err(_) => Err(CallFailure::Lost("the call stream ended".into())),
        }
    }

    /// Hands each answer read to its call, until the stream ends; answers why it ended.
    async fn read_answers(&self, mut reader: FrameReader, recv: &mut RecvStream) -> Arc<str> {
        loop {
            let body = match reader.next(recv).await {
                Ok(Some(body)) => body,
                Ok(None) => return "the peer closed the call stream".into(),
                Err(e) => {
                    let _ = recv.stop(codes::PROTOCOL);
                    return format!("the call stream failed: {e}").into();
                }
            };
            let response = match decode_response(body) {
                Ok(response) => response,
                Err(e) => {
                    let _ = recv.stop(codes::PROTOCOL);
                    return format!("the peer sent a malformed answer: {e}").into();
                }
            };
            // An answer to a call no one waits for any more (cancelled) is dropped.
            let waiting = lock(&self.calls)
                .as_mut()
                .and_then(|calls| calls.remove(&response.call));
            if let Some(waiting) = waiting {
                let _ = waiting.send(Ok(response));
            }
        }
    }

    /// Ends the stream: every call waiting fails with `why`, and later calls open a new one.
    fn end(&self, why: Arc<str>) {
        self.ended.store(true, Ordering::Release);
        self.out.end(None);
        let calls = lock(&self.calls).take();
        for (_, waiting) in calls.into_iter().flatten() {
            let _ = waiting.send(Err(why.clone()));
        }
    }
}

/// A call waiting for its answer: dropped before it came, it cancels the call.
struct Waiting<'a> {
    lane: &'a CallLane,
    call: u64,
    /// The request was written.
    sent: bool,
    /// The answer came (or the stream ended): the reader took the entry away.
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = lock(&self.lane.calls)
            .as_mut()
            .and_then(|calls| calls.remove(&self.call));
        if self.sent && removed.is_some() {
            let call = self.call;
            // At once, room or not: a few bytes, at most one per call.
            self.lane
                .out
                .push_within(usize::MAX, false, |buf| append_cancel_frame(buf, call));
        }
    }
}

/// The handlers of a call stream's calls that did not answer at once, by call id, with their
/// slots: a cancelled call's slot is free at once, not when its task is next polled.
type Running = Arc<Mutex<FxHashMap<u64, (AbortHandle, OwnedSemaphorePermit)>>>;

/// Serves a call stream the peer opened, once its kind byte was read: runs each call's handler
/// and writes the answers as they come, until the stream ends; then drops the handlers still
/// running (no one waits for their answers).
pub(crate) async fn serve_calls<H: NodeHandler>(
    node: H,
    from: Arc<Peer>,
    send: SendStream,
    mut recv: RecvStream,
) {
    let out = Arc::new(Outbox::new(&[]));
    out.attach(send);
    let running = Running::default();
    // Reading first: the answers of a received chunk's calls are all appended before the
    // writer, polled next in the same pass, writes them in one write.
    let cut = tokio::select! {
        biased;
        cut = read_calls(&node, &from, &out, &running, &mut recv) => cut,
        () = write_out(&out) => out.reset_code(),
    };
    if let Some(code) = cut {
        let _ = recv.stop(code);
    }
    out.end(cut);
    for (_, (handler, _slot)) in lock(&running).drain() {
        handler.abort();
    }
}

/// Reads the calls of a call stream and starts each (see [`serve_calls`]), until the stream
/// ends (`None`) or is cut (the code to reset the answers' side with).
async fn read_calls<H: NodeHandler>(
    node: &H,
    from: &Arc<Peer>,
    out: &Arc<Outbox>,
    running: &Running,
    recv: &mut RecvStream,
) -> Option<VarInt> {
    let max = from.max_message_size();
    let mut reader =
        FrameReader::new(max, Some(from.read_timeout())).waiting_for_budget(from.budget().clone());
    loop {
        if out.is_closed() {
            return out.reset_code();
        }
        let body = match reader.next(recv).await {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(e) => {
                let code = match e {
                    TransportError::FrameTooLarge { .. } => codes::TOO_LARGE,
                    TransportError::ReadTimeout(_) => codes::SLOW,
                    _ => codes::PROTOCOL,
                };
                let _ = recv.stop(code);
                tracing::debug!(peer = %from.id, error = %e, "a call stream failed");
                return Some(code);
            }
        };
        let len = body.len();
        let request = match decode_request(body) {
            Ok(request) if request.call != 0 => request,
            Ok(_) => return malformed(from, recv, &"a call without an id"),
            Err(e) => return malformed(from, recv, &e),
        };
        let call = request.call;
        if request.cancel {
            if let Some((handler, _slot)) = lock(running).remove(&call) {
                tracing::debug!(peer = %from.id, "caller cancelled a request");
                handler.abort();
            }
            continue;
        }
        // The stream is read as its frames arrive, whatever the handlers' pace, so that it
        // never holds the connection's flow-control window (the peer's other streams go on):
        // a call past the connection's slots is refused. Only when the node's request budget
        // is full does reading wait (within the read timeout), as a request stream's would.
        let Ok(slot) = from.request_slots().clone().try_acquire_owned() else {
            let refused = Err(Error::resource_exhausted(format!(
                "over {} requests in flight on one connection",
                from.max_calls()
            )));
            if out.push_within(REFUSALS_BYTES, false, |buf| {
                append_answer(buf, call, &refused, max)
            }) {
                continue;
            }
            // Calls keep coming and their answers are not read: cut the stream.
            warn_limited!(peer = %from.id, "cutting a call stream whose answers are not read");
            return Some(codes::SLOW);
        };
        // A call that arrived in pieces already holds its room (taken as it was read).
        let reserved = match reader.take_held() {
            Some(held) => Ok(Some(held)),
            None => within_read_timeout(from.read_timeout(), from.budget().acquire(len)).await,
        };
        let held = match reserved {
            Ok(Some(held)) => held,
            // The connection is closing.
            Ok(None) => return None,
            Err(_) => {
                let refused = Err(super::budget::stayed_full());
                let _ = out
                    .push(false, |buf| append_answer(buf, call, &refused, max))
                    .await;
                continue;
            }
        };
        let in_flight = from.in_flight_owned();
        let inbound = inbound_request(from.id, request);
        let mut serving = Box::pin(node.serve(inbound));
        // Most handlers answer on their first poll: answered here, without a task, when there
        // is room for the answer (else it waits for room in a task).
        if let Poll::Ready(outcome) = futures::poll!(serving.as_mut()) {
            if !out.push_within(BATCH_BYTES, false, |buf| {
                append_answer(buf, call, &outcome, max)
            }) {
                let Some(waiting) = hold_answer(out, &outcome, from) else {
                    return Some(codes::SLOW);
                };
                let out = out.clone();
                let peer = from.clone();
                tokio::spawn(async move {
                    let _held = (slot, held, in_flight, waiting);
                    let push = out.push(false, |buf| append_answer(buf, call, &outcome, max));
                    answer_within_read_timeout(&out, &peer, push).await;
                });
            }
            continue;
        }
        let (handle, registration) = AbortHandle::new_pair();
        if let Some((earlier, _slot)) = lock(running).insert(call, (handle, slot)) {
            // The peer reused the id of a call still running: that one is dropped.
            earlier.abort();
        }
        let out = out.clone();
        let running = running.clone();
        let peer = from.clone();
        let serve = async move {
            let _held = (held, in_flight);
            let outcome = serving.await;
            // The slot is held until the answer is queued.
            let _slot = lock(&running).remove(&call);
            if !out.push_within(BATCH_BYTES, false, |buf| {
                append_answer(buf, call, &outcome, max)
            }) {
                if let Some(_waiting) = hold_answer(&out, &outcome, &peer) {
                    let push = out.push(false, |buf| append_answer(buf, call, &outcome, max));
                    answer_within_read_timeout(&out, &peer, push).await;
                }
            }
        };
        tokio::spawn(Abortable::new(serve, registration));
    }
}

/// Stops a call stream whose frame did not decode as a call, and says so (rate-limited):
/// the code to reset the answers' side with.
fn malformed(from: &Peer, recv: &mut RecvStream, why: &dyn std::fmt::Display) -> Option<VarInt> {
    warn_limited!(peer = %from.id, %why, "ending a call stream with a malformed frame");
    let _ = recv.stop(codes::PROTOCOL);
    Some(codes::PROTOCOL)
}

/// Room in the peer's budget for an answer that found no room in the outbox, held while it
/// waits for room. `None` when the budget has none (the peer leaves that much of its answers
/// unread): the call stream is cut.
fn hold_answer(out: &Outbox, outcome: &Result<Value>, from: &Peer) -> Option<Held> {
    let len = match outcome {
        Ok(value) => Measured::new(value).len(),
        Err(error) => error.message().len(),
    };
    let held = from.budget().try_acquire(len);
    if held.is_none() && out.end(Some(codes::SLOW)) {
        warn_limited!(peer = %from.id, "cutting a call stream whose answers are not read");
    }
    held
}

/// Waits for an answer that found no room (`push`) to be queued, at most the read timeout: a
/// peer that leaves its answers unread that long has the call stream cut, which lets go of
/// every answer waiting (and of their room in the budget).
async fn answer_within_read_timeout(
    out: &Outbox,
    from: &Peer,
    push: impl std::future::Future<Output = Option<()>>,
) {
    if tokio::time::timeout(from.read_timeout(), push)
        .await
        .is_err()
        && out.end(Some(codes::SLOW))
    {
        warn_limited!(peer = %from.id, "cutting a call stream whose answers are not read");
    }
}

/// Appends the frame answering call `call` with `outcome`.
fn append_answer(buf: &mut BytesMut, call: u64, outcome: &Result<Value>, max: usize) {
    let error = match outcome {
        Ok(value) => match append_answer_frame(buf, call, Measured::new(value), max) {
            Ok(()) => return,
            Err(e) => to_error(e, format_args!("the answer")),
        },
        Err(e) => e.clone(),
    };
    match encode_frame(None, &error_response(call, &error), max) {
        Ok(frame) => buf.extend_from_slice(&frame),
        // An error message over the maximum: its code alone.
        Err(_) => {
            let bare = Error::new(error.code(), "the error's message is too long to send");
            if let Ok(frame) = encode_frame(None, &error_response(call, &bare), max) {
                buf.extend_from_slice(&frame);
            }
        }
    }
}
