//! One connection to a peer: the client side of remote requests, serving the peer's requests,
//! and the event and control streams.
//!
//! Streams (see `proto/runar/v1/README.md`): every stream starts with one kind byte. The dialer
//! opens one bidirectional control stream; every request is a bidirectional stream of its own
//! (one `Request` frame, one `Response` frame), so requests never wait for each other; each side
//! sends its events on one unidirectional stream, which keeps them in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use prost::Message;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::TransportError;
use super::frames::{append_event_frame, request_frame, response_frame};
use super::framing::{FrameReader, encode_frame, read_body, read_frame, read_header};
use super::interface::{
    EventSink, InboundEvent, InboundRequest, NodeHandler, OutboundEvent, PeerLink,
};
use super::log_limit::warn_limited;
use crate::error::{Code, Error, Result};
use crate::identity::NodeId;
use crate::value::Value;
use crate::wire;

/// The first byte of a control stream.
pub(crate) const KIND_CONTROL: u8 = 1;
/// The first byte of a request stream.
pub(crate) const KIND_REQUEST: u8 = 2;
/// The first byte of an event stream.
pub(crate) const KIND_EVENTS: u8 = 3;
/// The protocol version this node speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

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
    /// The peer did not read (its control queue filled) or did not send in time.
    pub(crate) const SLOW: VarInt = VarInt::from_u32(4);
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
    pub(crate) connection: Connection,
    /// Which side opened the connection (for the simultaneous-dial rule).
    pub(crate) dialer: NodeId,
    control: mpsc::Sender<wire::Control>,
    /// The queue of the peer's event writer, as the node's subscriptions hold it.
    events: Arc<dyn EventSink>,
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
    /// Bytes of the peer's requests this node may hold at once (one permit per byte).
    request_bytes: Arc<Semaphore>,
    request_bytes_max: usize,
}

/// The per-peer limits a [`Peer`] is made with (from the network configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSettings {
    pub(crate) max_message_size: usize,
    pub(crate) event_queue_capacity: usize,
    pub(crate) control_queue_capacity: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) max_request_bytes: usize,
}

/// Counts a request in flight on a connection while it lives.
pub(crate) struct InFlight<'a>(&'a Peer);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A peer's event queue, as an [`EventSink`].
struct EventQueue(mpsc::Sender<OutboundEvent>);

impl EventSink for EventQueue {
    fn try_send(&self, event: OutboundEvent) -> Result<(), Option<OutboundEvent>> {
        self.0.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(event) => Some(event),
            mpsc::error::TrySendError::Closed(_) => None,
        })
    }

    fn send(&self, event: OutboundEvent) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.send(event).await.is_ok() })
    }
}

/// Who a new peer is, from its certificate and its hello.
pub(crate) struct PeerIdentity {
    pub(crate) id: NodeId,
    pub(crate) link: PeerLink,
    pub(crate) name: String,
    pub(crate) instance: u64,
    pub(crate) dialer: NodeId,
}

/// The receiving ends of a new peer's queues, for the tasks that drain them.
pub(crate) struct PeerQueues {
    pub(crate) control: mpsc::Receiver<wire::Control>,
    pub(crate) events: mpsc::Receiver<OutboundEvent>,
}

impl Peer {
    pub(crate) fn new(
        identity: PeerIdentity,
        connection: Connection,
        settings: PeerSettings,
    ) -> (Arc<Peer>, PeerQueues) {
        let PeerIdentity {
            id,
            link,
            name,
            instance,
            dialer,
        } = identity;
        let (control, control_rx) = mpsc::channel(settings.control_queue_capacity.max(1));
        let (events, events_rx) = mpsc::channel(settings.event_queue_capacity.max(1));
        // Semaphore permits are capped; a budget beyond that cap is the cap.
        let request_bytes_max = settings.max_request_bytes.min(Semaphore::MAX_PERMITS);
        let peer = Arc::new(Peer {
            id,
            link,
            name,
            instance,
            connection,
            dialer,
            control,
            events: Arc::new(EventQueue(events)),
            acked: watch::Sender::new(0),
            retired: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            max_message_size: settings.max_message_size,
            read_timeout: settings.read_timeout,
            request_bytes: Arc::new(Semaphore::new(request_bytes_max)),
            request_bytes_max,
        });
        (
            peer,
            PeerQueues {
                control: control_rx,
                events: events_rx,
            },
        )
    }

