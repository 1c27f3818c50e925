//! A peer's outgoing events: the queue publishers put them in, already encoded as the frames
//! the peer will read, and the writer that sends those frames on the event stream.
//!
//! A publisher encodes its event's frame into the queue's buffer as it queues it (no event
//! struct, no copy of the topic, no channel item per event). An event that follows one of the
//! same topic for the same subscription, while that one is still queued, joins its frame as
//! one more payload (`Event.more_payloads`): when a publisher outpaces the connection, the
//! peer receives, routes and checks one header for many events. Nothing waits to be joined: the
//! writer takes whatever is queued as soon as it can write.
//!
//! The queue is bounded in events and in bytes (counting the write in flight); a full queue
//! refuses an event (the publisher drops it, counted, or waits for room as its options say).
//! A write that makes no progress for the slow-consumer timeout closes the connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use quinn::{Connection, SendStream};
use tokio::sync::{Notify, oneshot};

use super::TransportError;
use super::frames::{append_event_frame, append_more_payload};
use super::framing::FRAME_HEADER_LEN;
use super::interface::{
    EventRef, EventSink, OutboundEvent, PeerEventCounters, QueueRefusal, SubscriptionIds,
};
use super::log_limit::warn_limited;
use super::peer::{KIND_EVENTS, codes};
use crate::identity::NodeId;
use crate::lock::lock;

/// The most bytes of queued frames one write takes (the slow-consumer timeout applies to each
/// write).
const EVENT_BATCH_BYTES: usize = 64 * 1024;

/// The most buffer capacity a peer's queue keeps once it is empty (a big event can grow it).
const FRAMES_KEPT: usize = 4 * EVENT_BATCH_BYTES;

/// The first block of a queue that was empty: a new block starts when the open one lacks room
/// for the next frame, twice as large as the last while the queue is not empty, up to
/// [`EVENT_BATCH_BYTES`]. Blocks are sealed whole, so a queued frame is never copied to make
/// room, and a peer that gets an event now and then keeps a small one.
const FIRST_BLOCK: usize = 4 * 1024;

/// The room a frame is given beyond its payload, for its topic, network and ids (a frame
/// larger than the room left grows its block, copying at most that block).
const FRAME_SLACK: usize = 1024;

/// The limits of a peer's outgoing events, and where their fate is counted.
#[derive(Clone)]
pub(crate) struct EventFlow {
    /// The most events queued for one peer (not counting the write in flight).
    pub(crate) queue_capacity: usize,
    /// The most bytes of events queued for one peer (their frames, counting the write in
    /// flight).
    pub(crate) queue_bytes: usize,
    /// How long a write to the peer's event stream may make no progress before the peer is
    /// disconnected as a slow consumer.
    pub(crate) slow_consumer_timeout: Duration,
    /// Shared by every peer of the node.
    pub(crate) counters: Arc<PeerEventCounters>,
}

/// A peer's event queue: the frames of the events queued for it, and what its writer needs to
/// know of them.
pub(crate) struct EventQueue {
    peer: NodeId,
    state: Mutex<Pending>,
    /// Wakes the writer: something was queued into an empty queue (an event, a flush).
    queued: Notify,
    /// Wakes publishers waiting for room: the writer wrote, or the queue closed.
    room: Notify,
    max_events: usize,
    max_bytes: usize,
    max_message_size: usize,
    /// The node-wide counts, and the peer's own.
    counters: Arc<PeerEventCounters>,
    own: Arc<PeerEventCounters>,
}

/// What is queued.
#[derive(Default)]
struct Pending {
    /// Blocks of frames sealed for lack of room, oldest first: each is taken whole by a
    /// write. A frame never spans two blocks.
    sealed: VecDeque<BytesMut>,
    /// The open block: the frames queued after the sealed ones, back to back.
    frames: BytesMut,
    /// The capacity the open block was made with (see [`FIRST_BLOCK`]).
    block: usize,
    /// Each of those frames (the sealed blocks' first), in order.
    sizes: VecDeque<FrameSize>,
    /// The last frame of `frames`, while a following event may join it.
    open: Option<OpenFrame>,
    /// Events queued (taken by the writer, they no longer count).
    events: usize,
    /// Bytes of frames queued, counting the write in flight.
    bytes: usize,
    /// Frames queued since the connection was admitted (for flushes).
    frames_queued: u64,
    /// Flushes waiting: each is answered once the frames queued before it are written.
    flushes: Vec<(u64, oneshot::Sender<u64>)>,
    /// The writer is gone: nothing more is queued.
    closed: bool,
}

