//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).
//!
//! One function per target, each taking the fuzzer's bytes and exercising one decoder that sees
//! bytes from a peer exactly as the node runs it, plus cross-checks (an encoder against prost,
//! the trie against linear matching, the stream reader against a one-piece parse) that panic
//! when two views disagree. Nothing here may panic on any input otherwise.
//!
//! [`seeds`] builds the seed corpora from the real encoders; the unit tests below run every
//! target over them (and over the regression inputs of crashes found), so `cargo test` keeps
//! them honest without a fuzzer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::discovery::packet::{self, Checker};
use crate::error::Error;
use crate::identity::NodeId;
use crate::metadata::{Metadata, TIMEOUT_KEY};
use crate::network::frames::{
    self, Measured, RequestFrame, append_answer_frame, append_event_frame, check_decode_event,
    check_decode_request, decode_response, response_frame,
};
use crate::network::framing::{ChunkSource, FrameReader, encode_frame, split_frame};
use crate::network::{
    EventRef, EventSink, Offer, OutboundEvent, PeerLink, PeerOffer, QueueRefusal, TransportError,
};
use crate::node::registry::{EventRun, Origin, Sink, subscription_queue};
use crate::node::service::{ActionHandler, Caller};
use crate::node::{Node, NodeConfig, OfferingPeer};
use crate::routing::{PathLimits, PathTrie, TopicPath, split_concrete};
use crate::value::Value;
use crate::wire;

/// The frame limit the targets use: larger than any input the fuzzer makes.
const MAX: usize = 1 << 20;
/// The network id the discovery target's receiver belongs to.
const NETWORK_ID: &str = "fuzz-net";
/// Patterns the inbound-event and path targets route against.
const PATTERNS: &[&str] = &[
    "math/add",
    "math/*",
    "math/>",
    ">",
    "items/{id}",
    "items/{id}/parts/{part}",
    "a/b/c/d/e/f/g/h",
    "*/*/*",
];

/// Runs a future that never waits (everything it reads is in memory) to completion.
fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A stream's bytes as received chunks.
struct Chunks(VecDeque<Bytes>);

impl ChunkSource for Chunks {
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        Ok(self.0.pop_front())
    }
}

/// How one whole stream parses into frames: the frames, then how it ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Clean,
    TooLarge,
    Truncated,
}

