//! Events from a publisher to a subscriber elsewhere: latency (publish → the subscriber's handler
//! ran) and throughput (messages per second until the last one has been handled).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::stats::Samples;

/// How long the subscriber may receive nothing before the events still missing count as lost.
const STALL: Duration = Duration::from_secs(1);

/// Publishes one event to the subscriber.
pub trait Publisher: Send + Sync {
    fn publish(&self, payload: Bytes) -> impl Future<Output = ()> + Send;
}

/// What the subscriber's handler does for each event: count it and wake the measurer.
#[derive(Clone, Default)]
pub struct Sink(Arc<SinkInner>);

#[derive(Default)]
pub struct SinkInner {
    count: AtomicU64,
    notify: Notify,
}

impl Sink {
    pub fn received(&self, _len: usize) {
        self.0.count.fetch_add(1, Ordering::Release);
        self.0.notify.notify_one();
    }

    /// Events handled so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Acquire)
    }

    /// Waits until `target` events have been handled, or until none has arrived for
    /// [`STALL`] (the rest were dropped by the subscriber's node, which drops an event from a
    /// peer that finds the subscription's queue full): the count reached and when it was seen.
    async fn wait_for(&self, target: u64) -> (u64, Instant) {
        let mut seen = (self.count(), Instant::now());
        loop {
            let notified = self.0.notify.notified();
            let count = self.count();
            if count != seen.0 {
                seen = (count, Instant::now());
            }
            if count >= target {
                return seen;
            }
            let stalled = tokio::time::Instant::from_std(seen.1 + STALL);
            if tokio::time::timeout_at(stalled, notified).await.is_err() && self.count() == count {
                eprintln!(
                    "bench: {} events never reached the subscriber (dropped: its queue was full)",
                    target - count
                );
                return seen;
            }
        }
    }
}

/// One event at a time: the time from calling publish to the subscriber having handled it.
pub async fn latency<P: Publisher>(
    publisher: &P,
    sink: &Sink,
    payload: Bytes,
    warmup: Duration,
    measure: Duration,
) -> Samples {
    let until = Instant::now() + warmup;
    while Instant::now() < until {
        let target = sink.count() + 1;
        publisher.publish(payload.clone()).await;
        sink.wait_for(target).await;
    }
    let mut nanos = Vec::with_capacity(100_000);
    let start = Instant::now();
    let end = start + measure;
    loop {
        let target = sink.count() + 1;
        let t0 = Instant::now();
        publisher.publish(payload.clone()).await;
        sink.wait_for(target).await;
        let t1 = Instant::now();
        nanos.push((t1 - t0).as_nanos() as u64);
        if t1 >= end {
            break;
        }
    }
    Samples {
        nanos,
        elapsed: start.elapsed(),
    }
}

/// What [`throughput`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    /// Events handled per second, from the first publish to the last event handled.
    pub per_sec: f64,
    /// Events published during the measurement that the subscriber never handled.
    pub lost: u64,
}

/// Publishes back to back for `measure`, then waits until the subscriber has handled every
/// event: events per second over that whole time, and how many never arrived.
pub async fn throughput<P: Publisher>(
    publisher: &P,
    sink: &Sink,
    payload: Bytes,
    warmup: Duration,
    measure: Duration,
) -> Throughput {
    let burst = |until: Instant| {
        let payload = payload.clone();
        async move {
            let mut sent = 0u64;
            loop {
                for _ in 0..64 {
                    publisher.publish(payload.clone()).await;
                }
                sent += 64;
                if Instant::now() >= until {
                    return sent;
                }
            }
        }
    };
    let base = sink.count();
    let sent = burst(Instant::now() + warmup).await;
    sink.wait_for(base + sent).await;

    let base = sink.count();
    let start = Instant::now();
    let sent = burst(start + measure).await;
    let (handled, at) = sink.wait_for(base + sent).await;
    Throughput {
        per_sec: (handled - base) as f64 / (at - start).as_secs_f64(),
        lost: (base + sent).saturating_sub(handled),
    }
}

/// Publishes exactly `n` events and waits until all have been handled (for profilers).
pub async fn fixed<P: Publisher>(publisher: &P, sink: &Sink, payload: Bytes, n: u64) -> f64 {
    let base = sink.count();
    let start = Instant::now();
    for _ in 0..n {
        publisher.publish(payload.clone()).await;
    }
    let (handled, at) = sink.wait_for(base + n).await;
    (handled - base) as f64 / (at - start).as_secs_f64()
}