/// One queued frame.
#[derive(Clone, Copy)]
struct FrameSize {
    /// Its bytes, header included.
    len: usize,
    /// The events it carries.
    events: usize,
    /// The deliveries those events make (one per subscription named).
    copies: u64,
}

/// The last queued frame, while a following event may join it: one for exactly one
/// subscription, with no metadata and not retained (what a stream of events published to one
/// subscriber looks like). It starts where the last of `Pending::sizes` does.
struct OpenFrame {
    /// Where its network and topic lie, from the frame's start.
    network: std::ops::Range<usize>,
    topic: std::ops::Range<usize>,
    /// The subscription it is for.
    id: u64,
}

impl OpenFrame {
    /// `frame`, just encoded from `event`, if events may join it.
    fn of(frame: &[u8], event: &EventRef<'_>) -> Option<OpenFrame> {
        let SubscriptionIds::One(id) = *event.subscription_ids else {
            return None;
        };
        if event.retained || !event.metadata.is_empty() {
            return None;
        }
        let (network, topic) = (event.network.as_bytes(), event.topic.as_bytes());
        // The encoder writes the network's and the topic's fields first; find them back.
        let network_at = find(frame, FRAME_HEADER_LEN, network)?;
        let topic_at = find(frame, network_at.end, topic)?;
        Some(OpenFrame {
            network: network_at,
            topic: topic_at,
            id,
        })
    }

    /// Whether `event` may join `frame` (this one): the same network, topic and subscription,
    /// no metadata, not retained.
    fn joins(&self, frame: &[u8], event: &EventRef<'_>) -> bool {
        *event.subscription_ids == SubscriptionIds::One(self.id)
            && !event.retained
            && event.metadata.is_empty()
            && frame.get(self.topic.clone()) == Some(event.topic.as_bytes())
            && frame.get(self.network.clone()) == Some(event.network.as_bytes())
    }
}

impl Pending {
    /// Where the last queued frame starts in `frames` (the open block).
    fn last_frame_start(&self) -> Option<usize> {
        self.frames.len().checked_sub(self.sizes.back()?.len)
    }

    /// Makes room for a frame carrying `payload` bytes in the open block: when there is not
    /// that much (and [`FRAME_SLACK`]) left, a block holding frames is sealed (taken whole
    /// later) and a new one begins.
    fn room_for(&mut self, payload: usize) {
        let needed = payload.saturating_add(FRAME_SLACK);
        if self.frames.capacity().saturating_sub(self.frames.len()) >= needed {
            return;
        }
        let idle = self.frames.is_empty() && self.sealed.is_empty();
        if !self.frames.is_empty() {
            let full = std::mem::take(&mut self.frames);
            self.sealed.push_back(full);
            self.open = None;
        }
        self.block = if idle {
            FIRST_BLOCK
        } else {
            self.block.saturating_mul(2).min(EVENT_BATCH_BYTES)
        };
        self.frames = BytesMut::with_capacity(self.block.max(needed));
    }
}

/// Where `value`, written as a length-delimited field (or omitted when empty) at `from` in
/// `frames`, lies.
fn find(frames: &[u8], from: usize, value: &[u8]) -> Option<std::ops::Range<usize>> {
    if value.is_empty() {
        return Some(from..from);
    }
    let header = 1 + prost::encoding::encoded_len_varint(value.len() as u64);
    let start = from.checked_add(header)?;
    let end = start.checked_add(value.len())?;
    (frames.get(start..end) == Some(value)).then_some(start..end)
}

/// What the writer took for one write.
struct Taken {
    chunk: bytes::Bytes,
    frames: u64,
    events: usize,
    copies: u64,
}

impl EventQueue {
    pub(crate) fn new(
        peer: NodeId,
        flow: &EventFlow,
        max_message_size: usize,
        own: Arc<PeerEventCounters>,
    ) -> EventQueue {
        EventQueue {
            peer,
            state: Mutex::new(Pending::default()),
            queued: Notify::new(),
            room: Notify::new(),
            max_events: flow.queue_capacity.max(1),
            max_bytes: flow.queue_bytes.max(1),
            max_message_size,
            counters: flow.counters.clone(),
            own,
        }
    }