    /// The peer's event queue: every subscription of this peer holds a clone.
    pub(crate) fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// The requests in flight on this connection, both ways.
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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

    /// Sends a request to the peer and waits for its answer. Dropping the future stops the
    /// stream, which cancels the handler on the peer.
    pub(crate) async fn request(
        &self,
        network: &str,
        path: &str,
        payload: &Value,
        timeout: Duration,
    ) -> Result<Value> {
        let _in_flight = self.in_flight();
        let max = self.max_message_size;
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let frame = request_frame(KIND_REQUEST, network, path, payload, timeout_ms, max);
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
        let frame = match read_frame(&mut recv, max).await {
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
        let response = wire::Response::decode(frame).map_err(|e| {
            Error::internal(format!("peer {} sent a malformed response: {e}", self.id))
        })?;
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
fn to_error(error: TransportError, what: std::fmt::Arguments<'_>) -> Error {
    match error {
        TransportError::FrameTooLarge { len, max } => Error::resource_exhausted(format!(
            "{what} is {len} bytes, over the maximum message size of {max}"
        )),
        e => e.into(),
    }
}

fn error_response(error: &Error) -> wire::Response {
    wire::Response {
        result: Some(wire::response::Result::Error(wire::ErrorStatus {
            code: error.code().as_u32(),
            message: error.message().to_owned(),
        })),
    }
}

/// Serves one request stream the peer opened: reads the request, runs the local handler (which
/// is dropped, and so cancelled, if the caller stops waiting), writes the answer.
pub(crate) async fn serve_request<H: NodeHandler>(
    node: H,
    from: Arc<Peer>,
    mut send: SendStream,
    mut recv: RecvStream,
    max: usize,
) {
    let _in_flight = from.in_flight();
    // The whole request (kind, header, body) is due within the read timeout.
    let timeout = from.read_timeout;
    let read = tokio::time::timeout(timeout, read_request(&from, &mut recv, max)).await;
    let read = read.unwrap_or_else(|_| {
        warn_limited!(peer = %from.id, ?timeout, "cutting a request stream the peer is too slow to send");
        let _ = recv.stop(codes::SLOW);
        send.reset(codes::SLOW).ok();
        Err(None)
    });
    // Held while the request is served: its bytes count against the peer's budget.
    let outcome = match read {
        Ok((request, _budget)) => match run_request(&node, request, &mut send).await {
            Some(outcome) => outcome,
            None => return,
        },
        Err(Some(error)) => Err(error),
        Err(None) => return,
    };
    write_response(send, &outcome, max).await;
}

/// Reads the kind byte and the `Request` frame of a request stream and decodes it. A request
/// that cannot be read is an error to answer with; `Err(None)` when there is no one to answer
/// (the stream ended before its kind byte).
async fn read_request(
    from: &Peer,
    recv: &mut RecvStream,
    max: usize,
) -> Result<(InboundRequest, OwnedSemaphorePermit), Option<Error>> {
    let peer = from.id;
    match read_kind(recv).await {
        Ok(KIND_REQUEST) => {}
        Ok(kind) => {
            tracing::debug!(%peer, kind, "unexpected stream kind on a request stream");
            let _ = recv.stop(codes::PROTOCOL);
            return Err(Some(Error::invalid_argument(format!(
                "unknown stream kind {kind}"
            ))));
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "request stream ended before its kind byte");
            return Err(None);
        }
    }
    let len = match read_header(recv, max).await {
        Ok(Some(len)) => len,
        Ok(None) => {
            return Err(Some(Error::invalid_argument(
                "the request stream ended before a request",
            )));
        }
        Err(e @ TransportError::FrameTooLarge { .. }) => {
            let _ = recv.stop(codes::TOO_LARGE);
            return Err(Some(to_error(e, format_args!("the request"))));
        }
        Err(e) => {
            return Err(Some(Error::invalid_argument(format!(
                "unreadable request: {e}"
            ))));
        }
    };
    // Room for the body in the peer's budget first (waiting, within the read timeout, for
    // its other requests to finish), so that what one peer holds on this node is bounded.
    let want = u32::try_from(len.min(from.request_bytes_max)).unwrap_or(u32::MAX);
    let Ok(budget) = from.request_bytes.clone().acquire_many_owned(want).await else {
        return Err(Some(Error::unavailable("the connection is closing")));
    };
    let frame = match read_body(recv, len).await {
        Ok(frame) => frame,
        Err(e @ TransportError::FrameTooLarge { .. }) => {
            let _ = recv.stop(codes::TOO_LARGE);
            return Err(Some(to_error(e, format_args!("the request"))));
        }
        Err(e) => {
            return Err(Some(Error::invalid_argument(format!(
                "unreadable request: {e}"
            ))));
        }
    };
    let request = wire::Request::decode(frame)
        .map_err(|e| Some(Error::invalid_argument(format!("malformed request: {e}"))))?;
    let request = InboundRequest {
        from: peer,
        network: request.network,
        path: request.path,
        payload: Value::from_encoded(request.payload),
        timeout: Duration::from_millis(request.timeout_ms),
        payload_type: request.payload_type,
    };
    Ok((request, budget))
}

/// Runs `request` on the node. `None` when the caller stopped waiting first: the handler is
/// dropped, and there is nothing to answer.
async fn run_request<H: NodeHandler>(
    node: &H,
    request: InboundRequest,
    send: &mut SendStream,
) -> Option<Result<Value>> {
    let peer = request.from;
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
async fn write_response(mut send: SendStream, outcome: &Result<Value>, max: usize) {
    let frame = match outcome {
        Ok(value) => response_frame(value, max),
        Err(e) => encode_frame(None, &error_response(e), max),
    };
    let frame = match frame {
        Ok(frame) => frame,
        Err(e) => {
            let error = to_error(e, format_args!("the answer"));
            match encode_frame(None, &error_response(&error), max) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
    };
    if send.write_chunk(frame).await.is_ok() {
        let _ = send.finish();
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

/// The most bytes of already-queued events coalesced into one write.
const EVENT_BATCH_BYTES: usize = 64 * 1024;

/// Writes queued events on this side's event stream, opened on first use, in order. Events
/// that are already queued when one is written go out in the same write (up to
/// [`EVENT_BATCH_BYTES`]): the frames are the same, there are just fewer writes.
pub(crate) async fn write_events(
    connection: Connection,
    mut queue: mpsc::Receiver<OutboundEvent>,
    max: usize,
) {
    let mut stream: Option<SendStream> = None;
    let mut batch = BytesMut::new();
    while let Some(event) = queue.recv().await {
        append_event(&mut batch, event, max);
        while batch.len() < EVENT_BATCH_BYTES {
            match queue.try_recv() {
                Ok(event) => append_event(&mut batch, event, max),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if stream.is_none() {
            let Ok(mut opened) = connection.open_uni().await else {
                break;
            };
            if opened.write_all(&[KIND_EVENTS]).await.is_err() {
                break;
            }
            stream = Some(opened);
        }
        if let Some(open) = stream.as_mut() {
            if open.write_chunk(batch.split().freeze()).await.is_err() {
                stream = None;
                if connection.close_reason().is_some() {
                    break;
                }
            }
        }
    }
}

/// Appends `event` to `batch` as one frame; an event over the maximum message size is logged
/// and skipped.
fn append_event(batch: &mut BytesMut, event: OutboundEvent, max: usize) {
    if let Err(e) = append_event_frame(batch, &event, max) {
        tracing::warn!(topic = %event.topic, error = %e, "event not sent");
    }
}

/// Reads one of the peer's event streams and delivers each event to the subscriptions it names.
pub(crate) async fn read_events<H: NodeHandler>(
    node: H,
    peer: NodeId,
    mut recv: RecvStream,
    max: usize,
    read_timeout: Duration,
) {
    match read_kind(&mut recv).await {
        Ok(KIND_EVENTS) => {}
        Ok(kind) => {
            tracing::debug!(%peer, kind, "unexpected stream kind on a unidirectional stream");
            let _ = recv.stop(codes::PROTOCOL);
            return;
        }
        Err(_) => return,
    }
    let mut frames = FrameReader::new(max, Some(read_timeout));
    loop {
        match frames.next(&mut recv).await {
            Ok(Some(frame)) => match wire::Event::decode(frame) {
                Ok(event) => {
                    node.deliver(InboundEvent {
                        from: peer,
                        network: event.network,
                        topic: event.topic,
                        payload: event.payload,
                        subscription_ids: event.subscription_ids,
                        retained: event.retained,
                    })
                    .await
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
