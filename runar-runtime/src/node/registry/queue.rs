//! A local subscription's bounded queue of events: many deliverers, one handler's task.
//!
//! Written for this one use instead of tokio's bounded `mpsc`: the task takes everything queued
//! at once (one lock for a run of events, not one semaphore permit, list slot and waker per
//! event), while an event still counts against the capacity until the handler gets it, so
//! what [`QueueSender::queued`] says and when a deliverer finds the queue full are exactly as
//! if the task took the events one by one. A peer's frame of many events goes in as one entry
//! ([`QueueSender::try_send_run`], an [`EventRun`]) that counts as its events, each read
//! from the frame as it is handed over.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::{Event, EventRun};
use crate::coop;
use crate::lock::lock;

/// How many events' room each of a queue's two buffers keeps once emptied: a burst grows them
/// up to the queue's capacity (a thousand events by default), and a subscription that is idle
/// afterwards should not keep that.
const KEPT_EVENTS: usize = 64;

/// A subscription's queue of `capacity` events: the deliverers' end and the handler task's.
pub(crate) fn subscription_queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        queued: AtomicUsize::new(0),
        capacity,
        room_wanted: AtomicBool::new(false),
        room: Notify::new(),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReceiver {
            shared,
            taken: VecDeque::new(),
            run: None,
            unbudgeted: coop::Steps::new(),
        },
    )
}

struct Shared {
    state: Mutex<State>,
    /// Events queued and not yet handed to the handler: in `State::events` or among those the
    /// task has taken ([`QueueReceiver::taken`]).
    queued: AtomicUsize,
    capacity: usize,
    /// A deliverer waits for room: the task wakes it when it hands an event over.
    room_wanted: AtomicBool,
    room: Notify,
}

/// One entry of a queue: an event, or a run of a peer's events.
enum Queued {
    One(Event),
    Run(EventRun),
}

struct State {
    events: VecDeque<Queued>,
    /// The task, waiting for an event.
    waker: Option<Waker>,
    /// The subscription ended: once the task has handled what is queued, it ends too.
    sender_gone: bool,
    /// The task ended: nothing is queued any more.
    receiver_gone: bool,
}

/// Why [`QueueSender::try_send`] gave the event back.
pub(crate) enum QueueFull {
    /// The queue holds its capacity.
    Full(Event),
    /// The subscription's task has ended.
    Closed(Event),
}

/// The subscription's task has ended: [`QueueSender::try_send_run`] queued nothing.
#[derive(Debug)]
pub(crate) struct QueueClosed;

impl std::fmt::Debug for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueFull::Full(_) => "Full",
            QueueFull::Closed(_) => "Closed",
        })
    }
}

/// The deliverers' end of a subscription's queue; dropping it ends the subscription's task
/// once the task has handled what is queued.
pub(crate) struct QueueSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSender")
            .field("queued", &self.queued())
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl QueueSender {
    /// Queues `event` if there is room.
    pub(crate) fn try_send(&self, event: Event) -> Result<(), QueueFull> {
        let Some((state, room)) = self.lock_room() else {
            return Err(QueueFull::Closed(event));
        };
        if room == 0 {
            return Err(QueueFull::Full(event));
        }
        self.push(state, Queued::One(event), 1);
        Ok(())
    }

    /// Queues as many of `run`'s events as there is room for, from its first on, as one
    /// entry (each counts against the capacity as a single event would): how many, which may
    /// be none. `Err` if the subscription's task has ended.
    pub(crate) fn try_send_run(&self, mut run: EventRun) -> Result<usize, QueueClosed> {
        let (state, room) = self.lock_room().ok_or(QueueClosed)?;
        let taken = run.left.min(room);
        if taken > 0 {
            run.left = taken;
            self.push(state, Queued::Run(run), taken);
        }
        Ok(taken)
    }

    /// The queue's state, locked, and how many more events it has room for; `None` once the
    /// subscription's task has ended.
    fn lock_room(&self) -> Option<(MutexGuard<'_, State>, usize)> {
        let state = lock(&self.shared.state);
        if state.receiver_gone {
            return None;
        }
        // SeqCst, as in `QueueReceiver::handed_over`: a deliverer that announced it waits
        // for room either sees the room made or is woken.
        let queued = self.shared.queued.load(Ordering::SeqCst);
        Some((state, self.shared.capacity.saturating_sub(queued)))
    }

    /// Appends `entry`, counting as `events` events, and wakes the task (after the lock).
    fn push(&self, mut state: MutexGuard<'_, State>, entry: Queued, events: usize) {
        state.events.push_back(entry);
        self.shared.queued.fetch_add(events, Ordering::SeqCst);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues `event`, waiting for room as long as it takes; the event comes back if the
    /// subscription's task has ended.
    pub(crate) async fn send(&self, mut event: Event) -> Result<(), Event> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.shared.room_wanted.store(true, Ordering::SeqCst);
            match self.try_send(event) {
                Ok(()) => return Ok(()),
                Err(QueueFull::Closed(back)) => return Err(back),
                Err(QueueFull::Full(back)) => {
                    event = back;
                    room.await;
                }
            }
        }
    }

    /// Events queued and not yet handed to the handler.
    pub(crate) fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.sender_gone = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The subscription task's end of its queue.