    /// Waits until every event queued so far is written (or its write failed), and answers
    /// the number of event frames written on the connection by then. `None` once the writer
    /// is gone (the connection closed).
    pub(crate) async fn flush(&self) -> Option<u64> {
        let (done, written) = oneshot::channel();
        {
            let mut pending = lock(&self.state);
            if pending.closed {
                return None;
            }
            let target = pending.frames_queued;
            pending.flushes.push((target, done));
        }
        self.queued.notify_one();
        written.await.ok()
    }

    /// Counts `copies` deliveries as dropped.
    fn dropped(&self, copies: u64) {
        self.counters.dropped.fetch_add(copies, Ordering::Relaxed);
        self.own.dropped.fetch_add(copies, Ordering::Relaxed);
    }

    /// Takes the frames for one write: whole frames, up to [`EVENT_BATCH_BYTES`] (at least
    /// one). `None` when nothing is queued.
    fn take(pending: &mut Pending) -> Option<Taken> {
        let mut taken = Taken {
            chunk: bytes::Bytes::new(),
            frames: 0,
            events: 0,
            copies: 0,
        };
        if let Some(block) = pending.sealed.pop_front() {
            // A sealed block goes whole: its frames are the first queued.
            let mut len = 0usize;
            while len < block.len() {
                let Some(size) = pending.sizes.pop_front() else {
                    break;
                };
                len = len.saturating_add(size.len);
                taken.frames += 1;
                taken.events = taken.events.saturating_add(size.events);
                taken.copies = taken.copies.saturating_add(size.copies);
            }
            pending.events = pending.events.saturating_sub(taken.events);
            taken.chunk = block.freeze();
            return Some(taken);
        }
        let mut len = 0usize;
        while let Some(size) = pending.sizes.front() {
            if taken.frames > 0 && len.saturating_add(size.len) > EVENT_BATCH_BYTES {
                break;
            }
            len = len.saturating_add(size.len);
            taken.frames += 1;
            taken.events = taken.events.saturating_add(size.events);
            taken.copies = taken.copies.saturating_add(size.copies);
            pending.sizes.pop_front();
        }
        if taken.frames == 0 {
            return None;
        }
        let len = len.min(pending.frames.len());
        taken.chunk = pending.frames.split_to(len).freeze();
        pending.events = pending.events.saturating_sub(taken.events);
        // After a burst, the buffer is not kept at its largest: the writes in flight hold it
        // until they are sent, then it is freed.
        if pending.frames.is_empty() && pending.frames.capacity() > FRAMES_KEPT {
            pending.frames = BytesMut::new();
        }
        // The open frame is the last one: still open while it is queued.
        if pending.sizes.is_empty() {
            pending.open = None;
        }
        Some(taken)
    }

    /// The writer finished with `taken` (written or not): its bytes are free again, and the
    /// flushes it completes are answered.
    fn done(&self, taken: &Taken, frames_taken: u64, frames_written: u64) {
        let answered = {
            let mut pending = lock(&self.state);
            pending.bytes = pending.bytes.saturating_sub(taken.chunk.len());
            take_answered(&mut pending.flushes, frames_taken)
        };
        for flush in answered {
            let _ = flush.send(frames_written);
        }
        self.room.notify_waiters();
    }
}

/// The flushes whose frames have all been taken by `frames_taken`.
fn take_answered(
    flushes: &mut Vec<(u64, oneshot::Sender<u64>)>,
    frames_taken: u64,
) -> Vec<oneshot::Sender<u64>> {
    if flushes.is_empty() {
        return Vec::new();
    }
    let (answered, waiting): (Vec<_>, Vec<_>) = std::mem::take(flushes)
        .into_iter()
        .partition(|(target, _)| *target <= frames_taken);
    *flushes = waiting;
    answered.into_iter().map(|(_, done)| done).collect()
}

impl EventSink for EventQueue {
    fn peer(&self) -> NodeId {
        self.peer
    }

