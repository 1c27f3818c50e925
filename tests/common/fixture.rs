//! The one service of the behaviour tests: [`Fixture`], hand-written against `AbstractService`,
//! with an action per behaviour a test needs. The tests in `tests/*.rs` and the codegen test
//! crate (`tests/codegen-proto`) use it instead of writing their own.
//!
//! Actions, under [`PATH`] unless [`Fixture::at`] says otherwise:
//!
//! | action        | takes         | answers                                                   |
//! |---------------|---------------|-----------------------------------------------------------|
//! | `who`         | `()`          | the node name given to [`Fixture::new`]; counted          |
//! | `count`       | `()`          | the number of counted calls so far, this one included     |
//! | `caller`      | `()`          | the caller's node id, or `"local"`                        |
//! | `where`       | `()`          | the action path as the handler sees it                    |
//! | `add`         | [`AddRequest`]| `a + b` (`f64`)                                           |
//! | `double`      | `u64`         | twice the number                                          |
//! | `sleep`       | `u64` ms      | the same number, after sleeping that long                 |
//! | `hang`        | `()`          | never; [`Probe::dropped`] hears when the call is dropped  |
//! | `fail`        | `()`          | the error [`FAIL_CODE`], [`FAIL_MESSAGE`]                 |
//! | `panic`       | `String`      | panics with that message                                  |
//! | `blob`        | `u64`         | that many bytes (`Vec<u8>`)                               |
//! | `len`         | `Vec<u8>`     | its length (`u64`)                                        |
//! | `items/{id}`  | `()`          | `"item {id}"`                                             |
//! | `items/special` | `()`        | `"special"` (a literal beats the template)                |
//!
//! Streaming actions (registered with `register_stream`):
//!
//! | action          | kind    | takes         | answers                                         |
//! |-----------------|---------|---------------|-------------------------------------------------|
//! | `stream/count`  | server  | `u64` n       | `0, 1, …, n-1`                                  |
//! | `stream/sum`    | client  | `u64`s        | their sum                                       |
//! | `stream/echo`   | bidi    | `u64`s        | each one back, in order                         |
//! | `stream/fail`   | server  | `u64` n       | `0 … n-1`, then the error [`FAIL_CODE`], [`FAIL_MESSAGE`] |
//! | `stream/panic`  | server  | `u64` n       | `0 … n-1`, then its reply stream panics         |
//! | `stream/twice`  | client  | `u64`s        | two replies, their count and 0 (only the first is sent) |
//! | `stream/endless`| server  | `()`          | `0, 1, 2, …` for ever; [`Probe::pulled`] counts the messages taken from it, [`Probe::dropped`] hears `"stream dropped"` when it is dropped |
//!
//! With [`Fixture::listening`], the service also subscribes to a topic and reports each event
//! as `(node name, service path)` on a channel the test gives (several fixtures may share one).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runar::{AbstractService, CallKind, Caller, Code, Error, LifecycleContext, Streaming};
use tokio::sync::mpsc;

/// Where a fixture serves unless told otherwise.
pub const PATH: &str = "echo";
/// The code of the `fail` action's error.
pub const FAIL_CODE: Code = Code::NotFound;
/// The message of the `fail` action's error.
pub const FAIL_MESSAGE: &str = "no item 7";

/// The request of `add`: the same fields as the `add` of a `#[runar::service]` with
/// `fn add(&self, a: f64, b: f64)`, and as `calc.CalcAddRequest` in `tests/codegen-proto`.
#[derive(Clone, PartialEq, runar::prost::Message)]
#[prost(prost_path = "::runar::prost")]
pub struct AddRequest {
    /// The first term.
    #[prost(double, tag = "1")]
    pub a: f64,
    /// The second term.
    #[prost(double, tag = "2")]
    pub b: f64,
}