/// The reference: frames cut from the stream in one piece.
fn frames_in_one_piece(mut stream: &[u8], max: usize) -> (Vec<Bytes>, Ending) {
    let mut frames = Vec::new();
    loop {
        if stream.is_empty() {
            return (frames, Ending::Clean);
        }
        let Some((header, rest)) = stream.split_first_chunk::<4>() else {
            return (frames, Ending::Truncated);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > max {
            return (frames, Ending::TooLarge);
        }
        let Some((body, rest)) = rest.split_at_checked(len) else {
            return (frames, Ending::Truncated);
        };
        frames.push(Bytes::copy_from_slice(body));
        stream = rest;
    }
}

/// Framing: a stream of length-prefixed frames, cut into chunks of fuzzer-chosen sizes, read by
/// the [`FrameReader`] of event streams and streaming calls must give the same frames and the same ending as the stream
/// parsed in one piece. Input: `[max frame len (1 byte), chunk sizes (1 byte: count n, then n
/// sizes)] stream`.
pub fn framing(data: &[u8]) {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(max) * 4;
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let Some((sizes, stream)) = rest.split_at_checked(usize::from(count)) else {
        return;
    };
    let mut chunks = VecDeque::new();
    let mut at = 0;
    let mut next_size = sizes.iter().cycle().map(|&s| usize::from(s).max(1));
    while at < stream.len() {
        let size = next_size.next().unwrap_or(stream.len());
        let end = stream.len().min(at + size);
        chunks.push_back(Bytes::copy_from_slice(
            stream.get(at..end).unwrap_or_default(),
        ));
        at = end;
    }
    let (expected, ending) = frames_in_one_piece(stream, max);
    let mut source = Chunks(chunks);
    let mut reader = FrameReader::new(max, None);
    let mut got = Vec::new();
    let got_ending = loop {
        // As a streaming call's reader does: every frame already received (`ready`), or a
        // run of them whose bodies it accepts (`ready_run`, taken apart with `split_frame`
        // as its consumer does), then a read (`next`); and `next` alone.
        let ready = match got.len() % 3 {
            0 => reader.ready(),
            1 => {
                let accept = |body: &[u8]| body.first().is_none_or(|b| b % 2 == 0);
                let (mut run, count) = reader.ready_run(accept, 3);
                let mut taken = 0;
                while let Some(frame) = split_frame(&mut run) {
                    got.push(frame);
                    taken += 1;
                }
                assert!(
                    run.is_empty() && taken == count,
                    "a run holds its frames, whole"
                );
                if count > 0 {
                    continue;
                }
                None
            }
            _ => None,
        };
        let step = match ready {
            Some(ready) => ready.map(Some),
            None => run_ready(reader.next(&mut source)),
        };
        match step {
            Ok(Some(frame)) => got.push(frame),
            Ok(None) => break Ending::Clean,
            Err(TransportError::FrameTooLarge { .. }) => break Ending::TooLarge,
            Err(TransportError::Truncated { .. }) => break Ending::Truncated,
            Err(e) => panic!("unexpected error from in-memory chunks: {e}"),
        }
    };
    assert_eq!(got, expected, "frames differ");
    assert_eq!(got_ending, ending, "endings differ");
}

/// The frames of request streams and event streams: `Request`, `Response` and `Event` decode
/// (what `serve_request`, `Peer::request` and `read_events` do), and whatever decodes is
/// re-encoded by the hand-written frame encoders, which must give prost's bytes exactly. The
/// request path is checked as the node checks it. Input: `[which (1 byte)] message`.
pub fn request_frames(data: &[u8]) {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let limits = PathLimits::default();
    match which % 3 {
        0 => {
            check_decode_request(message);
            let Ok(request) = wire::Request::decode(message) else {
                return;
            };
            let payload = Value::from_encoded(request.payload.clone());
            // The encoder names the payload's type itself (empty for bytes from the wire), and
            // writes the timeout entry only in canonical form (decimal, not zero).
            let mut expected = request.clone();
            expected.payload_type = payload.known_name().unwrap_or_default().into();
            // A request frame never says `cancel` (a cancellation has a frame of its own).
            expected.cancel = false;
            let timeout = expected.metadata.remove(TIMEOUT_KEY);
            let timeout_ms = timeout
                .as_ref()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .filter(|ms| *ms != 0 && timeout.as_deref() == Some(ms.to_string().as_bytes()))
                .unwrap_or(0);
            // What the node would accept of the rest: all of it, or nothing.
            let metadata =
                Metadata::from_wire(expected.metadata.clone(), MAX, MAX).unwrap_or_else(|_| {
                    expected.metadata.clear();
                    Metadata::new()
                });
            if timeout_ms != 0 {
                let text = Bytes::from(timeout_ms.to_string());
                expected.metadata.insert(TIMEOUT_KEY.into(), text);
            }
            let ours = RequestFrame {
                kind: Some(2),
                call: request.call,
                network: &request.network,
                path: &request.path,
                payload: Measured::new(&payload),
                timeout_ms,
                metadata: &metadata,
            }
            .encode(MAX);
            let prost = encode_frame(Some(2), &expected, MAX);
            match (ours, prost) {
                (Ok(ours), Ok(prost)) if expected.metadata.len() > 1 || expected.call != 0 => {
                    // Map order is prost's (a hash map's), and the call id comes first in
                    // ours, last in prost's: compare what decodes.
                    assert_eq!(ours.len(), prost.len(), "request frame lengths differ");
                    let body = ours.slice(1 + crate::network::FRAME_HEADER_LEN..);
                    let decoded = wire::Request::decode(body).ok();
                    assert_eq!(decoded, Some(expected), "request frames differ");
                }
                (ours, prost) => assert_eq!(ours.ok(), prost.ok(), "request frames differ"),
            }
            check_concrete(&request.path, limits);
        }
        1 => {
            let ours = decode_response(Bytes::copy_from_slice(message));
            let Ok(response) = wire::Response::decode(message) else {
                assert!(ours.is_err(), "prost refuses what decode_response accepts");
                return;
            };
            assert_eq!(
                ours.ok().as_ref(),
                Some(&response),
                "decode_response and prost differ"
            );
            if let Some(wire::response::Result::Payload(bytes)) = &response.result {
                let value = Value::from_encoded(bytes.clone());
                let mut ours = BytesMut::new();
                let ours =
                    append_answer_frame(&mut ours, response.call, Measured::new(&value), MAX)
                        .map(|()| ours.freeze());
                let prost = encode_frame(None, &response, MAX);
                match (ours, prost) {
                    // The call id comes first in ours, last in prost's: compare what decodes.
                    (Ok(ours), Ok(prost)) if response.call != 0 => {
                        assert_eq!(ours.len(), prost.len(), "answer frame lengths differ");
                        let body = ours.slice(crate::network::FRAME_HEADER_LEN..);
                        let decoded = decode_response(body.clone()).ok();
                        assert_eq!(decoded.as_ref(), Some(&response), "answer frames differ");
                        let decoded = wire::Response::decode(body).ok();
                        assert_eq!(decoded.as_ref(), Some(&response), "answer frames differ");
                    }
                    (ours, prost) => assert_eq!(ours.ok(), prost.ok(), "response frames differ"),
                }
            }
        }
        _ => {
            check_decode_event(message);
            let Ok(event) = wire::Event::decode(message) else {
                return;
            };
            let mut expected = event.clone();
            // More payloads join a frame in the queue, not in `append_event_frame`.
            expected.more_payloads.clear();
            let metadata =
                Metadata::from_wire(event.metadata.clone(), MAX, MAX).unwrap_or_else(|_| {
                    expected.metadata.clear();
                    Metadata::new()
                });
            let outbound = OutboundEvent {
                network: event.network.as_str().into(),
                topic: event.topic.as_str().into(),
                payload: event.payload.clone(),
                subscription_ids: event.subscription_ids.iter().copied().collect(),
                retained: event.retained,
                metadata,
            };
            let mut ours = BytesMut::new();
            let ours =
                append_event_frame(&mut ours, &outbound.borrowed(), MAX).map(|()| ours.freeze());
            let prost = encode_frame(None, &expected, MAX);
            match (ours, prost) {
                // The same fields (the payload last, the map in its own order): the same
                // length, the same message.
                (Ok(ours), Ok(prost)) => {
                    assert_eq!(ours.len(), prost.len(), "event frame lengths differ");
                    let body = ours.slice(crate::network::FRAME_HEADER_LEN..);
                    let decoded = wire::Event::decode(body).ok();
                    assert_eq!(decoded, Some(expected), "event frames differ");
                }
                (ours, prost) => assert_eq!(ours.is_ok(), prost.is_ok(), "event frames differ"),
            }
            check_concrete(&event.topic, limits);
        }
    }
}

/// The frames of streaming calls: the `Request` header as `serve_stream` decodes it (an
/// absent `runar-timeout` is no deadline), and `StreamFrame`s (message, trailer, credit) as
/// both sides' readers decode them, cut out of a stream of frames; a message re-encodes to
/// prost's bytes. Input: `[which (1 byte)] bytes`: even, one header; odd, a stream of frames.
pub fn stream_frames(data: &[u8]) {
    use crate::network::{StreamItem, decode_for_fuzzing, decode_stream_frame};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok((_, path, _, _)) = decode_for_fuzzing(Bytes::copy_from_slice(rest)) {
            check_concrete(&path, PathLimits::default());
        }
        return;
    }
    let (frames, _) = frames_in_one_piece(rest, MAX);
    for frame in frames {
        let prost = wire::StreamFrame::decode(frame.clone()).ok();
        match decode_stream_frame(frame) {
            Ok(StreamItem::Message(value)) => {
                let ours = response_frame(Measured::new(&value), MAX).ok();
                let expected = prost.and_then(|p| encode_frame(None, &p, MAX).ok());
                assert_eq!(ours, expected, "message frames differ");
            }
            Ok(StreamItem::Credit(n)) => assert_eq!(
                prost.and_then(|p| p.kind),
                Some(wire::stream_frame::Kind::Credit(n)),
                "credit frames differ"
            ),
            Ok(StreamItem::End(end)) => {
                let Some(Some(wire::stream_frame::Kind::Trailer(trailer))) = prost.map(|p| p.kind)
                else {
                    panic!("a trailer that prost does not decode as one");
                };
                assert_eq!(
                    end.map(|e| (e.code(), e.message().to_owned())),
                    trailer
                        .error
                        .map(|s| (crate::error::Code::from_u32(s.code), s.message)),
                    "trailers differ"
                );
            }
            Err(_) => assert!(
                prost.is_none_or(|p| p.kind.is_none()),
                "a frame prost decodes was refused"
            ),
        }
    }
}