pub(crate) struct QueueReceiver {
    shared: Arc<Shared>,
    /// Entries taken from the queue at once, not yet handed to the handler (their events
    /// still counted in `Shared::queued`).
    taken: VecDeque<Queued>,
    /// The run whose events are being handed over: kept until the next event is asked for,
    /// so that its frame stays held while the handler of its last event runs.
    run: Option<EventRun>,
    /// Events handed over since tokio's cooperative budget was last consulted.
    unbudgeted: coop::Steps,
}

impl QueueReceiver {
    /// The next event for the handler, waiting for one; `None` once the subscription has
    /// ended and everything queued was handed over. Uses tokio's cooperative budget, a unit per
    /// [`coop::ITEMS_PER_UNIT`] events (as a stream's consumer does), so a task whose queue
    /// never empties still lets others run, and on one thread keeps up with a publisher that
    /// yields every 512 publishes (at one unit per event its queue filled, and its peers'
    /// events then waited for room or were dropped).
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<Event>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        std::task::ready!(self.unbudgeted.poll_proceed(cx, coop::ITEMS_PER_UNIT));
        loop {
            if let Some(run) = &mut self.run {
                if let Some(event) = run.next_event() {
                    self.handed_over(1);
                    self.unbudgeted.took();
                    return Poll::Ready(Some(event));
                }
                // A frame that ended short of the run (it was checked when it arrived, so
                // never, but its events must not stay counted).
                let missing = run.left;
                self.run = None;
                if missing > 0 {
                    self.handed_over(missing);
                }
            }
            if self.taken.is_empty() {
                let mut state = lock(&self.shared.state);
                if state.events.is_empty() {
                    if state.sender_gone {
                        return Poll::Ready(None);
                    }
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                std::mem::swap(&mut state.events, &mut self.taken);
            }
            // Never empty here (the queue's entries were just taken), but were it, the loop
            // would look again and register the waker.
            let Some(entry) = self.taken.pop_front() else {
                continue;
            };
            if self.taken.is_empty() && self.taken.capacity() > KEPT_EVENTS {
                // The buffer goes back to the deliverers at the next take: not at a burst's
                // size.
                self.taken.shrink_to(KEPT_EVENTS);
            }
            match entry {
                Queued::One(event) => {
                    self.handed_over(1);
                    self.unbudgeted.took();
                    return Poll::Ready(Some(event));
                }
                Queued::Run(run) => self.run = Some(run),
            }
        }
    }

    /// `n` events left the queue for the handler: room for as many others.
    fn handed_over(&self, n: usize) {
        let shared = &*self.shared;
        shared.queued.fetch_sub(n, Ordering::SeqCst);
        if shared.room_wanted.load(Ordering::SeqCst) {
            shared.room_wanted.store(false, Ordering::SeqCst);
            shared.room.notify_waiters();
        }
    }

    /// Nothing is queued: the handler has been handed everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.queued.load(Ordering::Relaxed) == 0
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.receiver_gone = true;
        let queued = std::mem::take(&mut state.events);
        drop(state);
        // What was queued is dropped here, outside the lock (it gives back held bytes).
        drop(queued);
        self.shared.queued.store(0, Ordering::SeqCst);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::network::MorePayloads;
    use crate::node::registry::HeldBytes;
    use crate::node::service::Caller;
    use crate::value::{EventValue, Value};

    fn event(n: u64) -> Event {
        Event {
            topic: "t".into(),
            value: EventValue::Owned(Value::new(n)),
            publisher: Caller::Local,
            retained: false,
            metadata: Default::default(),
            held: None,
        }
    }

    fn number(event: Event) -> u64 {
        event.value.into_typed::<u64>().unwrap()
    }

