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
use tokio::sync::{Notify, mpsc, watch};

use super::TransportError;
use super::frames::{append_event_frame, request_frame, response_frame};
use super::framing::{FrameReader, encode_frame, read_frame};
use super::interface::{
    EventSink, InboundEvent, InboundRequest, NodeHandler, OutboundEvent, PeerLink,
};
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
    control: mpsc::UnboundedSender<wire::Control>,
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
    pub(crate) control: mpsc::UnboundedReceiver<wire::Control>,
    pub(crate) events: mpsc::Receiver<OutboundEvent>,
}

impl Peer {
    pub(crate) fn new(
        identity: PeerIdentity,
        connection: Connection,
        max_message_size: usize,
        event_queue_capacity: usize,
    ) -> (Arc<Peer>, PeerQueues) {
        let PeerIdentity {
            id,
            link,
            name,
            instance,
            dialer,
        } = identity;
        let (control, control_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::channel(event_queue_capacity);
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
            max_message_size,
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

    /// Waits until no request is in flight on this connection, or `timeout` passes.
    pub(crate) async fn drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return,
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

    /// Queues a control message.
    pub(crate) fn send_control(&self, kind: wire::control::Kind) {
        // A closed queue means the control writer ended with the connection.
        let _ = self.control.send(wire::Control { kind: Some(kind) });
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
    let outcome = match read_request(from.id, &mut recv, max).await {
        Ok(request) => match run_request(&node, request, &mut send).await {
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
    peer: NodeId,
    recv: &mut RecvStream,
    max: usize,
) -> Result<InboundRequest, Option<Error>> {
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
    let frame = match read_frame(recv, max).await {
        Ok(Some(frame)) => frame,
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
    let request = wire::Request::decode(frame)
        .map_err(|e| Some(Error::invalid_argument(format!("malformed request: {e}"))))?;
    Ok(InboundRequest {
        from: peer,
        network: request.network,
        path: request.path,
        payload: Value::from_encoded(request.payload),
        timeout: Duration::from_millis(request.timeout_ms),
    })
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
    mut queue: mpsc::UnboundedReceiver<wire::Control>,
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
    let mut frames = FrameReader::new(max);
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