/// A concrete path from a peer, checked as requests and publishes are: the fast check and the
/// full parse must agree.
fn check_concrete(path: &str, limits: PathLimits) {
    let fast = split_concrete(path, limits).map(|(n, p)| (n.map(str::to_owned), p.to_owned()));
    let full = TopicPath::parse_concrete_within(path, limits)
        .map(|p| (p.network().map(str::to_owned), p.path().to_owned()));
    assert_eq!(
        fast, full,
        "split_concrete and parse_concrete disagree on {path:?}"
    );
}

/// Hello and control messages, with the capabilities they carry: decoded as on the control
/// stream, every announced action path and subscription pattern validated as the node
/// validates them, then applied to a node's registry by the node's own code
/// (`Node::apply_peer_offer`, see [`apply_offer`]). Input: `[which (1 byte)] message`.
pub fn control(data: &[u8]) {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let capabilities = if which % 2 == 0 {
        let Ok(hello) = wire::Hello::decode(message) else {
            return;
        };
        let _ = hello.node_id.parse::<NodeId>();
        hello.capabilities
    } else {
        match wire::Control::decode(message) {
            Ok(wire::Control {
                kind: Some(wire::control::Kind::Capabilities(capabilities)),
            }) => Some(capabilities),
            _ => None,
        }
    };
    let Some(capabilities) = capabilities else {
        return;
    };
    let limits = PathLimits::default();
    let mut trie = PathTrie::new();
    for service in &capabilities.services {
        for action in &service.actions {
            check_pattern(action, limits, &mut trie);
        }
        if !service.schema.is_empty() {
            let _ = prost_types::FileDescriptorProto::decode(service.schema.clone());
        }
    }
    for subscription in &capabilities.subscriptions {
        check_pattern(&subscription.pattern, limits, &mut trie);
    }
    check_removal(trie);
    apply_offer(capabilities);
}

/// A peer as the offer-applying code sees it, without a connection: its actions fail, its
/// events are counted.
struct FuzzPeer {
    link: PeerLink,
    events: Arc<dyn EventSink>,
}

/// Takes every event and counts it.
#[derive(Default)]
struct CountingSink(AtomicUsize);

impl EventSink for CountingSink {
    fn peer(&self) -> NodeId {
        NodeId::from_public_key(&[9; 32])
    }

    fn try_send(&self, _: &EventRef<'_>) -> Result<(), QueueRefusal> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn send(&self, _: OutboundEvent) -> futures::future::BoxFuture<'_, bool> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { true })
    }
}

impl OfferingPeer for FuzzPeer {
    fn peer_id(&self) -> NodeId {
        self.link.node
    }

    fn peer_link(&self) -> PeerLink {
        self.link
    }

    fn retired(&self) -> bool {
        false
    }

