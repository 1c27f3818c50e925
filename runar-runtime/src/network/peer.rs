//! One connection to a peer: the client side of remote requests, serving the peer's requests,
//! and the event and control streams.
//!
//! Streams (see `proto/runar/v1/README.md`): every stream starts with one kind byte. The dialer
//! opens one bidirectional control stream; small requests share the call stream (`lane`), and
//! every other request is a bidirectional stream of its own (one `Request` frame, one
//! `Response` frame), so requests never wait for each other; each side sends its events on one
//! unidirectional stream, which keeps them in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use super::TransportError;
use super::budget::{Held, PeerBudget};
use super::event_queue::{EventFlow, EventQueue};
use super::frames::{
    DecodedRequest, Measured, RequestFrame, append_response_frame, decode_event, decode_request,
    decode_response, response_frame,
};
use super::framing::{
    BufferPool, FrameReader, LARGE_FRAME, LargeFrames, encode_frame, read_body_in, read_header,
};
use super::interface::{
    EventSink, InboundEvent, InboundRequest, NodeHandler, PeerEventCounters, PeerLink,
};
use super::lane::{CallFailure, CallLane};
use super::log_limit::warn_limited;
use crate::error::{Code, Error, Result};
use crate::identity::NodeId;
use crate::lock::lock;
use crate::metadata::Metadata;
use crate::seal::PublicKey;
use crate::value::Value;
use crate::wire;

/// The first byte of a control stream.
pub(crate) const KIND_CONTROL: u8 = 1;
/// The first byte of a request stream.
pub(crate) const KIND_REQUEST: u8 = 2;
/// The first byte of an event stream.
pub(crate) const KIND_EVENTS: u8 = 3;
/// The protocol version this node speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// Application codes for closing connections and resetting streams.
pub(crate) mod codes {
    use quinn::VarInt;
    /// The node is leaving.
    pub(crate) const GOODBYE: VarInt = VarInt::from_u32(0);
    /// Another connection to the same peer was kept.
    pub(crate) const DUPLICATE: VarInt = VarInt::from_u32(1);
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL: VarInt = VarInt::from_u32(2);
    /// A frame was over the maximum message size.
    pub(crate) const TOO_LARGE: VarInt = VarInt::from_u32(3);
    /// The peer did not read (its control queue filled, or its event stream stayed stuck for the
    /// slow-consumer timeout) or did not send in time.
    pub(crate) const SLOW: VarInt = VarInt::from_u32(4);
    /// The caller cancelled a streaming call (it dropped the reply stream).
    pub(crate) const CANCELLED: VarInt = VarInt::from_u32(5);
    /// The connection was refused at the hello: this plus the `RefusalReason`'s number.
    pub(crate) const REFUSED_BASE: u32 = 16;
}

/// A connected, admitted peer.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) link: PeerLink,
    pub(crate) name: String,
    /// The peer's instance (see `Hello::instance`).
    pub(crate) instance: u64,
    /// The sealing key the peer announced in its hello (bound to its id by mutual TLS).
    pub(crate) sealing_key: Option<PublicKey>,
    pub(crate) connection: Connection,
    /// Which side opened the connection (for the simultaneous-dial rule).
    pub(crate) dialer: NodeId,
    /// When the connection was admitted (for introspection).
    pub(crate) connected_at: std::time::SystemTime,
    /// What became of the events queued for this peer on this connection (the node-wide
    /// totals are the mesh's): for introspection.
    pub(crate) event_counts: Arc<PeerEventCounters>,
    control: mpsc::Sender<wire::Control>,
    /// The queue of the peer's event writer.
    event_queue: Arc<EventQueue>,
    /// The same queue, as the node's subscriptions hold it.
    events: Arc<dyn EventSink>,
    /// Event frames read from the peer's event streams on this connection, and a wake-up for
    /// whoever waits for a number of them (see [`events_read`](Self::events_read)).
    frames_read: AtomicU64,
    more_read: Notify,
    /// Set once someone waits in `events_read` (after a goodbye): until then reading an event
    /// frame only counts it, no wake-up on the event path.
    read_awaited: AtomicBool,
    acked: watch::Sender<u64>,
    /// Set when another connection to the same peer is kept: this one is no longer routed to,
    /// and closes once what is in flight on it is done.
    retired: AtomicBool,
    /// Requests in flight on this connection, both ways.
    in_flight: AtomicUsize,
    idle: Notify,
    max_message_size: usize,
    /// How long the peer may take to send a request, or a frame's body.
    read_timeout: Duration,
    /// Bytes of the peer's requests this node may hold at once.
    request_bytes: PeerBudget,
    /// The node's spare buffers for large frames.
    large_frames: Arc<LargeFrames>,
    /// Requests with a payload of at most this many bytes go on the call stream (0: none).
    small_request_size: usize,
    /// The calls this node has in flight to the peer on one call stream, at most.
    max_calls: usize,
    /// This node's call stream to the peer, once a small request opened it.
    lane: std::sync::Mutex<Option<Arc<CallLane>>>,
    /// The peer's call-stream calls this node serves at once, at most.
    request_slots: Arc<Semaphore>,
}

