//! The network's interface to the node above it, and the messages that cross it.
//!
//! The network imports nothing from the node, the registry or the services: it defines here what
//! it needs ([`NodeHandler`], which the node implements), decodes frames into the values below
//! before calling it, and hands the node opaque per-peer handles ([`PeerHandle`], [`EventSink`])
//! to send requests and events back out. New inbound data (request metadata, flow control) is a
//! new field on these structs or a new provided method on the trait.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::future::BoxFuture;

pub(crate) use super::frames::Text;
use super::stream::{MessageStream, StreamBuffer, ValueStream};
use crate::error::Result;
use crate::identity::NodeId;
use crate::metadata::Metadata;
use crate::value::{Value, ValueRef};
use crate::wire;

/// One connection to a peer. Entries learned over a connection are removed with it, so a newer
/// connection to the same peer never loses its entries to an older one's cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerLink {
    /// The peer.
    pub(crate) node: NodeId,
    /// This node's number for the connection, unique while the node runs.
    pub(crate) link: u64,
}

/// A request a peer sent, decoded.
pub(crate) struct InboundRequest {
    /// The peer that sent it.
    pub(crate) from: NodeId,
    /// The network the action is in.
    pub(crate) network: String,
    /// The action path (without network).
    pub(crate) path: String,
    /// The request payload, still encoded.
    pub(crate) payload: Value,
    /// How long the caller waits, as it said (the node bounds it).
    pub(crate) timeout: Duration,
    /// The full protobuf name of the payload's type, as the caller said (empty: not said).
    pub(crate) payload_type: String,
    /// The request's metadata as the peer sent it, in wire order, reserved entries taken out:
    /// the node validates and limits it (a later entry for a key replaces an earlier one).
    pub(crate) metadata: Vec<(String, bytes::Bytes)>,
}

/// A streaming call a peer started, decoded: its header, and its requests as the handler
/// reads them.
pub(crate) struct InboundStream {
    /// The peer that started it.
    pub(crate) from: NodeId,
    /// The network the action is in.
    pub(crate) network: String,
    /// The action path (without network).
    pub(crate) path: String,
    /// The caller's deadline for the whole call, if it set one.
    pub(crate) timeout: Option<Duration>,
    /// The call's metadata as the peer sent it, reserved entries taken out.
    pub(crate) metadata: Vec<(String, bytes::Bytes)>,
    /// The caller's messages, still encoded, read from the stream as they are asked for.
    pub(crate) requests: ValueStream,
}

/// An event a peer sent, decoded where it lies in the frame (see [`decode_event`](super::frames::decode_event)).
pub(crate) struct InboundEvent {
    /// The peer that sent it.
    pub(crate) from: NodeId,
    /// The network the topic is in (empty: the connection's network).
    pub(crate) network: Text,
    /// The concrete topic (without network), as it lies in the frame.
    pub(crate) topic: Text,
    /// The event payload, still encoded.
    pub(crate) payload: bytes::Bytes,
    /// Further events the same frame carries (same topic, subscriptions, `retained` and
    /// metadata), each still encoded, delivered after `payload` in order.
    pub(crate) more: super::frames::MorePayloads,
    /// The length of the frame the payloads are slices of: what they keep in memory until
    /// the last of them is handled.
    pub(crate) frame_len: usize,
    /// This node's subscriptions the event is for.
    pub(crate) subscription_ids: SubscriptionIds,
    /// True for a retained event replayed to a new subscription.
    pub(crate) retained: bool,
    /// The event's metadata as the peer sent it (the node validates and limits it).
    pub(crate) metadata: HashMap<String, bytes::Bytes>,
}

/// The subscription ids an event names, on one node: usually one (a node's one subscriber to
/// a topic), kept without allocating; more in a `Vec` when this node sends them, or left in
/// the frame they came in (a peer can name millions in one frame: read one at a time, they
/// cost nothing to hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubscriptionIds {
    /// Exactly one id.
    One(u64),
    /// Any number of ids, in the order they came.
    Many(Vec<u64>),
    /// `count` ids in an `Event` frame's `body`, which [`decode_event`] checked.
    ///
    /// [`decode_event`]: super::frames::decode_event
    InFrame { body: bytes::Bytes, count: usize },
}

impl Default for SubscriptionIds {
    fn default() -> Self {
        SubscriptionIds::Many(Vec::new())
    }
}