    fn event_sink(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    fn action_handler(&self, _: Arc<str>) -> ActionHandler {
        Arc::new(|_, _| Box::pin(async { Err(Error::unavailable("the fuzz peer serves nothing")) }))
    }
}

/// What a node holds from one peer's offer: (network, action path) and (network, the peer's
/// subscription id, pattern).
type Entries = (BTreeSet<(String, String)>, BTreeSet<(String, u64, String)>);

/// What a node should hold once `offer` is applied: its valid entries only (within the default
/// limits, without a `network:` prefix, actions without wildcards), and for a repeated subscription id the last one.
fn expected(offer: &Offer) -> Entries {
    let limits = PathLimits::default();
    let valid = |text: &str| {
        TopicPath::parse_within(text, limits)
            .ok()
            .filter(|p| p.network().is_none())
            .map(|p| p.path().to_owned())
    };
    let actions = offer
        .services
        .iter()
        .flat_map(|s| s.actions.iter().map(move |a| (s, a)))
        // Actions take templates, not wildcards, as local ones (`*` and `>` are refused).
        .filter_map(|(s, a)| Some((s.network.clone(), valid(a)?)))
        .filter(|(_, a)| !a.split('/').any(|seg| seg == "*" || seg == ">"))
        .collect();
    let by_id: BTreeMap<u64, &wire::SubscriptionDescriptor> =
        offer.subscriptions.iter().map(|s| (s.id, s)).collect();
    let subscriptions = by_id
        .values()
        .filter_map(|s| Some((s.network.clone(), s.id, valid(&s.pattern)?)))
        .collect();
    (actions, subscriptions)
}

/// What `node` holds from `link`. Actions are looked up in the networks `offer` names (the
/// fuzz node has no others and no actions of its own).
fn held(node: &Node, link: PeerLink, offer: &Offer) -> Entries {
    let registry = node.registry();
    let networks: BTreeSet<&str> = offer.services.iter().map(|s| s.network.as_str()).collect();
    let actions = networks
        .into_iter()
        .flat_map(|n| {
            registry
                .action_paths(n)
                .into_iter()
                .map(move |p| (n.to_owned(), p))
        })
        .collect();
    let subscriptions = registry
        .subscriptions_from(Origin::Remote(link))
        .into_iter()
        .map(|(network, sub)| {
            let remote_id = match &sub.sink {
                Sink::Remote { remote_id, .. } => *remote_id,
                Sink::Local(_) => panic!("a peer's offer made a local subscription"),
            };
            (
                network.to_string(),
                remote_id,
                sub.pattern.path().to_owned(),
            )
        })
        .collect();
    (actions, subscriptions)
}

/// Capabilities applied to a fresh node's registry as a peer's offer, by the node's own code
/// (validation within the limits, the diff against the link's previous offer, registry insert
/// and remove): the registry must then hold exactly the offer's valid entries; the same
/// version again changes nothing; an empty offer (a later version) removes them all through
/// the diff; the offer again, then the link's removal, leaves the registry empty.
pub fn apply_offer(capabilities: wire::Capabilities) {
    let node = match run_ready(Node::new(NodeConfig::new("fuzz", "default"))) {
        Ok(node) => node,
        Err(e) => panic!("cannot create the fuzz node: {e}"),
    };
    let link = PeerLink {
        node: NodeId::from_public_key(&[9; 32]),
        link: 1,
    };
    let peer = FuzzPeer {
        link,
        events: Arc::new(CountingSink::default()),
    };
    let offer = Offer {
        services: capabilities.services,
        subscriptions: capabilities.subscriptions,
    };
    let expected = expected(&offer);
    let nothing = Entries::default();
    let apply = |version: u64, offer: &Offer| {
        let offer = PeerOffer {
            version,
            offer: offer.clone(),
        };
        node.apply_peer_offer(&peer, offer);
    };

    apply(1, &offer);
    assert_eq!(held(&node, link, &offer), expected, "registered entries");
    apply(1, &Offer::default());
    assert_eq!(
        held(&node, link, &offer),
        expected,
        "an old version was applied"
    );
    apply(2, &Offer::default());
    assert_eq!(
        held(&node, link, &offer),
        nothing,
        "entries left after an empty offer"
    );
    apply(3, &offer);
    assert_eq!(
        held(&node, link, &offer),
        expected,
        "entries registered again"
    );
    node.remove_link(link);
    assert_eq!(
        held(&node, link, &offer),
        nothing,
        "entries left after the link's removal"
    );
}

/// A pattern from a peer: parsed within limits (which must agree with the limit check and the
/// unlimited parse), printed and parsed back to itself, and stored in `trie`.
fn check_pattern(text: &str, limits: PathLimits, trie: &mut PathTrie<usize>) {
    let within = TopicPath::parse_within(text, limits);
    match limits.check(text) {
        Ok(()) => assert_eq!(within, TopicPath::parse(text), "limits changed a parse"),
        Err(e) => assert_eq!(within, Err(e), "limit errors differ"),
    }
    if let Ok(pattern) = within {
        let again = TopicPath::parse(&pattern.to_string());
        assert_eq!(again.as_ref(), Ok(&pattern), "display does not parse back");
        trie.insert(pattern, trie.len());
    }
}

/// Removes everything from `trie` pattern by pattern; it must end empty.
fn check_removal(mut trie: PathTrie<usize>) {
    let patterns: Vec<TopicPath> = trie.iter().map(|(p, _)| p.clone()).collect();
    for pattern in &patterns {
        trie.remove_where(pattern, |_| true);
    }
    assert!(trie.is_empty(), "entries left after removing every pattern");
    assert_eq!(
        trie.iter().count(),
        0,
        "nodes left after removing every pattern"
    );
}

/// An inbound event, as `Node::deliver_inbound` sees it: decoded, its topic checked, routed
/// against a set of patterns (the trie must agree with matching each pattern on its own), its
/// subscription ids deduplicated, its payload decoded as typed messages, and its events queued
/// for a subscription as one run and handed out ([`queue_run`]). Input: an `Event`.
pub fn inbound_event(data: &[u8]) {
    let Ok(event) = wire::Event::decode(data) else {
        return;
    };
    let limits = PathLimits::default();
    let Ok((_, topic)) = split_concrete(&event.topic, limits) else {
        return;
    };
    route(&patterns(), topic);
    let mut ids = event.subscription_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() <= event.subscription_ids.len());
    // The metadata, as the node checks it: within the limits or refused, never more.
    let limits = NodeConfig::new("fuzz", "default");
    if let Ok(metadata) = Metadata::from_wire(
        event.metadata,
        limits.max_metadata_size,
        limits.max_metadata_entries,
    ) {
        assert!(metadata.len() <= limits.max_metadata_entries);
        assert!(metadata.size() <= limits.max_metadata_size);
    }
    value_as_messages(Value::from_encoded(event.payload));
    queue_run(data);
}