    fn try_send(&self, event: &EventRef<'_>) -> Result<(), QueueRefusal> {
        let max = self.max_message_size;
        let mut pending = lock(&self.state);
        if pending.closed {
            return Err(QueueRefusal::Closed);
        }
        if pending.events >= self.max_events {
            return Err(QueueRefusal::Full);
        }
        let was_empty = pending.frames.is_empty() && pending.sealed.is_empty();
        let p = &mut *pending;
        if let (Some(open), Some(start)) = (&p.open, p.last_frame_start())
            && open.joins(p.frames.get(start..).unwrap_or_default(), event)
        {
            let more = FRAME_HEADER_LEN.saturating_add(event.payload.len());
            if p.bytes.saturating_add(more) > self.max_bytes {
                return Err(QueueRefusal::Full);
            }
            // Joined only where it fits: else it starts a frame of its own (in a new block).
            let fits = p.frames.capacity().saturating_sub(p.frames.len()) >= more;
            if let Some(added) = fits
                .then(|| append_more_payload(&mut p.frames, start, &event.payload, max).ok())
                .flatten()
            {
                if let Some(last) = p.sizes.back_mut() {
                    last.len = last.len.saturating_add(added);
                    last.events = last.events.saturating_add(1);
                    last.copies = last.copies.saturating_add(1);
                }
                p.events += 1;
                p.bytes = p.bytes.saturating_add(added);
                return Ok(());
            }
            // The frame is at the maximum message size: the event starts a new one.
        }
        p.room_for(event.payload.len());
        let start = p.frames.len();
        match append_event_frame(&mut p.frames, event, max) {
            Ok(()) => {}
            Err(e) => {
                drop(pending);
                self.dropped(event.copies());
                warn_limited!(topic = %event.topic, error = %e, "event not sent");
                return Ok(());
            }
        }
        let len = p.frames.len().saturating_sub(start);
        // An event larger than the whole budget is still queued, alone: when nothing else is
        // queued or being written.
        if p.bytes > 0 && p.bytes.saturating_add(len) > self.max_bytes {
            p.frames.truncate(start);
            return Err(QueueRefusal::Full);
        }
        p.open = OpenFrame::of(p.frames.get(start..).unwrap_or_default(), event);
        p.sizes.push_back(FrameSize {
            len,
            events: 1,
            copies: event.copies(),
        });
        p.events += 1;
        p.bytes = p.bytes.saturating_add(len);
        p.frames_queued = p.frames_queued.saturating_add(1);
        drop(pending);
        if was_empty {
            self.queued.notify_one();
        }
        Ok(())
    }

    fn send(&self, event: OutboundEvent) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            loop {
                let room = self.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                match self.try_send(&event.borrowed()) {
                    Ok(()) => return true,
                    Err(QueueRefusal::Closed) => return false,
                    Err(QueueRefusal::Full) => room.await,
                }
            }
        })
    }
}

/// What a peer's event writer needs: the connection, the queue it drains, its limits.
pub(crate) struct EventWriter {
    pub(crate) connection: Connection,
    pub(crate) queue: Arc<EventQueue>,
    pub(crate) slow_consumer_timeout: Duration,
}

