//! Rate limits for log lines a peer can trigger, so a hostile peer (or anyone on the LAN, for
//! discovery) cannot flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock::lock;

/// Lets at most `per_second` lines through in each one-second window; the first line after a
/// window with suppressed lines says how many were suppressed. One per call site, as a `static`.
pub(crate) struct LogLimit {
    per_second: u32,
    /// The window's start, lines let through in it, lines suppressed in it.
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl LogLimit {
    /// A limit of `per_second` lines per second.
    pub(crate) const fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
            state: Mutex::new(None),
        }
    }

    /// `Some(suppressed)` when a line may be logged now, with the number of lines suppressed
    /// since the last one logged; `None` when this line is to be suppressed.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let (start, count, suppressed) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        if *count < self.per_second {
            *count += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed = suppressed.saturating_add(1);
            None
        }
    }
}

/// `tracing::warn!` through a per-call-site [`LogLimit`] of 10 lines per second.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit =
            $crate::log_limit::LogLimit::new(10);
        if let Some(suppressed) = LIMIT.allow() {
            tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

/// `tracing::error!` through a per-call-site [`LogLimit`] of 10 lines per second.
macro_rules! error_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit =
            $crate::log_limit::LogLimit::new(10);
        if let Some(suppressed) = LIMIT.allow() {
            tracing::error!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use error_limited;
