//! What is measured for every request/response system: sequential latency and calls per second
//! with many calls in flight.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::stats::Samples;

/// One request/response round trip: send `payload`, get the server's echo of it.
pub trait Rpc: Clone + Send + Sync + 'static {
    fn call(&self, payload: Bytes) -> impl Future<Output = Bytes> + Send;

    /// Prints (to stderr) what the client knows of its connection, for profiles: nothing
    /// unless the system says more.
    fn report(&self) {}
}

/// A measurement any [`Rpc`] system can be put through (see `on_system` in `main.rs`).
pub trait Measure: Send + 'static {
    /// What it measures.
    type Output: Send + 'static;
    /// Measures `rpc`.
    fn run<R: Rpc>(&self, rpc: &R) -> impl Future<Output = Self::Output> + Send;
}

/// Sequential round trips for `warmup` then `measure`, each one timed.
pub async fn sequential<R: Rpc>(
    rpc: &R,
    payload: Bytes,
    warmup: Duration,
    measure: Duration,
) -> Samples {
    let len = payload.len();
    let until = Instant::now() + warmup;
    while Instant::now() < until {
        check(len, rpc.call(payload.clone()).await);
    }
    let mut nanos = Vec::with_capacity(200_000);
    let start = Instant::now();
    let end = start + measure;
    loop {
        let t0 = Instant::now();
        let answer = rpc.call(payload.clone()).await;
        let t1 = Instant::now();
        check(len, answer);
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

/// Exactly `n` sequential round trips, each timed (for profilers, which slow time down).
pub async fn fixed<R: Rpc>(rpc: &R, payload: Bytes, n: u64) -> Samples {
    let len = payload.len();
    let mut nanos = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        check(len, rpc.call(payload.clone()).await);
        nanos.push(t0.elapsed().as_nanos() as u64);
    }
    Samples {
        nanos,
        elapsed: start.elapsed(),
    }
}

/// Calls per second with `inflight` callers, each a task of its own issuing calls back to
/// back. Calls that complete during `warmup` are not counted.
pub async fn concurrent<R: Rpc>(
    rpc: &R,
    payload: Bytes,
    inflight: usize,
    warmup: Duration,
    measure: Duration,
) -> f64 {
    let len = payload.len();
    let start = Instant::now() + warmup;
    let end = start + measure;
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let rpc = rpc.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut counted = 0u64;
                loop {
                    let answer = rpc.call(payload.clone()).await;
                    check(len, answer);
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    if now >= start {
                        counted += 1;
                    }
                }
                counted
            })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        total += task.await.expect("a caller task panicked");
    }
    total as f64 / measure.as_secs_f64()
}

/// Exactly `n` calls (rounded down to a multiple of `inflight`) by `inflight` callers, each
/// a task issuing calls back to back (for profilers: a fixed amount of work, not of time).
/// Returns the calls made.
pub async fn concurrent_fixed<R: Rpc>(rpc: &R, payload: Bytes, inflight: usize, n: u64) -> u64 {
    let len = payload.len();
    let each = n / inflight as u64;
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let rpc = rpc.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    check(len, rpc.call(payload.clone()).await);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a caller task panicked");
    }
    each * inflight as u64
}

fn check(len: usize, answer: Bytes) {
    assert_eq!(
        answer.len(),
        len,
        "the echo came back with the wrong length"
    );
}