    #[tokio::test]
    async fn events_count_until_the_handler_gets_them() {
        let (tx, mut rx) = subscription_queue(3);
        for n in 0..3 {
            tx.try_send(event(n)).unwrap();
        }
        assert!(matches!(tx.try_send(event(3)), Err(QueueFull::Full(_))));
        assert_eq!(tx.queued(), 3);
        // The task takes all three at once, but hands over one: room for exactly one more.
        assert_eq!(number(rx.recv().await.unwrap()), 0);
        assert_eq!(tx.queued(), 2);
        tx.try_send(event(3)).unwrap();
        assert!(matches!(tx.try_send(event(4)), Err(QueueFull::Full(_))));
        for n in 1..4 {
            assert_eq!(number(rx.recv().await.unwrap()), n);
        }
        assert!(rx.is_empty());
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    /// A run of `n` events numbered from `start`, holding `held` bytes of `counter`.
    fn run(start: u64, n: u64, counter: &Arc<AtomicUsize>, held: usize) -> EventRun {
        let payloads: Vec<bytes::Bytes> = (start..start + n)
            .map(|k| Value::new(k).to_bytes())
            .collect();
        let (first, more) = payloads.split_first().unwrap();
        EventRun {
            topic: "t".into(),
            publisher: Caller::Local,
            retained: false,
            metadata: Default::default(),
            _held: Some(Arc::new(
                HeldBytes::try_hold(counter, held, usize::MAX).unwrap(),
            )),
            scope: None,
            first: Some(first.clone()),
            more: MorePayloads::of(more),
            left: payloads.len(),
        }
    }

    #[tokio::test]
    async fn a_run_counts_as_its_events_and_takes_only_the_room_there_is() {
        let counter = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = subscription_queue(5);
        tx.try_send(event(0)).unwrap();
        // Room for four of the run's six: those four go in, as one entry.
        assert_eq!(tx.try_send_run(run(1, 6, &counter, 100)).unwrap(), 4);
        assert_eq!(tx.queued(), 5);
        assert!(matches!(tx.try_send(event(9)), Err(QueueFull::Full(_))));
        assert_eq!(tx.try_send_run(run(9, 2, &counter, 10)).unwrap(), 0);
        // Handed over one by one, each making room for one.
        assert_eq!(number(rx.recv().await.unwrap()), 0);
        assert_eq!(tx.queued(), 4);
        assert_eq!(number(rx.recv().await.unwrap()), 1);
        assert_eq!(tx.queued(), 3);
        assert_eq!(tx.try_send_run(run(5, 3, &counter, 10)).unwrap(), 2);
        for n in 2..7 {
            assert_eq!(number(rx.recv().await.unwrap()), n);
        }
        assert!(rx.is_empty());
        drop(tx);
        assert!(rx.recv().await.is_none());
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_run_holds_its_frame_until_its_last_handler_has_run() {
        let counter = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = subscription_queue(10);
        assert_eq!(tx.try_send_run(run(0, 2, &counter, 100)).unwrap(), 2);
        assert_eq!(counter.load(Ordering::SeqCst), 100);
        assert_eq!(number(rx.recv().await.unwrap()), 0);
        // The last event is out, its handler running: the frame is still held.
        assert_eq!(number(rx.recv().await.unwrap()), 1);
        assert_eq!(counter.load(Ordering::SeqCst), 100);
        tx.try_send(event(2)).unwrap();
        assert_eq!(number(rx.recv().await.unwrap()), 2);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        // A subscription that ends gives back what its queued runs held.
        assert_eq!(tx.try_send_run(run(3, 3, &counter, 50)).unwrap(), 3);
        assert_eq!(number(rx.recv().await.unwrap()), 3);
        drop(rx);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        assert!(tx.try_send_run(run(6, 1, &counter, 1)).is_err());
    }

    #[tokio::test]
    async fn a_burst_does_not_leave_its_buffers_behind() {
        let (tx, mut rx) = subscription_queue(1_000);
        for round in 0..3 {
            for n in 0..1_000 {
                tx.try_send(event(n)).unwrap();
            }
            for n in 0..1_000 {
                assert_eq!(number(rx.recv().await.unwrap()), n, "round {round}");
            }
            let queued = lock(&tx.shared.state).events.capacity();
            assert!(queued <= KEPT_EVENTS, "{queued}");
            assert!(
                rx.taken.capacity() <= KEPT_EVENTS,
                "{}",
                rx.taken.capacity()
            );
        }
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_or_its_event_back() {
        let (tx, mut rx) = subscription_queue(1);
        let tx = Arc::new(tx);
        tx.try_send(event(0)).unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(event(1)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert_eq!(number(rx.recv().await.unwrap()), 0);
        assert!(waiting.await.unwrap());
        assert_eq!(number(rx.recv().await.unwrap()), 1);

        tx.try_send(event(2)).unwrap();
        let refused = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(event(3)).await.is_err() }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(refused.await.unwrap());
        assert!(matches!(tx.try_send(event(4)), Err(QueueFull::Closed(_))));
    }
}