/// The frame as a local subscription's queue takes it from a peer: one run of as many of its
/// events as there is room for, handed out one by one: exactly those (the frame was checked
/// when decoded, so a run never ends short), and nothing counted as queued once they are out.
fn queue_run(data: &[u8]) {
    const ROOM: usize = 7;
    let Ok(event) = frames::decode_event(Bytes::copy_from_slice(data)) else {
        return;
    };
    let total = event.more.len().saturating_add(1);
    let (queue, mut events) = subscription_queue(ROOM);
    let run = EventRun {
        topic: "fuzz".into(),
        publisher: Caller::Local,
        retained: event.retained,
        metadata: Metadata::default(),
        _held: None,
        scope: None,
        first: Some(event.payload),
        more: event.more,
        left: total,
    };
    let queued = queue.try_send_run(run).unwrap_or(0);
    assert_eq!(queued, total.min(ROOM));
    assert_eq!(queue.queued(), queued);
    let mut cx = Context::from_waker(Waker::noop());
    let mut handed = 0;
    while let Poll::Ready(Some(_)) = pin!(events.recv()).poll(&mut cx) {
        handed += 1;
    }
    assert_eq!(handed, queued);
    assert_eq!(queue.queued(), 0);
}

fn patterns() -> PathTrie<usize> {
    let mut trie = PathTrie::new();
    for (i, p) in PATTERNS.iter().enumerate() {
        if let Ok(p) = TopicPath::parse(p) {
            trie.insert(p, i);
        }
    }
    trie
}

/// Routes the concrete `topic` through `trie`; the trie must agree with each pattern's own
/// `matches`, and its best match must be one of the matches.
fn route(trie: &PathTrie<usize>, topic: &str) {
    let segments: Vec<&str> = topic.split('/').collect();
    let mut found = Vec::new();
    trie.find_all(&segments, |e| found.push(e));
    let mut by_trie: Vec<usize> = found.iter().map(|(_, i)| *i).collect();
    by_trie.sort_unstable();
    let mut by_pattern: Vec<usize> = trie
        .iter()
        .filter(|(p, _)| p.matches(&segments))
        .map(|(_, i)| *i)
        .collect();
    by_pattern.sort_unstable();
    assert_eq!(
        by_trie, by_pattern,
        "trie and patterns disagree on {topic:?}"
    );
    match trie.find_best(&segments) {
        Some((pattern, i)) => {
            assert!(by_trie.contains(i), "best match {pattern} is not a match");
            assert!(pattern.params(&segments).is_some());
        }
        None => assert!(
            by_trie.is_empty(),
            "matches but no best match for {topic:?}"
        ),
    }
}

/// A discovery datagram from anyone on the LAN (no key needed): the receiver's cheap checks,
/// then the signature, then the address filter. Input: the datagram.
pub fn discovery_packet(data: &[u8]) {
    static CHECKER: OnceLock<Checker> = OnceLock::new();
    let checker = CHECKER.get_or_init(|| Checker {
        network_id: NETWORK_ID.into(),
        own: NodeId::from_public_key(&[7; 32]),
        max_size: 1400,
    });
    let Ok(parsed) = checker.parse(data) else {
        return;
    };
    assert!(parsed.addresses.len() <= packet::MAX_ADDRESSES);
    let Ok(verified) = parsed.verify() else {
        return;
    };
    for address in &verified.addresses {
        let _ = packet::usable_from(address, std::net::Ipv4Addr::LOCALHOST.into());
        let _ = packet::usable_from(address, std::net::Ipv4Addr::new(10, 0, 0, 1).into());
    }
}

/// Topic paths: a pattern and a concrete path, parsed within the default limits (and within
/// tiny ones), printed and parsed back, and matched: the pattern's own `matches`, the trie
/// and the captured parameters must agree. Input: `pattern \n concrete`.
pub fn topic_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, concrete) = text.split_once('\n').unwrap_or((text, ""));
    let tiny = PathLimits {
        max_len: 16,
        max_depth: 3,
    };
    for limits in [PathLimits::default(), tiny] {
        let mut trie = patterns();
        check_pattern(pattern, limits, &mut trie);
        check_concrete(concrete, limits);
        if let Ok((_, topic)) = split_concrete(concrete, limits) {
            route(&trie, topic);
            if let Ok(p) = TopicPath::parse_within(pattern, limits) {
                let segments: Vec<&str> = topic.split('/').collect();
                if let Some(params) = p.params(&segments) {
                    for (name, value) in params.iter() {
                        assert!(segments.contains(&value), "{name}={value} not in {topic}");
                    }
                }
            }
        }
        check_removal(trie);
    }
}

/// `Value` decoding: bytes from a peer decoded into the typed messages a handler may ask for
/// (scalars, strings, bytes, the wire messages, a descriptor), and what decodes re-encodes and
/// decodes to the same message. Input: the encoded payload.
pub fn value_decode(data: &[u8]) {
    value_as_messages(Value::from_encoded(Bytes::copy_from_slice(data)));
}