/// The per-peer limits a [`Peer`] is made with (from the network configuration).
pub(crate) struct PeerSettings {
    pub(crate) max_message_size: usize,
    pub(crate) control_queue_capacity: usize,
    pub(crate) read_timeout: Duration,
    /// The peer's share of the node-wide request budget.
    pub(crate) request_bytes: PeerBudget,
    /// The node's spare buffers for large frames (one for all peers).
    pub(crate) large_frames: Arc<LargeFrames>,
    /// Requests with a payload of at most this many bytes go on the call stream (0: none).
    pub(crate) small_request_size: usize,
    /// The most requests in flight on one call stream, each way.
    pub(crate) max_concurrent_requests: u32,
}

/// Counts a request in flight on a connection while it lives.
pub(crate) struct InFlight<'a>(&'a Peer);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.one_less_in_flight();
    }
}

/// [`InFlight`] holding its peer.
pub(crate) struct InFlightOwned(Arc<Peer>);

impl Drop for InFlightOwned {
    fn drop(&mut self) {
        self.0.one_less_in_flight();
    }
}

/// Who a new peer is, from its certificate and its hello.
pub(crate) struct PeerIdentity {
    pub(crate) id: NodeId,
    pub(crate) link: PeerLink,
    pub(crate) name: String,
    pub(crate) instance: u64,
    /// The sealing key the peer announced in its hello (bound to its id by mutual TLS).
    pub(crate) sealing_key: Option<PublicKey>,
    pub(crate) dialer: NodeId,
}

/// The ends of a new peer's queues, for the tasks that drain them.
pub(crate) struct PeerQueues {
    pub(crate) control: mpsc::Receiver<wire::Control>,
    pub(crate) events: Arc<EventQueue>,
}

impl Peer {
    pub(crate) fn new(
        identity: PeerIdentity,
        connection: Connection,
        settings: PeerSettings,
        events: &EventFlow,
    ) -> (Arc<Peer>, PeerQueues) {
        let PeerIdentity {
            id,
            link,
            name,
            instance,
            sealing_key,
            dialer,
        } = identity;
        let (control, control_rx) = mpsc::channel(settings.control_queue_capacity.max(1));
        let event_counts = Arc::<PeerEventCounters>::default();
        let event_queue = Arc::new(EventQueue::new(
            id,
            events,
            settings.max_message_size,
            event_counts.clone(),
        ));
        let peer = Arc::new(Peer {
            id,
            link,
            name,
            instance,
            sealing_key,
            connection,
            dialer,
            connected_at: std::time::SystemTime::now(),
            event_counts,
            control,
            events: event_queue.clone(),
            event_queue: event_queue.clone(),
            frames_read: AtomicU64::new(0),
            more_read: Notify::new(),
            read_awaited: AtomicBool::new(false),
            acked: watch::Sender::new(0),
            retired: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            max_message_size: settings.max_message_size,
            read_timeout: settings.read_timeout,
            request_bytes: settings.request_bytes,
            large_frames: settings.large_frames,
            small_request_size: settings.small_request_size,
            max_calls: settings.max_concurrent_requests.max(1) as usize,
            lane: std::sync::Mutex::new(None),
            request_slots: Arc::new(Semaphore::new(
                settings.max_concurrent_requests.max(1) as usize
            )),
        });
        (
            peer,
            PeerQueues {
                control: control_rx,
                events: event_queue,
            },
        )
    }

    /// The peer's event queue: every subscription of this peer holds a clone.
    pub(crate) fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    /// Waits until every event queued for the peer so far is written on the connection, and
    /// answers the number of event frames written on it. `None` when the writer is gone (the
    /// connection closed).
    pub(crate) async fn flush_events(&self) -> Option<u64> {
        self.event_queue.flush().await
    }