impl FromIterator<u64> for SubscriptionIds {
    fn from_iter<I: IntoIterator<Item = u64>>(ids: I) -> Self {
        let mut all = SubscriptionIds::default();
        for id in ids {
            all.push(id);
        }
        all
    }
}

impl SubscriptionIds {
    /// Adds `id` at the end (ids left in a frame move to a `Vec` first).
    pub(crate) fn push(&mut self, id: u64) {
        match self {
            SubscriptionIds::Many(ids) if ids.is_empty() => *self = SubscriptionIds::One(id),
            SubscriptionIds::One(first) => *self = SubscriptionIds::Many(vec![*first, id]),
            SubscriptionIds::Many(ids) => ids.push(id),
            SubscriptionIds::InFrame { .. } => {
                let mut ids: Vec<u64> = self.iter().collect();
                ids.push(id);
                *self = SubscriptionIds::Many(ids);
            }
        }
    }

    /// The ids in the order they came, repeats included.
    pub(crate) fn iter(&self) -> Ids<'_> {
        match self {
            SubscriptionIds::One(id) => Ids::Listed(std::slice::from_ref(id).iter()),
            SubscriptionIds::Many(ids) => Ids::Listed(ids.iter()),
            SubscriptionIds::InFrame { body, .. } => {
                Ids::InFrame(super::frames::IdsInFrame::new(body.clone()))
            }
        }
    }

    /// How many ids there are (repeats included).
    pub(crate) fn len(&self) -> usize {
        match self {
            SubscriptionIds::One(_) => 1,
            SubscriptionIds::Many(ids) => ids.len(),
            SubscriptionIds::InFrame { count, .. } => *count,
        }
    }
}

/// What [`SubscriptionIds::iter`] gives.
pub(crate) enum Ids<'a> {
    Listed(std::slice::Iter<'a, u64>),
    InFrame(super::frames::IdsInFrame),
}

impl Iterator for Ids<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        match self {
            Ids::Listed(ids) => ids.next().copied(),
            Ids::InFrame(ids) => ids.next(),
        }
    }
}

/// An event bound for a peer, borrowed from the publisher: what the peer's queue encodes its
/// frame from, as it queues it (see [`EventSink::try_send`]).
pub(crate) struct EventRef<'a> {
    pub(crate) network: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) payload: EventPayload<'a>,
    pub(crate) subscription_ids: &'a SubscriptionIds,
    pub(crate) retained: bool,
    pub(crate) metadata: &'a Metadata,
}

/// An outbound event's payload: already encoded (once for several peers), or the value itself,
/// encoded straight into the frame.
#[derive(Clone, Copy)]
pub(crate) enum EventPayload<'a> {
    Encoded(&'a [u8]),
    /// Encoded within the node's seal scope, if it has one.
    Value(
        ValueRef<'a>,
        Option<&'a Arc<dyn crate::value::scope::Scope>>,
    ),
}

impl EventPayload<'_> {
    /// The length of the payload's encoding.
    pub(crate) fn len(&self) -> usize {
        match self {
            EventPayload::Encoded(bytes) => bytes.len(),
            // A sealed field's length does not depend on the scope.
            EventPayload::Value(value, _) => value.encoded_len(),
        }
    }

    /// Appends the payload's encoding ([`len`](Self::len) bytes) to `buf`.
    pub(crate) fn encode_into(&self, buf: &mut bytes::BytesMut) {
        match self {
            EventPayload::Encoded(bytes) => buf.extend_from_slice(bytes),
            EventPayload::Value(value, None) => value.encode_into(buf),
            EventPayload::Value(value, Some(scope)) => {
                crate::value::scope::within(scope, || value.encode_into(buf))
            }
        }
    }

    /// The payload's encoding, as bytes of its own.
    pub(crate) fn to_bytes(self) -> bytes::Bytes {
        match self {
            EventPayload::Encoded(bytes) => bytes::Bytes::copy_from_slice(bytes),
            EventPayload::Value(..) => {
                let mut buf = bytes::BytesMut::with_capacity(self.len());
                self.encode_into(&mut buf);
                buf.freeze()
            }
        }
    }
}

/// Why a peer's event queue did not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueRefusal {
    /// The queue is full (in events or in bytes): wait for room, or drop the event.
    Full,
    /// The peer is gone.
    Closed,
}

