//! The two tokio runtimes every network measurement runs on.

use std::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    /// `new_current_thread`: everything on one thread.
    Current,
    /// `new_multi_thread` with 2 workers (this machine has 2 cores).
    Multi,
}

impl Rt {
    pub const BOTH: [Rt; 2] = [Rt::Current, Rt::Multi];

    pub fn label(self) -> &'static str {
        match self {
            Rt::Current => "current-thread",
            Rt::Multi => "multi-thread (2)",
        }
    }

    /// Runs `f`'s future on a fresh runtime of this kind, as a spawned task (so on the
    /// multi-thread runtime it runs on a worker, like a server's code, not on the main thread).
    /// The runtime is dropped afterwards, with everything the scenario left running.
    pub fn run<F, Fut>(self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let rt = match self {
            Rt::Current => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Rt::Multi => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .expect("a tokio runtime");
        let out = rt.block_on(async move {
            tokio::spawn(f())
                .await
                .expect("the benchmark task panicked")
        });
        rt.shutdown_timeout(std::time::Duration::from_millis(500));
        out
    }
}
