//! The bytes of peers' requests a node holds, bounded node-wide: one pool shared by every
//! peer (`NetworkConfig::max_request_bytes`), a cap per peer
//! (`max_request_bytes_per_peer`), and a small reserve per peer outside the pool
//! (`request_reserve_per_peer`), so that a peer with little in flight is served at once even
//! while other peers (any number of identities) hold the whole pool.
//!
//! A request's bytes are held from the moment its header says how large it is until its
//! answer is written; an event frame that arrives in pieces holds its bytes while they are
//! gathered and delivered (taken without waiting: with no room, the event stream is cut and
//! the sender opens another, losing those events, as events may be lost). The worst case over all peers is
//! `max_request_bytes + max_connections × request_reserve_per_peer`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node-wide pool of request bytes; [`RequestBudget::peer`] makes each peer's share of it.
#[derive(Debug, Clone)]
pub(crate) struct RequestBudget {
    pool: Arc<Semaphore>,
    /// The pool's size, in permits (one per byte).
    pool_max: usize,
    per_peer: usize,
    reserve: usize,
}

impl RequestBudget {
    /// A pool of `total` bytes, of which one peer may hold `per_peer`, each peer having
    /// `reserve` bytes of its own besides. Each is capped at what a semaphore can count.
    pub(crate) fn new(total: usize, per_peer: usize, reserve: usize) -> Self {
        let pool_max = total.min(Semaphore::MAX_PERMITS);
        RequestBudget {
            pool: Arc::new(Semaphore::new(pool_max)),
            pool_max,
            per_peer: per_peer.min(Semaphore::MAX_PERMITS),
            reserve: reserve.min(Semaphore::MAX_PERMITS),
        }
    }

    /// One peer's budget, drawing on this pool.
    pub(crate) fn peer(&self) -> PeerBudget {
        PeerBudget {
            pool: self.pool.clone(),
            own: Arc::new(Semaphore::new(self.per_peer)),
            reserve: Arc::new(Semaphore::new(self.reserve)),
            reserve_max: self.reserve,
            largest: self.per_peer.min(self.pool_max),
        }
    }
}

/// What one peer's requests (and the event frames it sends in pieces) may hold: its reserve,
/// then its cap within the node-wide pool. Clones share the same budget.
#[derive(Clone)]
pub(crate) struct PeerBudget {
    pool: Arc<Semaphore>,
    own: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    reserve_max: usize,
    /// The most one request takes from the pool: a request larger than the peer's cap (or the
    /// pool) takes all of it, and so is served alone.
    largest: usize,
}

/// Bytes held for one request until dropped.
pub(crate) struct Held {
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// What a request or message that found no room in the budget within the read timeout fails
/// with.
pub(crate) fn stayed_full() -> crate::error::Error {
    crate::error::Error::resource_exhausted(
        "the node's request budget stayed full for the read timeout",
    )
}

impl PeerBudget {
    /// Takes room for a request of `len` bytes: from the peer's reserve when it has that much
    /// free now, otherwise from the peer's cap and then the node-wide pool, waiting (in
    /// arrival order) for room. `None` if the budget was closed.
    pub(crate) async fn acquire(&self, len: usize) -> Option<Held> {
        if let Some(held) = self.take_reserve(len) {
            return Some(held);
        }
        let want = self.want(len);
        let own = self.own.clone().acquire_many_owned(want).await.ok()?;
        let pool = self.pool.clone().acquire_many_owned(want).await.ok()?;
        Some(Held {
            _permits: (own, Some(pool)),
        })
    }

    /// Room for `len` bytes from the peer's reserve, when it has that much free now.
    fn take_reserve(&self, len: usize) -> Option<Held> {
        if len > self.reserve_max {
            return None;
        }
        let permit = self
            .reserve
            .clone()
            .try_acquire_many_owned(u32::try_from(len).ok()?)
            .ok()?;
        Some(Held {
            _permits: (permit, None),
        })
    }

    /// [`acquire`](Self::acquire) without waiting: `None` when there is no room now.
    pub(crate) fn try_acquire(&self, len: usize) -> Option<Held> {
        if let Some(held) = self.take_reserve(len) {
            return Some(held);
        }
        let want = self.want(len);
        let own = self.own.clone().try_acquire_many_owned(want).ok()?;
        let pool = self.pool.clone().try_acquire_many_owned(want).ok()?;
        Some(Held {
            _permits: (own, Some(pool)),
        })
    }

    /// The permits `len` bytes take from the cap and the pool.
    fn want(&self, len: usize) -> u32 {
        u32::try_from(len.min(self.largest)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn small_requests_use_the_reserve_while_the_pool_is_full() {
        let budget = RequestBudget::new(100, 60, 10);
        let (a, b) = (budget.peer(), budget.peer());
        let _a1 = a.acquire(60).await.unwrap();
        let _b1 = b.acquire(40).await.unwrap();
        // The pool is empty: a large request waits, a small one goes through the reserve.
        let waits = tokio::time::timeout(Duration::from_millis(50), b.acquire(20)).await;
        assert!(waits.is_err(), "the pool is full");
        let small = tokio::time::timeout(Duration::from_millis(50), b.acquire(10)).await;
        assert!(small.is_ok(), "the reserve serves a small request");
        // One peer never holds more than its cap, even with room in the pool.
        drop(_b1);
        let over = tokio::time::timeout(Duration::from_millis(50), a.acquire(20)).await;
        assert!(over.is_err(), "a peer's cap holds");
        // A request larger than the cap takes all of it.
        drop(_a1);
        let whole = tokio::time::timeout(Duration::from_millis(50), a.acquire(1000)).await;
        assert!(whole.is_ok());
        // Without waiting: no room is `None` at once.
        assert!(a.try_acquire(20).is_none());
        assert!(b.try_acquire(50).is_none(), "a holds 60 of the pool's 100");
        assert!(b.try_acquire(40).is_some());
    }
}