/// Writes the peer's queued event frames on this side's event stream, opened on first use, in
/// order, as soon as they are queued: each write takes what is queued (whole frames, up to
/// [`EVENT_BATCH_BYTES`]).
///
/// A write that makes no progress for the slow-consumer timeout (the peer stopped reading)
/// closes the connection with [`codes::SLOW`]. Every delivery is counted: written, or
/// dropped (a failed write, events left when the connection closes). A flush is answered,
/// with the number of frames written so far, once what was queued before it is written.
pub(crate) async fn write_events(writer: EventWriter) {
    let EventWriter {
        connection,
        queue,
        slow_consumer_timeout,
    } = writer;
    let peer = queue.peer;
    let mut stream: Option<SendStream> = None;
    // Event frames taken for writing, and written, on the connection (for flushes).
    let mut frames_taken: u64 = 0;
    let mut frames_written: u64 = 0;
    loop {
        let (taken, answered) = {
            let mut pending = lock(&queue.state);
            let taken = EventQueue::take(&mut pending);
            let answered = match taken {
                Some(_) => Vec::new(),
                None => take_answered(&mut pending.flushes, frames_taken),
            };
            (taken, answered)
        };
        for flush in answered {
            let _ = flush.send(frames_written);
        }
        let Some(taken) = taken else {
            tokio::select! {
                () = queue.queued.notified() => continue,
                _ = connection.closed() => break,
            }
        };
        frames_taken = frames_taken.saturating_add(taken.frames);
        // The events taken no longer count against the queue's capacity.
        queue.room.notify_waiters();
        let write = write_chunk(&connection, &mut stream, taken.chunk.clone());
        let mut closed = false;
        match tokio::time::timeout(slow_consumer_timeout, write).await {
            Ok(Ok(())) => {
                queue
                    .counters
                    .written
                    .fetch_add(taken.copies, Ordering::Relaxed);
                queue.own.written.fetch_add(taken.copies, Ordering::Relaxed);
                frames_written = frames_written.saturating_add(taken.frames);
            }
            Ok(Err(e)) => {
                queue.dropped(taken.copies);
                stream = None;
                closed = connection.close_reason().is_some();
                if !closed {
                    warn_limited!(%peer, events = taken.copies, error = %e, "events to a peer lost: the write failed");
                }
            }
            Err(_) => {
                queue.dropped(taken.copies);
                queue
                    .counters
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                warn_limited!(%peer, timeout = ?slow_consumer_timeout, "slow consumer: the peer's event stream made no progress in time; disconnecting it");
                connection.close(codes::SLOW, b"slow consumer");
                closed = true;
            }
        }
        queue.done(&taken, frames_taken, frames_written);
        if closed {
            break;
        }
    }
    // The connection is gone: what is still queued will never be sent.
    let left: u64 = {
        let mut pending = lock(&queue.state);
        pending.closed = true;
        pending.sealed.clear();
        pending.frames.clear();
        pending.open = None;
        pending.flushes.clear();
        pending.sizes.drain(..).map(|size| size.copies).sum()
    };
    queue.dropped(left);
    queue.room.notify_waiters();
}