/// The fixture service; see the module docs for its actions.
pub struct Fixture {
    node: &'static str,
    path: &'static str,
    listen: Option<(&'static str, Heard)>,
    calls: Arc<AtomicUsize>,
    dropped: mpsc::UnboundedSender<&'static str>,
    pulled: Arc<AtomicUsize>,
}

/// Where a listening fixture reports `(node name, service path)` for each event it hears.
pub type Heard = mpsc::UnboundedSender<(&'static str, &'static str)>;

/// What a test observes of its fixture.
pub struct Probe {
    /// Calls of `who` and `count` so far.
    pub calls: Arc<AtomicUsize>,
    /// `"hang dropped"` each time a `hang` call's future is dropped (cancelled), `"stream
    /// dropped"` each time a `stream/endless` stream is.
    pub dropped: mpsc::UnboundedReceiver<&'static str>,
    /// Messages taken from `stream/endless` streams so far.
    pub pulled: Arc<AtomicUsize>,
}

impl Fixture {
    /// A fixture at [`PATH`] that answers `who` with `node`, and the probe that watches it.
    pub fn new(node: &'static str) -> (Fixture, Probe) {
        let calls = Arc::new(AtomicUsize::new(0));
        let (dropped, dropped_rx) = mpsc::unbounded_channel();
        let pulled = Arc::new(AtomicUsize::new(0));
        let fixture = Fixture {
            node,
            path: PATH,
            listen: None,
            calls: calls.clone(),
            dropped,
            pulled: pulled.clone(),
        };
        let probe = Probe {
            calls,
            dropped: dropped_rx,
            pulled,
        };
        (fixture, probe)
    }

    /// Serves under `path` instead of [`PATH`] (its name is the path too).
    pub fn at(mut self, path: &'static str) -> Fixture {
        self.path = path;
        self
    }

    /// Also subscribes to `topic` (a `u64` payload) and reports each event on `heard`.
    pub fn listening(mut self, topic: &'static str, heard: &Heard) -> Fixture {
        self.listen = Some((topic, heard.clone()));
        self
    }
}

/// Sends a message when the handler's future is dropped (completed or cancelled).
struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("hang dropped");
    }
}

/// Sends `"stream dropped"` when a stream is dropped.
struct StreamDropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for StreamDropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("stream dropped");
    }
}

impl AbstractService for Fixture {
    fn name(&self) -> &str {
        self.path
    }