/// An event bound for a peer, owned: what waits for room in a full queue.
#[derive(Clone, Debug)]
pub(crate) struct OutboundEvent {
    pub(crate) network: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) payload: bytes::Bytes,
    pub(crate) subscription_ids: SubscriptionIds,
    pub(crate) retained: bool,
    pub(crate) metadata: Metadata,
}

impl OutboundEvent {
    /// How many deliveries the event carries: one per subscription it names.
    pub(crate) fn copies(&self) -> u64 {
        self.borrowed().copies()
    }

    /// The event, borrowed, as a queue takes it.
    pub(crate) fn borrowed(&self) -> EventRef<'_> {
        EventRef {
            network: &self.network,
            topic: &self.topic,
            payload: EventPayload::Encoded(&self.payload),
            subscription_ids: &self.subscription_ids,
            retained: self.retained,
            metadata: &self.metadata,
        }
    }
}

impl EventRef<'_> {
    /// How many deliveries the event carries: one per subscription it names.
    pub(crate) fn copies(&self) -> u64 {
        u64::try_from(self.subscription_ids.len()).unwrap_or(u64::MAX)
    }

    /// The event, owned (its payload encoded), to wait for room with.
    pub(crate) fn owned(&self) -> OutboundEvent {
        OutboundEvent {
            network: self.network.into(),
            topic: self.topic.into(),
            payload: self.payload.to_bytes(),
            subscription_ids: self.subscription_ids.clone(),
            retained: self.retained,
            metadata: self.metadata.clone(),
        }
    }
}

/// What became of the events queued for peers, counted by the peers' event writers for the
/// node's statistics. Counts are deliveries: an event naming three subscriptions counts three.
#[derive(Debug, Default)]
pub(crate) struct PeerEventCounters {
    /// Deliveries written to a peer's event stream.
    pub(crate) written: AtomicU64,
    /// Deliveries lost after they were queued: a write that failed, an event over the maximum
    /// message size, events still queued when the connection closed.
    pub(crate) dropped: AtomicU64,
    /// Peers disconnected because their event stream stayed stuck past the slow-consumer
    /// timeout.
    pub(crate) slow_consumers: AtomicU64,
}

/// What happened to a peer, for the node's `$registry` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerChange {
    /// Discovery reported it; a connection is being attempted.
    Discovered,
    /// A connection to it was admitted and kept.
    Connected,
    /// Its (kept) connection closed.
    Disconnected,
}

/// A change of a peer's state, as the mesh reports it.
pub(crate) struct PeerNotice<'a> {
    /// The peer.
    pub(crate) peer: NodeId,
    /// What happened.
    pub(crate) change: PeerChange,
    /// The peer's name, once it said it (empty before its hello).
    pub(crate) name: &'a str,
    /// Its addresses: announced ones when discovered, the connection's otherwise.
    pub(crate) addresses: &'a [SocketAddr],
}

/// Why a peer's connection was refused, on either side of the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Not known (a newer peer's reason).
    Unspecified = 0,
    /// The peer's certificate is not issued by this network's key (TLS `UnknownIssuer`, a bad
    /// certificate alert): the two nodes were given different `NetworkKey`s.
    NetworkKey = 1,
    /// The peer holds the key but its default network has another name.
    NetworkName = 2,
    /// The peer speaks another protocol version.
    ProtocolVersion = 3,
    /// The peer is not the node that was expected at that address, or its hello named another
    /// id than its certificate.
    Identity = 4,
    /// The peer's hello announced more than `NetworkConfig::peer_limits` allow.
    Limits = 5,
}

impl RefusalReason {
    /// The reason in a few words, as in `network key mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Unspecified => "refused",
            RefusalReason::NetworkKey => "network key mismatch",
            RefusalReason::NetworkName => "network name mismatch",
            RefusalReason::ProtocolVersion => "protocol version mismatch",
            RefusalReason::Identity => "unexpected node identity",
            RefusalReason::Limits => "announcement over the peer limits",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handshake the mesh refused, or that the peer refused, as the mesh reports it.
pub(crate) struct PeerRefusal<'a> {
    /// The peer's address.
    pub(crate) address: SocketAddr,
    /// The peer's id, when its certificate was verified.
    pub(crate) peer: Option<NodeId>,
    /// Why.
    pub(crate) reason: RefusalReason,
    /// The details, in words (bounded: at most a few hundred characters of the peer's).
    pub(crate) detail: &'a str,
}

