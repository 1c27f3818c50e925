//! Tokio's cooperative budget (128 units a task's turn, after which the task's next poll of a
//! budgeted resource yields) taken one unit per several items, for items that cost far less
//! than what a unit was sized for.
//!
//! A consumer that always finds another item, or a publisher in a tight loop, must still let
//! the other tasks of its thread run now and then; at one unit an item it yields every 128
//! items, which for small messages and events is too often: a stream's consumer was moved
//! between threads mid-run many times a millisecond, and a publisher's peer writer sent 128
//! small events a write, a QUIC packet and an acknowledgement each.

use std::task::{Context, Poll};

/// How many items a consumer hands out per unit of the budget: one that always finds more
/// yields every 4,096 (a stream's messages, a subscription's events).
pub(crate) const ITEMS_PER_UNIT: u32 = 32;

/// Items handed out since the budget was last consulted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Steps(u32);

impl Steps {
    /// None yet.
    pub(crate) const fn new() -> Self {
        Steps(0)
    }

    /// Whether one more item may be handed out now: once `per_unit` items have gone since the
    /// budget was last consulted, it takes a unit of it, and is `Pending` (the task yields and
    /// is woken) when the budget is used up. Count the item with [`took`](Self::took).
    pub(crate) fn poll_proceed(&mut self, cx: &mut Context<'_>, per_unit: u32) -> Poll<()> {
        if self.0 >= per_unit {
            std::task::ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
            self.0 = 0;
        }
        Poll::Ready(())
    }

    /// One more item was handed out.
    pub(crate) fn took(&mut self) {
        self.0 = self.0.saturating_add(1);
    }
}