    /// Counts an event frame read from the peer.
    fn frame_read(&self) {
        self.frames_read.fetch_add(1, Ordering::SeqCst);
        if self.read_awaited.load(Ordering::SeqCst) {
            self.more_read.notify_waiters();
        }
    }

    /// Waits until `frames` event frames have been read from the peer on this connection (the
    /// count its goodbye announced).
    pub(crate) async fn events_read(&self, frames: u64) {
        // SeqCst with `frame_read`: either it sees this flag and wakes us, or we see its count.
        self.read_awaited.store(true, Ordering::SeqCst);
        loop {
            let notified = self.more_read.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.frames_read.load(Ordering::SeqCst) >= frames {
                return;
            }
            notified.await;
        }
    }

    /// The peer's share of the node-wide budget of buffered peer bytes.
    pub(crate) fn budget(&self) -> &PeerBudget {
        &self.request_bytes
    }

    /// The largest message, encoded, either way.
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// How long the peer may take to send a request, or a frame's body.
    pub(crate) fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// [`in_flight`](Self::in_flight) for a task of its own.
    pub(crate) fn in_flight_owned(self: &Arc<Self>) -> InFlightOwned {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightOwned(self.clone())
    }

    /// The most calls in flight on one call stream, each way.
    pub(crate) fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// The slots of the peer's call-stream calls served at once.
    pub(crate) fn request_slots(&self) -> &Arc<Semaphore> {
        &self.request_slots
    }

    /// The requests in flight on this connection, both ways.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn one_less_in_flight(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no request is in flight on this connection, or `timeout` passes.
    pub(crate) async fn drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            match deadline {
                Some(deadline) => tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                },
                None => notified.await,
            }
        }
    }

    /// Marks the connection retired (see [`Peer::is_retired`]).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// True once another connection to the same peer was kept instead of this one.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Queues a control message. A peer whose queue is full does not read its control stream:
    /// it is disconnected.
    pub(crate) fn send_control(&self, kind: wire::control::Kind) {
        match self.control.try_send(wire::Control { kind: Some(kind) }) {
            // A closed queue means the control writer ended with the connection.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn_limited!(peer = %self.id, "disconnecting a peer that does not read its control stream");
                self.connection
                    .close(codes::SLOW, b"control stream not read");
            }
        }
    }

    /// Records that the peer applied our capabilities up to `version`.
    pub(crate) fn acknowledged(&self, version: u64) {
        self.acked.send_if_modified(|acked| {
            let newer = version > *acked;
            if newer {
                *acked = version;
            }
            newer
        });
    }

    /// Waits until the peer has applied our capabilities `version`, the connection closes, or
    /// `timeout` passes. True when it acknowledged.
    pub(crate) async fn wait_acknowledged(&self, version: u64, timeout: Duration) -> bool {
        let mut acked = self.acked.subscribe();
        let closed = self.connection.closed();
        tokio::select! {
            done = tokio::time::timeout(timeout, acked.wait_for(|v| *v >= version)) => {
                matches!(done, Ok(Ok(_)))
            }
            _ = closed => false,
        }
    }

    /// Sends a request (with its metadata) to the peer and waits for its answer: on the call
    /// stream when its payload is small (see `lane`), else on a stream of its own. Dropping the
    /// future cancels the handler on the peer.
    pub(crate) async fn request(
        &self,
        network: &str,
        path: &str,
        payload: &Value,
        timeout: Duration,
        metadata: &Metadata,
    ) -> Result<Value> {
        let _in_flight = self.in_flight();
        let max = self.max_message_size;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let mut request = RequestFrame {
            kind: Some(KIND_REQUEST),
            call: 0,
            network,
            path,
            payload: Measured::new(payload),
            timeout_ms,
            metadata,
        };
        let small =
            request.payload.len() <= self.small_request_size && self.small_request_size != 0;
        let response = if small {
            request.kind = None;
            match self.lane().call(request, max).await {
                Ok(response) => response,
                Err(CallFailure::Encode(e)) => {
                    return Err(to_error(e, format_args!("the request to `{path}`")));
                }
                Err(CallFailure::Lost(why)) => {
                    return Err(Error::unavailable(format!(
                        "peer {} is unreachable: {why}",
                        self.id
                    )));
                }
            }
        } else {
            // Boxed: a large request's stream is the rare case, and its future would more
            // than double every call's.
            Box::pin(self.request_on_own_stream(request)).await?
        };
        match response.result {
            Some(wire::response::Result::Payload(bytes)) => Ok(Value::from_encoded(bytes)),
            Some(wire::response::Result::Error(status)) => {
                Err(Error::new(Code::from_u32(status.code), status.message))
            }
            None => Err(Error::internal(format!(
                "peer {} sent an empty response",
                self.id
            ))),
        }
    }

    /// This node's call stream to the peer: the open one, or a new one.
    fn lane(&self) -> Arc<CallLane> {
        let mut lane = lock(&self.lane);
        match &*lane {
            Some(open) if open.is_open() => open.clone(),
            _ => {
                let open = CallLane::open(
                    &self.connection,
                    self.max_calls,
                    self.max_message_size,
                    self.read_timeout,
                );
                *lane = Some(open.clone());
                open
            }
        }
    }

    /// Sends `request` on a stream of its own and reads its answer.
    async fn request_on_own_stream(&self, request: RequestFrame<'_>) -> Result<wire::Response> {
        let max = self.max_message_size;
        let path = request.path;
        let frame = frame_in(&self.large_frames.write, request.payload, |buf| {
            request.append_to(buf, max)
        });
        let frame = frame.map_err(|e| to_error(e, format_args!("the request to `{path}`")))?;
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::unavailable(format!("peer {} is unreachable: {e}", self.id))
        };
        let (mut send, mut recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|e| unreachable(&e))?;
        send.write_chunk(frame).await.map_err(|e| unreachable(&e))?;
        let _ = send.finish();
        let answer = match read_header(&mut recv, max).await {
            Ok(Some(len)) => read_body_in(&mut recv, len, Some(&self.large_frames.read))
                .await
                .map(Some),
            other => other.map(|_| None),
        };
        let frame = match answer {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Error::unavailable(format!(
                    "peer {} closed the request to `{path}` without an answer",
                    self.id
                )));
            }
            Err(e @ TransportError::FrameTooLarge { .. }) => {
                return Err(to_error(e, format_args!("the answer from `{path}`")));
            }
            Err(e) => return Err(unreachable(&e)),
        };
        decode_response(frame).map_err(|e| {
            Error::internal(format!("peer {} sent a malformed response: {e}", self.id))
        })
    }
}

