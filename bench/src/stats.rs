//! Latency samples and the numbers the table shows.

use std::time::Duration;

/// Round-trip times in nanoseconds, plus how long collecting them took.
pub struct Samples {
    pub nanos: Vec<u64>,
    pub elapsed: Duration,
}

impl Samples {
    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i] as f64 / 1000.0
    }

    pub fn per_sec(&self) -> f64 {
        self.nanos.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Latency percentiles and rate of one sequential run.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub per_sec: f64,
}

impl From<&Samples> for Latency {
    fn from(s: &Samples) -> Self {
        Latency {
            p50: s.quantile_us(0.50),
            p90: s.quantile_us(0.90),
            p99: s.quantile_us(0.99),
            per_sec: s.per_sec(),
        }
    }
}

/// `12.3` / `1 234` / `123k` style, short enough for a table cell.
pub fn rate(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x >= 10_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 1000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

pub fn us(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub fn ratio(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    format!("{x:.2}x")
}