/// Writes `chunk` on the event stream, opening it (with its kind byte) first if needed. A
/// failed write leaves no stream, so the next one opens a new stream.
async fn write_chunk(
    connection: &Connection,
    stream: &mut Option<SendStream>,
    chunk: bytes::Bytes,
) -> Result<(), TransportError> {
    let open = match stream {
        Some(open) => open,
        None => {
            let mut opened = connection.open_uni().await?;
            opened.write_all(&[KIND_EVENTS]).await?;
            stream.insert(opened)
        }
    };
    if let Err(e) = open.write_chunk(chunk).await {
        *stream = None;
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::metadata::Metadata;
    use crate::network::EventPayload;
    use crate::network::frames::decode_event;

    fn queue(events: usize, bytes: usize, max_message_size: usize) -> EventQueue {
        let flow = EventFlow {
            queue_capacity: events,
            queue_bytes: bytes,
            slow_consumer_timeout: Duration::from_secs(1),
            counters: Arc::default(),
        };
        EventQueue::new(
            NodeId::from_public_key(&[7; 32]),
            &flow,
            max_message_size,
            Arc::default(),
        )
    }

    fn event<'a>(
        topic: &'a str,
        payload: &'a [u8],
        ids: &'a SubscriptionIds,
        metadata: &'a Metadata,
    ) -> EventRef<'a> {
        EventRef {
            network: "net",
            topic,
            payload: EventPayload::Encoded(payload),
            subscription_ids: ids,
            retained: false,
            metadata,
        }
    }

    /// The frames queued, each decoded: (topic, payloads).
    fn frames(queue: &EventQueue) -> Vec<(String, Vec<Bytes>)> {
        let mut pending = lock(&queue.state);
        pending.open = None;
        pending.sizes.clear();
        let mut all = BytesMut::new();
        for block in pending.sealed.drain(..) {
            all.extend_from_slice(&block);
        }
        all.extend_from_slice(&pending.frames.split());
        let mut frames = all.freeze();
        let mut out = Vec::new();
        while !frames.is_empty() {
            let header: [u8; 4] = frames[..4].try_into().unwrap();
            let len = u32::from_be_bytes(header) as usize;
            let body = frames.slice(4..4 + len);
            frames = frames.slice(4 + len..);
            let event = decode_event(body).unwrap();
            let mut payloads = vec![event.payload];
            payloads.extend(event.more);
            out.push((event.topic.as_str().to_owned(), payloads));
        }
        out
    }

    #[test]
    fn events_of_one_topic_for_one_subscription_join_the_frame_queued_last() {
        let q = queue(100, 1 << 20, 1 << 20);
        let (one, two, many) = (
            SubscriptionIds::One(1),
            SubscriptionIds::One(2),
            SubscriptionIds::Many(vec![1, 2]),
        );
        let none = Metadata::new();
        let mut meta = Metadata::new();
        meta.insert("k", "v").unwrap();
        for (topic, payload, ids, metadata) in [
            ("a/b", &b"1"[..], &one, &none),
            ("a/b", b"2", &one, &none),
            ("a/b", b"", &one, &none),
            // Another subscription, another topic, several subscriptions, metadata: a frame
            // of their own.
            ("a/b", b"3", &two, &none),
            ("a/c", b"4", &two, &none),
            ("a/c", b"5", &many, &none),
            ("a/c", b"6", &many, &none),
            ("a/c", b"7", &two, &meta),
            ("a/c", b"8", &two, &meta),
            ("a/c", b"9", &two, &none),
        ] {
            q.try_send(&event(topic, payload, ids, metadata)).unwrap();
        }
        let b = |s: &'static [u8]| Bytes::from_static(s);
        assert_eq!(
            frames(&q),
            vec![
                ("a/b".to_owned(), vec![b(b"1"), b(b"2"), b(b"")]),
                ("a/b".to_owned(), vec![b(b"3")]),
                ("a/c".to_owned(), vec![b(b"4")]),
                ("a/c".to_owned(), vec![b(b"5")]),
                ("a/c".to_owned(), vec![b(b"6")]),
                ("a/c".to_owned(), vec![b(b"7")]),
                ("a/c".to_owned(), vec![b(b"8")]),
                ("a/c".to_owned(), vec![b(b"9")]),
            ]
        );
    }

    /// A peer that gets an event now and then keeps a small block, not a write's worth.
    #[test]
    fn an_occasional_event_keeps_a_small_block() {
        let q = queue(100, 1 << 20, 1 << 20);
        let ids = SubscriptionIds::One(1);
        let none = Metadata::new();
        for n in 0..100u8 {
            q.try_send(&event("t", &[n; 64], &ids, &none)).unwrap();
            let taken = EventQueue::take(&mut lock(&q.state)).unwrap();
            q.done(&taken, 1, 1);
            drop(taken);
            let pending = lock(&q.state);
            assert!(pending.sealed.is_empty());
            assert!(
                pending.frames.capacity() <= FIRST_BLOCK,
                "{}",
                pending.frames.capacity()
            );
        }
    }

    #[test]
    fn the_writer_takes_whole_frames_and_later_events_start_a_new_one() {
        let q = queue(100, 1 << 20, 1 << 20);
        let ids = SubscriptionIds::One(1);
        let none = Metadata::new();
        q.try_send(&event("t", b"x", &ids, &none)).unwrap();
        q.try_send(&event("u", b"y", &ids, &none)).unwrap();
        let taken = EventQueue::take(&mut lock(&q.state)).unwrap();
        assert_eq!((taken.frames, taken.events, taken.copies), (2, 2, 2));
        // The taken frame is not joined any more.
        q.try_send(&event("u", b"z", &ids, &none)).unwrap();
        q.try_send(&event("u", b"w", &ids, &none)).unwrap();
        // Taken events no longer count; their bytes do until written.
        assert_eq!(lock(&q.state).events, 2);
        let bytes = lock(&q.state).bytes;
        q.done(&taken, 2, 2);
        assert_eq!(lock(&q.state).bytes, bytes - taken.chunk.len());
        let z = Bytes::from_static(b"z");
        let w = Bytes::from_static(b"w");
        assert_eq!(frames(&q), vec![("u".to_owned(), vec![z, w])]);
    }

    #[test]
    fn a_full_queue_refuses_by_events_and_by_bytes_and_a_frame_stops_at_the_maximum() {
        let ids = SubscriptionIds::One(1);
        let none = Metadata::new();
        // Two events at most.
        let q = queue(2, 1 << 20, 1 << 20);
        q.try_send(&event("t", b"1", &ids, &none)).unwrap();
        q.try_send(&event("t", b"2", &ids, &none)).unwrap();
        let refused = q.try_send(&event("t", b"3", &ids, &none));
        assert_eq!(refused, Err(QueueRefusal::Full));
        // 100 bytes at most: the first event always fits, even when larger.
        let q = queue(100, 100, 1 << 20);
        let big = [1u8; 150];
        q.try_send(&event("t", &big, &ids, &none)).unwrap();
        let refused = q.try_send(&event("t", b"2", &ids, &none));
        assert_eq!(refused, Err(QueueRefusal::Full));
        let refused = q.try_send(&event("u", b"2", &ids, &none));
        assert_eq!(refused, Err(QueueRefusal::Full));
        assert_eq!(lock(&q.state).events, 1);
        // Frames of at most 40 bytes: an event that would grow one over it starts another.
        let q = queue(100, 1 << 20, 40);
        for payload in [&[1u8; 10][..], &[2; 10], &[3; 10]] {
            q.try_send(&event("t", payload, &ids, &none)).unwrap();
        }
        let sizes: Vec<usize> = frames(&q).iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, vec![2, 1]);
        // The bytes of a write in flight count: an event that would go over waits for it,
        // even when nothing else is queued.
        let q = queue(100, 100, 1 << 20);
        q.try_send(&event("t", &[1u8; 60], &ids, &none)).unwrap();
        let taken = EventQueue::take(&mut lock(&q.state)).unwrap();
        let refused = q.try_send(&event("u", &[2u8; 60], &ids, &none));
        assert_eq!(refused, Err(QueueRefusal::Full));
        q.done(&taken, 1, 1);
        q.try_send(&event("u", &[2u8; 60], &ids, &none)).unwrap();
        // An event over the maximum on its own is dropped and counted.
        let q = queue(100, 1 << 20, 40);
        q.try_send(&event("t", &[0; 50], &ids, &none)).unwrap();
        assert_eq!(q.counters.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&q.state).frames.len(), 0);
    }

    #[test]
    fn an_emptied_queue_lets_go_of_a_burst_sized_buffer() {
        let q = queue(10_000, 1 << 30, 1 << 20);
        let ids = SubscriptionIds::One(1);
        let none = Metadata::new();
        let payload = [7u8; 1000];
        for topic in ["a", "b"].iter().cycle().take(2_000) {
            q.try_send(&event(topic, &payload, &ids, &none)).unwrap();
        }
        {
            // The burst (2 MB) waits in blocks of about a write each, never in one buffer
            // grown (and copied) to its size.
            let pending = lock(&q.state);
            assert!(pending.bytes > FRAMES_KEPT);
            assert!(pending.sealed.len() > 20);
            let blocks = pending.sealed.iter().chain([&pending.frames]);
            assert!(blocks.clone().all(|b| b.capacity() <= EVENT_BATCH_BYTES));
            assert!(blocks.map(|b| b.len()).sum::<usize>() == pending.bytes);
        }
        let mut writes = 0;
        loop {
            let taken = EventQueue::take(&mut lock(&q.state));
            let Some(taken) = taken else { break };
            assert!(taken.chunk.len() <= EVENT_BATCH_BYTES);
            q.done(&taken, 0, 0);
            writes += 1;
        }
        assert!(writes > 20);
        let pending = lock(&q.state);
        assert!(pending.sealed.is_empty() && pending.frames.capacity() <= FRAMES_KEPT);
        assert_eq!((pending.bytes, pending.events), (0, 0));
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_and_a_waiting_sender_learns_it() {
        let q = Arc::new(queue(1, 1 << 20, 1 << 20));
        let ids = SubscriptionIds::One(1);
        let none = Metadata::new();
        q.try_send(&event("t", b"1", &ids, &none)).unwrap();
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move {
                let owned = OutboundEvent {
                    network: "net".into(),
                    topic: "t".into(),
                    payload: Bytes::from_static(b"2"),
                    subscription_ids: SubscriptionIds::One(1),
                    retained: false,
                    metadata: Metadata::new(),
                };
                q.send(owned).await
            })
        };
        tokio::task::yield_now().await;
        lock(&q.state).closed = true;
        q.room.notify_waiters();
        assert!(!waiting.await.unwrap());
        let refused = q.try_send(&event("t", b"3", &ids, &none));
        assert_eq!(refused, Err(QueueRefusal::Closed));
    }
}