/// A peer's subscription as it announced it.
pub(crate) type SubscriptionOffer = wire::SubscriptionDescriptor;

/// What a node offers its peers: its running services and its subscriptions.
#[derive(Debug, Default, Clone)]
pub(crate) struct Offer {
    /// The running services (network, path, actions, schema).
    pub(crate) services: Vec<wire::ServiceDescriptor>,
    /// Its subscriptions, with the ids events for them carry.
    pub(crate) subscriptions: Vec<SubscriptionOffer>,
}

/// A peer's offer, numbered: a higher version replaces a lower one.
pub(crate) struct PeerOffer {
    /// The peer's version of its offer; later announcements have higher versions.
    pub(crate) version: u64,
    /// What the peer offers.
    pub(crate) offer: Offer,
}

/// Sends events to one peer (over its connection's event stream): the network supplies it for
/// each peer subscription, the registry holds it, the node's event path uses it.
pub(crate) trait EventSink: Send + Sync + 'static {
    /// The peer the events go to (for logs).
    fn peer(&self) -> NodeId;
    /// Queues `event` (encodes its frame, or joins the frame queued last) if the peer's queue
    /// has room. An event over the maximum message size is queued as dropped: counted and
    /// logged, not sent.
    fn try_send(&self, event: &EventRef<'_>) -> Result<(), QueueRefusal>;
    /// Queues `event`, waiting while the peer's queue is full. False when the peer is gone (or
    /// went while this waited).
    fn send(&self, event: OutboundEvent) -> BoxFuture<'_, bool>;
}

/// What the network needs from the node it serves. The node implements it; the mesh calls it
/// with decoded values, never with frames.
pub(crate) trait NodeHandler: Clone + Send + Sync + 'static {
    /// False once the node is gone: the mesh stops serving its peers' streams.
    fn is_alive(&self) -> bool;

    /// Serves a request a peer sent, with this node's own handler, within the caller's timeout.
    /// The future owns what it needs (the mesh boxes it without a wrapper of its own).
    fn serve(
        &self,
        request: InboundRequest,
    ) -> impl Future<Output = Result<Value>> + Send + 'static;

    /// Serves a streaming call a peer started, with this node's own handler: the stream of
    /// replies once the handler accepted the call. The mesh drops it (and so the handler's
    /// streams) when the caller goes away.
    fn serve_stream(
        &self,
        stream: InboundStream,
    ) -> impl Future<Output = Result<MessageStream>> + Send {
        let _ = stream;
        async {
            Err(crate::error::Error::unimplemented(
                "this node serves no streaming calls",
            ))
        }
    }

    /// How many messages of one streaming call this side buffers: at first, and at most.
    fn stream_buffer(&self) -> StreamBuffer {
        StreamBuffer::new(1, 1)
    }

    /// Delivers an event a peer sent to the local subscriptions it names: at once to every
    /// one whose queue has room; when some were full, the waiting for room comes back to be
    /// awaited (the peer's later events wait behind it).
    fn deliver(&self, event: InboundEvent) -> Option<BoxFuture<'static, ()>>;

    /// What this node offers `peer` now (sent in hellos and capability announcements): what
    /// the peer may use of it.
    fn offer(&self, peer: &NodeId) -> Offer;

    /// The peer on `peer` now offers `offer`: the node updates what it routes to that link (it
    /// diffs against what the link offered before and ignores an offer older than that). Called
    /// before the peer is listed as connected, and again on every announcement.
    fn peer_offers(&self, peer: &PeerHandle, offer: PeerOffer);

    /// Nothing more is to be routed over `link` (the connection closed or was superseded).
    fn link_removed(&self, link: PeerLink);

    /// A peer was discovered, connected or disconnected. A connected peer is listed (and what
    /// it offers registered) before this is called.
    fn peer_changed(&self, notice: PeerNotice<'_>) -> impl Future<Output = ()> + Send;

    /// A handshake was refused, by this node or by the peer (wrong network key or name,
    /// another protocol version, an unexpected identity). Peer-triggered: the node counts it and
    /// rate-limits its logs.
    fn peer_refused(&self, refusal: PeerRefusal<'_>) -> impl Future<Output = ()> + Send;
}

/// A handle on one admitted connection, for the node: send it requests, queue it events, know
/// which link it is.
pub(crate) type PeerHandle = Arc<super::peer::Peer>;