/// Reads the kind byte that starts a stream.
pub(crate) async fn read_kind(recv: &mut RecvStream) -> Result<u8, TransportError> {
    let mut kind = [0u8; 1];
    match recv.read_exact(&mut kind).await {
        Ok(()) => Ok(kind[0]),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            Err(TransportError::Truncated { expected: 1, got })
        }
        Err(quinn::ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// The error for a transport failure on `what`: a message over the maximum message size names
/// both sizes; any other failure maps as usual.
pub(crate) fn to_error(error: TransportError, what: std::fmt::Arguments<'_>) -> Error {
    match error {
        TransportError::FrameTooLarge { len, max } => Error::resource_exhausted(format!(
            "{what} is {len} bytes, over the maximum message size of {max}"
        )),
        e => e.into(),
    }
}

/// The `Response` answering call `call` (0: not on a call stream) with `error`.
pub(crate) fn error_response(call: u64, error: &Error) -> wire::Response {
    wire::Response {
        result: Some(wire::response::Result::Error(wire::ErrorStatus {
            code: error.code().as_u32(),
            message: error.message().to_owned(),
        })),
        call,
    }
}

/// Serves one request stream the peer opened, once its kind byte was read
/// (`stream::serve_bi`): reads the request, runs the local handler (which is dropped, and so
/// cancelled, if the caller stops waiting), writes the answer.
pub(crate) async fn serve_request<H: NodeHandler>(
    node: H,
    from: Arc<Peer>,
    mut send: SendStream,
    mut recv: RecvStream,
    max: usize,
) {
    let _in_flight = from.in_flight();
    // The whole request (header, body) is due within the read timeout.
    let timeout = from.read_timeout;
    let read = within_read_timeout(timeout, read_request(&from, &mut recv, max)).await;
    let read = read.unwrap_or_else(|_| {
        cut_slow_stream(from.id, timeout, "request", &mut send, &mut recv);
        Err(None)
    });
    // Held until the answer is written: its bytes count against the budget.
    let (outcome, _budget) = match read {
        Ok((request, budget)) => match run_request(&node, request, &mut send).await {
            Some(outcome) => (outcome, Some(budget)),
            None => return,
        },
        Err(Some(error)) => (Err(error), None),
        Err(None) => return,
    };
    // The answer is due to be taken within the read timeout too: a peer that leaves it
    // unread does not keep the request's room in the budget for longer.
    let write = write_response(&mut send, &outcome, max, Some(&from.large_frames.write));
    if tokio::time::timeout(timeout, write).await.is_err() {
        let _ = send.reset(codes::SLOW);
        warn_limited!(peer = %from.id, ?timeout, "an answer was not taken within the read timeout; its stream is reset");
    }
}

/// Runs `read` within `timeout`. Most reads of a new stream find their bytes already there:
/// the timer is armed (and boxed, so that the task of every request stream carries no timer
/// it rarely needs) only when the first poll has to wait.
pub(crate) async fn within_read_timeout<F: std::future::Future>(
    timeout: Duration,
    read: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut read = std::pin::pin!(read);
    match futures::poll!(read.as_mut()) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Box::pin(tokio::time::timeout(timeout, read)).await,
    }
}

/// Cuts a stream whose first bytes (`what`: its kind byte, a request, a streaming call's
/// header) did not come within the read timeout, both ways, and says so (rate-limited).
pub(crate) fn cut_slow_stream(
    peer: NodeId,
    timeout: Duration,
    what: &'static str,
    send: &mut SendStream,
    recv: &mut RecvStream,
) {
    warn_limited!(%peer, ?timeout, what, "cutting a stream the peer is too slow to send");
    let _ = recv.stop(codes::SLOW);
    let _ = send.reset(codes::SLOW);
}

/// Answers a bidirectional stream of an unknown kind with an error and stops it.
pub(crate) async fn unknown_kind(
    peer: NodeId,
    kind: u8,
    mut send: SendStream,
    mut recv: RecvStream,
    max: usize,
) {
    tracing::debug!(%peer, kind, "unexpected stream kind on a request stream");
    let _ = recv.stop(codes::PROTOCOL);
    let error = Error::invalid_argument(format!("unknown stream kind {kind}"));
    write_response(&mut send, &Err(error), max, None).await;
}

/// Reads the `Request` frame of a request stream (after its kind byte) and decodes it. A
/// request that cannot be read is an error to answer with; `Err(None)` when there is no one to
/// answer.
async fn read_request(
    from: &Peer,
    recv: &mut RecvStream,
    max: usize,
) -> Result<(InboundRequest, Held), Option<Error>> {
    let peer = from.id;
    let len = match read_header(recv, max).await {
        Ok(Some(len)) => len,
        Ok(None) => {
            return Err(Some(Error::invalid_argument(
                "the request stream ended before a request",
            )));
        }
        Err(e) => return Err(Some(unreadable_request(recv, e))),
    };
    // Room for the body in the budget first (waiting, within the read timeout, for other
    // requests to finish), so that what peers hold on this node is bounded node-wide.
    let Some(budget) = from.request_bytes.acquire(len).await else {
        return Err(Some(Error::unavailable("the connection is closing")));
    };
    let frame = match read_body_in(recv, len, Some(&from.large_frames.read)).await {
        Ok(frame) => frame,
        Err(e) => return Err(Some(unreadable_request(recv, e))),
    };
    let request =
        decode_request(frame).map_err(|e| Some(Error::invalid_argument(e.to_string())))?;
    Ok((inbound_request(peer, request), budget))
}

/// The request `from` sent, as the node takes it.
pub(crate) fn inbound_request(from: NodeId, request: DecodedRequest) -> InboundRequest {
    InboundRequest {
        from,
        network: request.network,
        path: request.path,
        payload: Value::from_encoded(request.payload),
        timeout: Duration::from_millis(request.timeout_ms.unwrap_or(0)),
        payload_type: request.payload_type,
        metadata: request.metadata,
    }
}

/// The error answered for a request whose header or body could not be read: a frame over the
/// limit stops the stream with [`codes::TOO_LARGE`] (the peer need not send the rest).
fn unreadable_request(recv: &mut RecvStream, e: TransportError) -> Error {
    match e {
        e @ TransportError::FrameTooLarge { .. } => {
            let _ = recv.stop(codes::TOO_LARGE);
            to_error(e, format_args!("the request"))
        }
        e => Error::invalid_argument(format!("unreadable request: {e}")),
    }
}

/// Runs `request` on the node. `None` when the caller stopped waiting first: the handler is
/// dropped, and there is nothing to answer.
async fn run_request<H: NodeHandler>(
    node: &H,
    request: InboundRequest,
    send: &mut SendStream,
) -> Option<Result<Value>> {
    let peer = request.from;
    // Inline: the task of a request stream is boxed when spawned (`Mesh::accept_streams`), so
    // its size is copied once, and the node's side needs no allocation of its own.
    let mut serving = std::pin::pin!(node.serve(request));
    // Most handlers answer on their first poll: only watch for the caller giving up (which
    // takes the connection's lock and a waker registration) when one does not.
    match futures::poll!(serving.as_mut()) {
        Poll::Ready(outcome) => Some(outcome),
        Poll::Pending => {
            let stopped = send.stopped();
            tokio::select! {
                outcome = &mut serving => Some(outcome),
                _ = stopped => {
                    tracing::debug!(%peer, "caller cancelled a request");
                    None
                }
            }
        }
    }
}

/// Writes the answer, or the error, as the `Response` frame and finishes the stream. An answer
/// over the maximum message size is replaced by that error.
async fn write_response(
    send: &mut SendStream,
    outcome: &Result<Value>,
    max: usize,
    spare: Option<&BufferPool>,
) {
    let frame = match (outcome, spare) {
        (Ok(value), Some(spare)) => {
            let payload = Measured::new(value);
            frame_in(spare, payload, |buf| {
                append_response_frame(buf, payload, max)
            })
        }
        (Ok(value), None) => response_frame(Measured::new(value), max),
        (Err(e), _) => encode_frame(None, &error_response(0, e), max),
    };
    let frame = match frame {
        Ok(frame) => frame,
        Err(e) => {
            let error = to_error(e, format_args!("the answer"));
            match encode_frame(None, &error_response(0, &error), max) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
    };
    if send.write_chunk(frame).await.is_ok() {
        let _ = send.finish();
    }
}

/// The frame `append` writes for `payload`: in `spare` when the payload is at least
/// [`LARGE_FRAME`] bytes (see [`LargeFrames`]), else in a buffer of its own.
fn frame_in(
    spare: &BufferPool,
    payload: Measured<'_>,
    append: impl FnOnce(&mut BytesMut) -> Result<(), TransportError>,
) -> Result<Bytes, TransportError> {
    if payload.len() >= LARGE_FRAME {
        let mut buf = spare.take(0);
        append(&mut buf)?;
        Ok(spare.freeze(buf))
    } else {
        let mut buf = BytesMut::new();
        append(&mut buf)?;
        Ok(buf.freeze())
    }
}

/// Writes queued control messages on the control stream.
pub(crate) async fn write_control(
    mut send: SendStream,
    mut queue: mpsc::Receiver<wire::Control>,
    max: usize,
) {
    while let Some(message) = queue.recv().await {
        match encode_frame(None, &message, max) {
            Ok(frame) => {
                if send.write_chunk(frame).await.is_err() {
                    break;
                }
            }
            Err(e) => tracing::warn!(error = %e, "a control message is too large to send"),
        }
    }
    let _ = send.finish();
}

/// Reads one of the peer's event streams and delivers each event to the subscriptions it names.
/// An event whose frame arrives in pieces takes room in the peer's `budget` until delivered;
/// without room, the stream is cut (the sender opens another).
/// Every frame read is counted on the peer (see [`Peer::events_read`]).
pub(crate) async fn read_events<H: NodeHandler>(node: H, from: Arc<Peer>, mut recv: RecvStream) {
    let peer = from.id;
    match read_kind(&mut recv).await {
        Ok(KIND_EVENTS) => {}
        Ok(kind) => {
            tracing::debug!(%peer, kind, "unexpected stream kind on a unidirectional stream");
            let _ = recv.stop(codes::PROTOCOL);
            return;
        }
        Err(_) => return,
    }
    let mut frames = FrameReader::new(from.max_message_size(), Some(from.read_timeout()))
        .with_budget(from.budget().clone());
    loop {
        let frame = frames.next(&mut recv).await;
        if let Ok(Some(_)) = &frame {
            from.frame_read();
        }
        match frame {
            Ok(Some(frame)) => match decode_event(frame) {
                Ok(event) => {
                    // Frames already received are read without waiting: let other tasks run
                    // now and then (tokio's cooperative budget).
                    tokio::task::coop::consume_budget().await;
                    let crowded = node.deliver(InboundEvent {
                        from: peer,
                        network: event.network,
                        topic: event.topic,
                        payload: event.payload,
                        more: event.more,
                        frame_len: event.frame_len,
                        subscription_ids: event.subscription_ids,
                        retained: event.retained,
                        metadata: event.metadata,
                    });
                    if let Some(waiting) = crowded {
                        waiting.await;
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "malformed event skipped"),
            },
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "event stream closed");
                let _ = recv.stop(codes::PROTOCOL);
                break;
            }
        }
    }
}