    fn path(&self) -> &str {
        self.path
    }

    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        self.register_counted(ctx).await?;
        self.register_requests(ctx).await?;
        self.register_failures(ctx).await?;
        self.register_sizes(ctx).await?;
        self.register_templates(ctx).await?;
        self.register_streams(ctx).await?;
        if let Some((topic, heard)) = &self.listen {
            let (node, path, heard) = (self.node, self.path, heard.clone());
            ctx.subscribe(topic, move |_: u64, _| {
                let heard = heard.clone();
                async move {
                    heard.send((node, path)).unwrap();
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }
}

impl Fixture {
    /// `who` and `count`.
    async fn register_counted(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let (node, calls) = (self.node, self.calls.clone());
        ctx.register_action("who", move |_: (), _| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(node.to_string()) }
        })
        .await?;
        let calls = self.calls.clone();
        ctx.register_action("count", move |_: (), _| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(n as u64) }
        })
        .await
    }

    /// `caller`, `where`, `add`, `double`, `sleep` and `hang`.
    async fn register_requests(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("caller", |_: (), ctx| async move {
            Ok(match ctx.caller() {
                Caller::Remote(id) => id.to_string(),
                _ => "local".to_string(),
            })
        })
        .await?;
        ctx.register_action(
            "where",
            |_: (), ctx| async move { Ok(ctx.path().to_owned()) },
        )
        .await?;
        ctx.register_action("add", |r: AddRequest, _| async move { Ok(r.a + r.b) })
            .await?;
        ctx.register_action("double", |n: u64, _| async move { Ok(n * 2) })
            .await?;
        ctx.register_action("sleep", |ms: u64, _| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .await?;
        let dropped = self.dropped.clone();
        ctx.register_action("hang", move |_: (), _| {
            let guard = DropSignal(dropped.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .await
    }

    /// `fail` and `panic`.
    async fn register_failures(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("fail", |_: (), _| async {
            Err::<(), _>(Error::new(FAIL_CODE, FAIL_MESSAGE))
        })
        .await?;
        ctx.register_action("panic", |message: String, _| async move {
            if true {
                panic!("{message}");
            }
            Ok(())
        })
        .await
    }

    /// `blob` and `len`.
    async fn register_sizes(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("blob", |n: u64, _| async move {
            Ok(vec![7u8; usize::try_from(n).unwrap()])
        })
        .await?;
        ctx.register_action("len", |b: Vec<u8>, _| async move { Ok(b.len() as u64) })
            .await
    }

    /// `items/{id}` and `items/special`.
    async fn register_templates(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("items/{id}", |_: (), ctx| async move {
            Ok(format!("item {}", ctx.param("id").unwrap_or("?")))
        })
        .await?;
        ctx.register_action("items/special", |_: (), _| async {
            Ok(String::from("special"))
        })
        .await
    }

    /// `stream/count`, `stream/sum`, `stream/echo`, `stream/fail`, `stream/endless`.
    async fn register_streams(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        use futures::StreamExt as _;
        ctx.register_stream(
            "stream/count",
            CallKind::ServerStreaming,
            |mut req: Streaming<u64>, _| async move {
                let n = req.message().await?.unwrap_or(0);
                Ok(futures::stream::iter((0..n).map(Ok)))
            },
        )
        .await?;
        ctx.register_stream(
            "stream/sum",
            CallKind::ClientStreaming,
            |mut items: Streaming<u64>, _| async move {
                let mut sum = 0u64;
                while let Some(n) = items.message().await? {
                    sum = sum.wrapping_add(n);
                }
                Ok(runar::stream_once(Ok(sum)))
            },
        )
        .await?;
        ctx.register_stream(
            "stream/echo",
            CallKind::Bidi,
            |items: Streaming<u64>, _| async move { Ok(items) },
        )
        .await?;
        ctx.register_stream(
            "stream/fail",
            CallKind::ServerStreaming,
            |mut req: Streaming<u64>, _| async move {
                let n = req.message().await?.unwrap_or(0);
                let failure = Err(Error::new(FAIL_CODE, FAIL_MESSAGE));
                Ok(futures::stream::iter((0..n).map(Ok).chain(Some(failure))))
            },
        )
        .await?;
        ctx.register_stream(
            "stream/panic",
            CallKind::ServerStreaming,
            |mut req: Streaming<u64>, _| async move {
                let n = req.message().await?.unwrap_or(0);
                Ok(futures::stream::iter(0..=n).map(move |i| {
                    assert!(i < n, "the reply stream panics after {n} messages");
                    Ok(i)
                }))
            },
        )
        .await?;
        ctx.register_stream(
            "stream/twice",
            CallKind::ClientStreaming,
            |mut items: Streaming<u64>, _| async move {
                let mut count = 0u64;
                while items.message().await?.is_some() {
                    count += 1;
                }
                Ok(futures::stream::iter([Ok(count), Ok(0)]))
            },
        )
        .await?;
        let (dropped, pulled) = (self.dropped.clone(), self.pulled.clone());
        ctx.register_stream(
            "stream/endless",
            CallKind::ServerStreaming,
            move |_: Streaming<()>, _| {
                let guard = StreamDropSignal(dropped.clone());
                let pulled = pulled.clone();
                async move {
                    Ok(futures::stream::iter(0u64..).map(move |n| {
                        let _ = &guard;
                        pulled.fetch_add(1, Ordering::SeqCst);
                        Ok(n)
                    }))
                }
            },
        )
        .await
    }
}