fn value_as_messages(value: Value) {
    fn round_trip<T: crate::value::Payload + PartialEq + std::fmt::Debug>(value: &Value) {
        let Ok(message) = value.to_typed::<T>() else {
            return;
        };
        let again = Value::new(message.clone());
        assert_eq!(again.encoded_len(), again.to_bytes().len());
        let decoded = Value::from_encoded(again.to_bytes()).into_typed::<T>();
        assert_eq!(
            decoded.as_ref().ok(),
            Some(&message),
            "re-encoding changed it"
        );
    }
    round_trip::<u64>(&value);
    round_trip::<i32>(&value);
    round_trip::<bool>(&value);
    round_trip::<String>(&value);
    round_trip::<Vec<u8>>(&value);
    round_trip::<()>(&value);
    round_trip::<wire::Capabilities>(&value);
    round_trip::<wire::Control>(&value);
    // Floats may be NaN, which is not equal to itself: decode only.
    let _ = value.to_typed::<f64>();
    let _ = value.to_typed::<prost_types::Struct>();
    let _ = value.to_typed::<prost_types::FileDescriptorProto>();
}

/// The schema `sealed_fields` reads messages with: `fuzz.Record { string id = 1; string user = 2
/// [(runar.label) = "user"]; Record inner = 3; string other = 4 [(runar.label) = "other"]; }`
/// (recursive, so a peer's nesting is bounded only by `MAX_NESTING`).
#[derive(Clone, Copy)]
struct FuzzRecord;

impl crate::seal::MessageSchema for FuzzRecord {
    fn full_name(&self) -> &str {
        "fuzz.Record"
    }
    fn field(&self, number: u32) -> Option<crate::seal::FieldSchema<Self>> {
        use crate::seal::FieldSchema;
        match number {
            1 => Some(FieldSchema::new(None, None)),
            2 => Some(FieldSchema::new(Some("user".into()), None)),
            3 => Some(FieldSchema::new(None, Some(FuzzRecord))),
            4 => Some(FieldSchema::new(Some("other".into()), None)),
            _ => None,
        }
    }
}

/// A node's sealing that holds `user` (not `other`) and knows its own sealing key as a
/// sender's, built once.
fn fuzz_seal() -> &'static crate::seal::FieldSeal {
    use crate::seal::{FieldSeal, KeyPair, Keyring, NodeSeal};
    static SEAL: OnceLock<FieldSeal> = OnceLock::new();
    SEAL.get_or_init(|| {
        let node = NodeId::from_public_key(&[7; 32]);
        let key = KeyPair::derive(b"fuzz sealing key");
        let ring = Keyring::new();
        ring.hold("user", 1, &KeyPair::derive(b"fuzz user label"));
        ring.seal_to("other", 1, KeyPair::derive(b"fuzz other label").public());
        ring.trust_node(node, key.public());
        FieldSeal::new(Some(Arc::new(NodeSeal::new(node, key, Arc::new(ring)))))
    })
}

/// Sealed fields from a peer: `data` as an encoded `fuzz.Record` whose labelled fields (nested
/// too) `FieldSeal::open` opens (the CLI's and the gateway's path), and as one envelope
/// (`Envelope::parse`). Cross-check: a record with `data` as its `user` field, sealed, opens back
/// to the same bytes.
pub fn sealed_fields(data: &[u8]) {
    let seal = fuzz_seal();
    let _ = seal.open(&FuzzRecord, data);
    let _ = crate::seal::parses_as_envelope(data);
    let mut record = Vec::new();
    prost::encoding::bytes::encode(1, &b"r1".to_vec(), &mut record);
    prost::encoding::bytes::encode(2, &data.to_vec(), &mut record);
    let Ok(sealed) = seal.seal(&FuzzRecord, &record) else {
        panic!("a node holding `user` could not seal it");
    };
    assert_ne!(sealed, record, "the user field went out in clear");
    match seal.open(&FuzzRecord, &sealed) {
        Ok(opened) => {
            assert_eq!(opened.bytes, record, "sealed then opened is not the record");
            assert!(opened.sealed.is_empty(), "{:?}", opened.sealed);
        }
        Err(e) => panic!("its own sealed record did not open: {e}"),
    }
}

/// The seed corpora, by target: small valid and near-valid inputs built with the real encoders.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let limits_deep = format!("{}x", "a/".repeat(40));
    let mut out = Vec::new();

    // framing: max byte, chunk sizes, then a stream of frames.
    let mut stream = Vec::new();
    for body in [&b""[..], b"x", b"hello frames", &[0u8; 40]] {
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(body);
    }
    let mut framing = Vec::new();
    for (max, sizes) in [(255u8, &[200u8][..]), (16, &[1, 3, 2]), (2, &[5])] {
        let mut seed = vec![max, sizes.len() as u8];
        seed.extend_from_slice(sizes);
        seed.extend_from_slice(&stream);
        framing.push(seed.clone());
        seed.truncate(seed.len() - 3);
        framing.push(seed);
    }
    out.push(("framing", framing));

    // request_frames: a selector byte, then a Request, Response or Event.
    let request = wire::Request {
        call: 0,
        cancel: false,
        network: "default".into(),
        path: "math/add".into(),
        payload: Value::new(41u64).to_bytes(),
        payload_type: String::new(),
        metadata: [
            (TIMEOUT_KEY.to_owned(), Bytes::from_static(b"5000")),
            ("tenant".to_owned(), Bytes::from_static(b"acme")),
            ("trace-bin".to_owned(), Bytes::from_static(&[0, 1, 255])),
        ]
        .into_iter()
        .collect(),
    };
    let error = wire::Response {
        call: 0,
        result: Some(wire::response::Result::Error(wire::ErrorStatus {
            code: 5,
            message: "no item 7".into(),
        })),
    };
    let ok = wire::Response {
        call: 0,
        result: Some(wire::response::Result::Payload(
            Value::new(String::from("ok")).to_bytes(),
        )),
    };
    let event = wire::Event {
        network: "default".into(),
        topic: "math/computed".into(),
        payload: Value::new(1.5f64).to_bytes(),
        subscription_ids: vec![1, 2, 300],
        retained: true,
        metadata: [("request-id".to_owned(), Bytes::from_static(b"42"))]
            .into_iter()
            .collect(),
        more_payloads: vec![Value::new(2.5f64).to_bytes(), Bytes::new()],
    };
    let bad_path = wire::Request {
        path: "math//add".into(),
        ..request.clone()
    };
    // On a call stream: a call, its cancellation, its answer.
    let on_call_stream = wire::Request {
        call: 300,
        ..request.clone()
    };
    let cancel = wire::Request {
        call: 300,
        cancel: true,
        ..wire::Request::default()
    };
    let answer = wire::Response {
        call: 300,
        ..ok.clone()
    };
    let with_selector = |which: u8, message: &dyn Fn() -> Vec<u8>| {
        let mut seed = vec![which];
        seed.extend(message());
        seed
    };
    out.push((
        "request_frames",
        vec![
            with_selector(0, &|| request.encode_to_vec()),
            with_selector(0, &|| bad_path.encode_to_vec()),
            with_selector(1, &|| ok.encode_to_vec()),
            with_selector(1, &|| error.encode_to_vec()),
            with_selector(2, &|| event.encode_to_vec()),
            with_selector(0, &|| on_call_stream.encode_to_vec()),
            with_selector(0, &|| cancel.encode_to_vec()),
            with_selector(1, &|| answer.encode_to_vec()),
        ],
    ));

    // stream_frames: a header (even selector) or a stream of StreamFrames (odd).
    let mut header = request.clone();
    header.payload = Bytes::new();
    let mut no_deadline = header.clone();
    no_deadline.metadata.remove(TIMEOUT_KEY);
    let stream_frame = |kind: wire::stream_frame::Kind| {
        let frame = wire::StreamFrame { kind: Some(kind) }.encode_to_vec();
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend(frame);
        out
    };
    let mut frames = vec![1u8];
    frames.extend(stream_frame(wire::stream_frame::Kind::Credit(32)));
    frames.extend(stream_frame(wire::stream_frame::Kind::Message(
        Value::new(7u64).to_bytes(),
    )));
    frames.extend(stream_frame(
        wire::stream_frame::Kind::Message(Bytes::new()),
    ));
    frames.extend(stream_frame(wire::stream_frame::Kind::Trailer(
        wire::Trailer {
            error: Some(wire::ErrorStatus {
                code: 5,
                message: "no item 7".into(),
            }),
        },
    )));
    let mut clean_end = vec![1u8];
    clean_end.extend(stream_frame(wire::stream_frame::Kind::Trailer(
        wire::Trailer::default(),
    )));
    out.push((
        "stream_frames",
        vec![
            with_selector(0, &|| header.encode_to_vec()),
            with_selector(0, &|| no_deadline.encode_to_vec()),
            frames,
            clean_end,
        ],
    ));

    // control: hello (even selector) or control message (odd).
    let capabilities = wire::Capabilities {
        version: 3,
        services: vec![wire::ServiceDescriptor {
            path: "math".into(),
            name: "Math".into(),
            version: "1.0.0".into(),
            description: "adds".into(),
            network: "default".into(),
            actions: vec![
                "math/add".into(),
                "math/items/{id}".into(),
                limits_deep.clone(),
            ],
            schema: prost_types::FileDescriptorProto {
                name: Some("math.proto".into()),
                package: Some("math".into()),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
        }],
        subscriptions: vec![
            wire::SubscriptionDescriptor {
                id: 1,
                network: "default".into(),
                pattern: "math/>".into(),
                group: "stats".into(),
                include_past: true,
            },
            wire::SubscriptionDescriptor {
                id: 2,
                network: "default".into(),
                pattern: "a/*/{x}/>".into(),
                group: String::new(),
                include_past: false,
            },
        ],
    };
    let hello = wire::Hello {
        protocol_version: 2,
        node_id: NodeId::from_public_key(&[1; 32]).to_string(),
        node_name: "seed".into(),
        network_id: NETWORK_ID.into(),
        capabilities: Some(capabilities.clone()),
        instance: 42,
        network: "default".into(),
        sealing_key: vec![9; 32].into(),
    };
    let controls = [
        wire::control::Kind::Capabilities(capabilities.clone()),
        wire::control::Kind::Ping(7),
        wire::control::Kind::Goodbye(wire::Goodbye {
            reason: "bye".into(),
            events: 7,
        }),
        wire::control::Kind::CapabilitiesAck(3),
    ];
    // Capabilities that exercise the registry: repeated actions and subscription ids, a path
    // naming a network, invalid and over-deep paths, a second network, wildcards.
    let applied = wire::Capabilities {
        version: 9,
        services: vec![
            wire::ServiceDescriptor {
                path: "math".into(),
                network: "default".into(),
                actions: vec![
                    "math/add".into(),
                    "math/add".into(),
                    "math/{op}/x".into(),
                    "other:math/sub".into(),
                    "math//bad".into(),
                    ">".into(),
                    limits_deep.clone(),
                ],
                ..Default::default()
            },
            wire::ServiceDescriptor {
                path: "math".into(),
                network: "other".into(),
                actions: vec!["math/add".into(), "math/*".into()],
                ..Default::default()
            },
        ],
        subscriptions: vec![
            wire::SubscriptionDescriptor {
                id: 1,
                network: "default".into(),
                pattern: "math/>".into(),
                ..Default::default()
            },
            wire::SubscriptionDescriptor {
                id: 1,
                network: "default".into(),
                pattern: "math/*/done".into(),
                include_past: true,
                ..Default::default()
            },
            wire::SubscriptionDescriptor {
                id: 2,
                network: "other".into(),
                pattern: "net:a/b".into(),
                ..Default::default()
            },
            wire::SubscriptionDescriptor {
                id: 3,
                network: "other".into(),
                pattern: "items/{id}".into(),
                group: "g".into(),
                ..Default::default()
            },
        ],
    };
    let mut control = vec![with_selector(0, &|| hello.encode_to_vec())];
    for kind in controls {
        let message = wire::Control { kind: Some(kind) };
        control.push(with_selector(1, &|| message.encode_to_vec()));
    }
    let message = wire::Control {
        kind: Some(wire::control::Kind::Capabilities(applied)),
    };
    control.push(with_selector(1, &|| message.encode_to_vec()));
    out.push(("control", control));

    // inbound_event: Events.
    let ids_repeated = wire::Event {
        topic: "items/7/parts/9".into(),
        subscription_ids: vec![5; 20],
        ..event.clone()
    };
    out.push((
        "inbound_event",
        vec![event.encode_to_vec(), ids_repeated.encode_to_vec()],
    ));

    // discovery_packet: signed datagrams from the real encoder.
    let mut discovery = Vec::new();
    if let Ok(keypair) = crate::identity::NodeKeypair::generate() {
        let addresses: Vec<std::net::SocketAddr> = ["127.0.0.1:4000", "[::1]:4001", "10.1.2.3:9"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        for (kind, network_id) in [
            (packet::Kind::Announce, NETWORK_ID),
            (packet::Kind::Goodbye, NETWORK_ID),
            (packet::Kind::Announce, "other-net"),
        ] {
            let outgoing = packet::Outgoing {
                keypair: &keypair,
                network_id,
                kind,
                addresses: &addresses,
                instance: 1,
                sequence: 2,
                timestamp_ms: 3,
            };
            discovery.push(outgoing.encode(1400));
        }
    }
    out.push(("discovery_packet", discovery));

    // topic_path: pattern, newline, concrete path.
    let paths = [
        "math/>\nmath/add",
        "items/{id}/parts/{part}\nitems/7/parts/9",
        "net:a/*/c\nnet:a/b/c",
        ">\nx",
        "a//b\na/b",
        "a/>/b\na/b/c",
        "{x}\nq",
    ];
    let mut topic = paths
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect::<Vec<_>>();
    topic.push(format!("{limits_deep}\n{limits_deep}").into_bytes());
    out.push(("topic_path", topic));

    // value_decode: encoded payloads.
    out.push((
        "value_decode",
        vec![
            Value::new(41u64).to_bytes().to_vec(),
            Value::new(String::from("text")).to_bytes().to_vec(),
            Value::new(-1.5f64).to_bytes().to_vec(),
            capabilities.encode_to_vec(),
            prost_types::Struct::default().encode_to_vec(),
            vec![0x0a, 0x80],
        ],
    ));

    // sealed_fields: records in clear, sealed (`user` opens, `other` stays sealed), nested.
    let field = |number: u32, value: &[u8]| {
        let mut out = Vec::new();
        prost::encoding::bytes::encode(number, &value.to_vec(), &mut out);
        out
    };
    let plain = [field(1, b"r1"), field(2, b"Ada")].concat();
    let outer = [field(1, b"o"), field(3, &plain), field(4, b"x")].concat();
    let seal = fuzz_seal();
    let mut sealed_records = vec![plain.clone(), outer.clone()];
    sealed_records.extend(seal.seal(&FuzzRecord, &plain).ok());
    sealed_records.extend(seal.seal(&FuzzRecord, &outer).ok());
    out.push(("sealed_fields", sealed_records));
    out
}

/// Inputs that once crashed a target, kept as regression tests: (target, input).
pub const REGRESSIONS: &[(&str, &[u8])] = &[
    // A decoded request carrying its own `payload_type`: the oracle compared it with a frame
    // the encoder names from the payload (found by the CI fuzz pass after `payload_type` landed).
    (
        "request_frames",
        b"\x00\x2a\x12\x0d\x08\x05\x1a\x02n \x08o iem \x00\x2a\x00\x0b",
    ),
];

/// Runs `target`'s function on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "framing" => framing(data),
        "request_frames" => request_frames(data),
        "stream_frames" => stream_frames(data),
        "control" => control(data),
        "inbound_event" => inbound_event(data),
        "discovery_packet" => discovery_packet(data),
        "topic_path" => topic_path(data),
        "value_decode" => value_decode(data),
        "sealed_fields" => sealed_fields(data),
        other => panic!("no fuzz target {other}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_its_seeds_and_regressions() {
        let seeds = seeds();
        assert_eq!(seeds.len(), 9);
        for (target, inputs) in &seeds {
            assert!(!inputs.is_empty(), "{target}");
            for input in inputs {
                run(target, input);
                // Near-valid: every prefix of a seed.
                for end in 0..input.len().min(64) {
                    run(target, &input[..end]);
                }
            }
        }
        for (target, input) in REGRESSIONS {
            run(target, input);
        }
    }

    /// Writes the seed corpora to `fuzz/corpus/<target>/`:
    /// `cargo test -p runar-runtime --lib fuzzing::tests::write_seed_corpora -- --ignored`.
    #[test]
    #[ignore = "writes files into fuzz/corpus"]
    fn write_seed_corpora() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, inputs) in seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, input) in inputs.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
            }
        }
    }
}
