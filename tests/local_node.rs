//! A complete local node: lifecycle, requests, errors, events, late serialization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runar::{
    AbstractService, BroadcastMode, Code, Error, LifecycleContext, Node, NodeConfig,
    PublishOptions, RequestOptions, ServiceState, SubscribeOptions,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

async fn node() -> Node {
    Node::new(NodeConfig::new("test-node", "test"))
        .await
        .unwrap()
}

/// Receives the next item, failing the test after a deadline.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting")
        .expect("channel closed")
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

struct Recorder {
    path: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    fail_init: bool,
}

impl Recorder {
    fn record(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{what} {}", self.path));
    }
}

impl AbstractService for Recorder {
    fn name(&self) -> &str {
        self.path
    }
    fn path(&self) -> &str {
        self.path
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        self.record("init");
        if self.fail_init {
            return Err(Error::new(Code::Unavailable, "database is down"));
        }
        ctx.register_action("ping", |_: (), _ctx| async { Ok(String::from("pong")) })
            .await
    }
    async fn start(&self, _ctx: &LifecycleContext) -> runar::Result<()> {
        self.record("start");
        Ok(())
    }
    async fn stop(&self, _ctx: &LifecycleContext) -> runar::Result<()> {
        self.record("stop");
        Ok(())
    }
}

fn recorder(path: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Recorder {
    Recorder {
        path,
        log: log.clone(),
        fail_init: false,
    }
}

#[tokio::test]
async fn lifecycle_inits_all_then_starts_all_and_stops_in_reverse() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let node = node().await;
    for path in ["a", "b", "c"] {
        node.add_service(recorder(path, &log)).await.unwrap();
    }
    assert!(log.lock().unwrap().is_empty(), "nothing runs before start");
    node.start().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "init a", "init b", "init c", "start a", "start b", "start c"
        ]
    );

    // A service added after start is initialized and started at once.
    node.add_service(recorder("d", &log)).await.unwrap();
    let pong: String = node.request("d/ping", ()).await.unwrap();
    assert_eq!(pong, "pong");
    assert!(
        node.services()
            .await
            .iter()
            .all(|s| s.state == ServiceState::Running)
    );

    log.lock().unwrap().clear();
    node.stop().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["stop d", "stop c", "stop b", "stop a"]
    );
    let err = node.request::<(), String>("a/ping", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_failing_init_is_reported_with_its_error() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let node = node().await;
    node.add_service(recorder("ok", &log)).await.unwrap();
    node.add_service(Recorder {
        path: "broken",
        log: log.clone(),
        fail_init: true,
    })
    .await
    .unwrap();
    let err = node.start().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("broken"), "{err}");
    assert!(err.message().contains("database is down"), "{err}");
    let states: Vec<_> = node
        .services()
        .await
        .into_iter()
        .map(|s| (s.path, s.state))
        .collect();
    assert!(
        states.contains(&("broken".into(), ServiceState::Failed)),
        "{states:?}"
    );
    assert!(!node.is_running());

    // Added after start, a failing service is refused with its error and not kept.
    let node = self::node().await;
    node.start().await.unwrap();
    let err = node
        .add_service(Recorder {
            path: "late",
            log: log.clone(),
            fail_init: true,
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("database is down"), "{err}");
    assert!(node.services().await.is_empty());
}

#[tokio::test]
async fn duplicate_service_paths_are_refused() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let node = node().await;
    node.add_service(recorder("a", &log)).await.unwrap();
    let err = node.add_service(recorder("a", &log)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

// ---------------------------------------------------------------------------------------------
// Requests and errors

/// A hand-written service with one action per behaviour under test.
struct Behaviours {
    calls: Arc<AtomicUsize>,
}

impl AbstractService for Behaviours {
    fn name(&self) -> &str {
        "Behaviours"
    }
    fn path(&self) -> &str {
        "b"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("slow", |d: u64, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(d)).await;
            Ok(d)
        })
        .await?;
        ctx.register_action("fail", |_: (), _ctx| async {
            Err::<(), _>(Error::new(Code::NotFound, "no item 7"))
        })
        .await?;
        ctx.register_action("panic", |_: (), _ctx| async {
            if true {
                panic!("handler bug");
            }
            Ok(())
        })
        .await?;
        let calls = self.calls.clone();
        ctx.register_action("count", move |_: (), _ctx| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(n as u64) }
        })
        .await?;
        ctx.register_action("items/{id}", |_: (), ctx| async move {
            Ok(format!("item {}", ctx.param("id").unwrap_or("?")))
        })
        .await?;
        ctx.register_action("items/special", |_: (), _ctx| async {
            Ok(String::from("special"))
        })
        .await?;
        ctx.register_action(
            "where",
            |_: (), ctx| async move { Ok(ctx.path().to_owned()) },
        )
        .await
    }
}

async fn behaviours(config: NodeConfig) -> Node {
    let node = Node::new(config).await.unwrap();
    node.add_service(Behaviours {
        calls: Arc::default(),
    })
    .await
    .unwrap();
    node.start().await.unwrap();
    node
}

#[tokio::test]
async fn a_slow_handler_gives_deadline_exceeded_shortly_after_the_timeout() {
    let node =
        behaviours(NodeConfig::new("n", "test").with_request_timeout(Duration::from_millis(200)))
            .await;
    // The node's default timeout.
    let started = Instant::now();
    let err = node
        .request::<u64, u64>("b/slow", 10_000)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");

    // A per-call timeout overrides it, both ways.
    let started = Instant::now();
    let err = node
        .request_with::<u64, u64>(
            "b/slow",
            10_000,
            RequestOptions::timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_millis(1500));
    let ok: u64 = node
        .request_with(
            "b/slow",
            300u64,
            RequestOptions::timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(ok, 300);
}

#[tokio::test]
async fn a_missing_path_fails_at_once_with_not_found() {
    let node = behaviours(NodeConfig::new("n", "test")).await; // 30 s default timeout
    let started = Instant::now();
    let err = node.request::<(), ()>("b/nothing", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("b/nothing"), "{err}");
    let err = node.request::<(), ()>("nobody/home", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = node
        .request::<(), ()>("other:b/count", ())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another network has no such action"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_paths_give_invalid_argument() {
    let node = behaviours(NodeConfig::new("n", "test")).await;
    for bad in ["", "b//count", "b/count/", "a:b:c", "b/*", "b/>"] {
        let err = node.request::<(), ()>(bad, ()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    let err = node.publish("x/{y}", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = node
        .subscribe("x/>/y", |_: (), _| async { Ok(()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_handler_error_keeps_its_code_and_message() {
    let node = behaviours(NodeConfig::new("n", "test")).await;
    let err = node.request::<(), ()>("b/fail", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no item 7");
}

#[tokio::test]
async fn a_panicking_handler_gives_internal_and_the_node_keeps_serving() {
    let node = behaviours(NodeConfig::new("n", "test")).await;
    let err = node.request::<(), ()>("b/panic", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("handler bug"), "{err}");
    let n: u64 = node.request("b/count", ()).await.unwrap();
    assert_eq!(n, 1);
    let err = node.request::<(), ()>("b/panic", ()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let n: u64 = node.request("b/count", ()).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn templates_pass_parameters_and_literals_win() {
    let node = behaviours(NodeConfig::new("n", "test")).await;
    let s: String = node.request("b/items/42", ()).await.unwrap();
    assert_eq!(s, "item 42");
    let s: String = node.request("b/items/special", ()).await.unwrap();
    assert_eq!(s, "special");
    let s: String = node.request("test:b/where", ()).await.unwrap();
    assert_eq!(s, "b/where");
}

#[tokio::test]
async fn a_wrong_request_type_is_invalid_argument() {
    let node = behaviours(NodeConfig::new("n", "test")).await;
    // `b/items/{id}` takes `()`: a string is a different schema, but an empty message decodes
    // as anything, so send something that cannot be `u64`-shaped for `b/slow`.
    let err = node
        .request::<String, u64>("b/slow", "not a number".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Events

#[tokio::test]
async fn wildcards_and_templates_in_subscriptions() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for pattern in ["math/>", "math/*", "math/{op}/done", "other/x"] {
        let tx = tx.clone();
        node.subscribe(pattern, move |v: f64, ctx| {
            let tx = tx.clone();
            async move {
                let op = ctx.param("op").map(str::to_owned);
                tx.send((pattern, ctx.topic().to_owned(), op, v)).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    node.publish("math/add/done", 1.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|g| g.0);
    assert_eq!(got[0], ("math/>", "math/add/done".into(), None, 1.0));
    assert_eq!(
        got[1],
        (
            "math/{op}/done",
            "math/add/done".into(),
            Some("add".into()),
            1.0
        )
    );
    node.publish("math/add", 2.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|g| g.0);
    assert_eq!((got[0].0, got[1].0), ("math/*", "math/>"));
    // A control event on another topic arrives next: nothing else was delivered.
    node.publish("other/x", 3.0f64).await.unwrap();
    assert_eq!(next(&mut rx).await.0, "other/x");
}

#[tokio::test]
async fn one_subscriber_sees_a_publishers_events_in_order() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("seq", move |n: u64, _| {
        let tx = tx.clone();
        async move {
            tx.send(n).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    for n in 0..500u64 {
        node.publish("seq", n).await.unwrap();
    }
    for n in 0..500u64 {
        assert_eq!(next(&mut rx).await, n);
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    let sub = node
        .subscribe("news", move |s: String, _| {
            let tx = tx.clone();
            async move {
                tx.send(format!("sub: {s}")).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    node.subscribe("control", move |s: String, _| {
        let tx = tx2.clone();
        async move {
            tx.send(format!("control: {s}")).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    node.publish("news", String::from("one")).await.unwrap();
    assert_eq!(next(&mut rx).await, "sub: one");
    node.unsubscribe(&sub).await.unwrap();
    node.publish("news", String::from("two")).await.unwrap();
    node.publish("control", String::from("three"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, "control: three");
    assert!(rx.try_recv().is_err(), "nothing after unsubscribe");
    assert_eq!(
        node.unsubscribe(sub).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn retained_events_reach_a_late_subscriber() {
    let node = node().await;
    node.start().await.unwrap();
    let retain = PublishOptions::default().with_retain_for(Duration::from_secs(60));
    node.publish_with("sensors/temp", 20.5f64, retain.clone())
        .await
        .unwrap();
    node.publish_with("sensors/temp", 21.5f64, retain.clone())
        .await
        .unwrap(); // latest wins
    node.publish_with("sensors/hum", 40.0f64, retain)
        .await
        .unwrap();
    node.publish("sensors/wind", 3.0f64).await.unwrap(); // not retained
    node.publish_with(
        "sensors/old",
        1.0f64,
        PublishOptions::default().with_retain_for(Duration::ZERO),
    )
    .await
    .unwrap(); // expired at once

    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx2 = tx.clone();
    node.subscribe_with(
        "sensors/>",
        SubscribeOptions::include_past(),
        move |v: f64, ctx| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.topic().to_owned(), v, ctx.is_retained()))
                    .unwrap();
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("sensors/hum".into(), 40.0, true),
            ("sensors/temp".into(), 21.5, true)
        ]
    );
    // Without include_past, retained events are not replayed.
    node.subscribe("sensors/>", move |v: f64, ctx| {
        let tx = tx2.clone();
        async move {
            tx.send((format!("plain {}", ctx.topic()), v, ctx.is_retained()))
                .unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    node.publish("sensors/live", 7.0f64).await.unwrap();
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("plain sensors/live".into(), 7.0, false),
            ("sensors/live".into(), 7.0, false)
        ]
    );
    assert!(rx.try_recv().is_err());
}

struct Listener {
    path: &'static str,
    tx: mpsc::UnboundedSender<&'static str>,
}

impl AbstractService for Listener {
    fn name(&self) -> &str {
        self.path
    }
    fn path(&self) -> &str {
        self.path
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let (path, tx) = (self.path, self.tx.clone());
        ctx.subscribe("orders/created", move |_: u64, _| {
            let tx = tx.clone();
            async move {
                tx.send(path).unwrap();
                Ok(())
            }
        })
        .await
        .map(|_| ())
    }
}

#[tokio::test]
async fn broadcast_modes_on_one_node() {
    let node = node().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for path in ["billing", "shipping"] {
        node.add_service(Listener {
            path,
            tx: tx.clone(),
        })
        .await
        .unwrap();
    }
    node.start().await.unwrap();
    for mode in [
        BroadcastMode::All,
        BroadcastMode::OnePerService,
        BroadcastMode::LocalOnly,
    ] {
        node.publish_with(
            "orders/created",
            1u64,
            PublishOptions::default().with_broadcast(mode),
        )
        .await
        .unwrap();
        let mut got = [next(&mut rx).await, next(&mut rx).await];
        got.sort();
        assert_eq!(got, ["billing", "shipping"], "{mode:?}");
    }
    assert!(rx.try_recv().is_err());
    // A removed service's subscriptions go with it.
    node.remove_service("billing").await.unwrap();
    node.publish("orders/created", 2u64).await.unwrap();
    assert_eq!(next(&mut rx).await, "shipping");
}

#[tokio::test]
async fn a_failing_or_panicking_event_handler_does_not_end_the_subscription() {
    let node = node().await;
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("jobs", move |n: u64, _| {
        let tx = tx.clone();
        async move {
            match n {
                0 => Err(Error::internal("bad job")),
                1 => panic!("worse job"),
                n => {
                    tx.send(n).unwrap();
                    Ok(())
                }
            }
        }
    })
    .await
    .unwrap();
    for n in 0..3u64 {
        node.publish("jobs", n).await.unwrap();
    }
    assert_eq!(next(&mut rx).await, 2);
}

// ---------------------------------------------------------------------------------------------
// Late serialization

static ENCODES: AtomicUsize = AtomicUsize::new(0);
static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A message that counts its encodes and decodes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counted {
    n: i64,
}

impl prost::Message for Counted {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        if self.n != 0 {
            prost::encoding::int64::encode(1, &self.n, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        if tag == 1 {
            prost::encoding::int64::merge(wire_type, &mut self.n, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }
    fn encoded_len(&self) -> usize {
        if self.n != 0 {
            prost::encoding::int64::encoded_len(1, &self.n)
        } else {
            0
        }
    }
    fn clear(&mut self) {
        self.n = 0;
    }
}

/// Same schema as `Counted`, another Rust type (as two crates generated from one .proto).
#[derive(Clone, PartialEq, prost::Message)]
struct Twin {
    #[prost(int64, tag = "1")]
    n: i64,
}

struct Doubler;

impl AbstractService for Doubler {
    fn name(&self) -> &str {
        "Doubler"
    }
    fn path(&self) -> &str {
        "doubler"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("double", |c: Counted, _| async move {
            Ok(Counted { n: c.n * 2 })
        })
        .await
    }
}

#[tokio::test]
async fn a_local_typed_request_performs_zero_encodes() {
    let node = node().await;
    node.add_service(Doubler).await.unwrap();
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("counted", move |c: Counted, _| {
        let tx = tx.clone();
        async move {
            tx.send(c.n).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();

    let (e0, d0) = (
        ENCODES.load(Ordering::SeqCst),
        DECODES.load(Ordering::SeqCst),
    );
    for i in 1..=100 {
        let r: Counted = node
            .request("doubler/double", Counted { n: i })
            .await
            .unwrap();
        assert_eq!(r.n, 2 * i);
    }
    node.publish("counted", Counted { n: 5 }).await.unwrap();
    assert_eq!(next(&mut rx).await, 5);
    assert_eq!(
        ENCODES.load(Ordering::SeqCst) - e0,
        0,
        "no encode on the local path"
    );
    assert_eq!(
        DECODES.load(Ordering::SeqCst) - d0,
        0,
        "no decode on the local path"
    );

    // Control: a caller with another Rust type for the same schema falls back to one encode
    // of the request (and one of the response), so the counter above can see encodes.
    let r: Twin = node
        .request("doubler/double", Twin { n: 21 })
        .await
        .unwrap();
    assert_eq!(r.n, 42);
    assert_eq!(
        ENCODES.load(Ordering::SeqCst) - e0,
        1,
        "only the response is re-encoded"
    );
}

#[tokio::test]
async fn service_state_changes_are_registry_events() {
    let node = node().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("$registry/service/>", move |e: runar::ServiceEvent, ctx| {
        let tx = tx.clone();
        async move {
            tx.send((ctx.topic().to_owned(), e.path, e.state)).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    node.add_service(recorder("a", &log)).await.unwrap();
    node.start().await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        (
            "$registry/service/a/running".into(),
            "a".into(),
            "running".into()
        )
    );
    node.remove_service("a").await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        (
            "$registry/service/a/stopped".into(),
            "a".into(),
            "stopped".into()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded paths

#[tokio::test]
async fn paths_over_the_length_or_depth_limit_give_invalid_argument() {
    let node = node().await;
    node.start().await.unwrap();
    // 400,001 bytes and 200,001 segments: refused before anything walks it.
    let huge = format!("{}a", "a/".repeat(200_000));
    let deep = vec!["s"; 33].join("/"); // short, but one segment over the default 32
    for path in [&huge, &deep] {
        let e = node
            .subscribe(path.as_str(), |_: u64, _| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = node.publish(path.as_str(), 1u64).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = node
            .request::<u64, u64>(path.as_str(), 1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }
    let e = node
        .subscribe(huge.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(e.message().contains("max_path_len"), "{e}");
    assert!(e.message().len() < 200, "the error quotes only the start");
    let e = node
        .subscribe(deep.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(e.message().contains("max_path_depth"), "{e}");
    // At the limit is fine.
    node.subscribe(vec!["s"; 32].join("/"), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.stop().await.unwrap();

    let e = Node::new(NodeConfig::new("n", "test").with_path_limits(0, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// With the limits raised, a 200,000-segment subscription is routed, removed and dropped with
/// the node: nothing on the way recurses once per segment.
#[tokio::test]
async fn deep_paths_within_raised_limits_route_and_drop_without_overflow() {
    let config = NodeConfig::new("deep", "test").with_path_limits(1 << 20, 300_000);
    let node = Node::new(config).await.unwrap();
    node.start().await.unwrap();
    let pattern = format!("{}>", "a/".repeat(199_999));
    let topic = format!("{}a", "a/".repeat(200_000));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = node
        .subscribe(pattern.as_str(), move |n: u64, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
                Ok(())
            }
        })
        .await
        .unwrap();
    node.publish(topic.as_str(), 7u64).await.unwrap();
    assert_eq!(next(&mut rx).await, 7);
    node.unsubscribe(sub).await.unwrap();
    // Left in place: stopping the node drops the registry with them.
    node.subscribe(pattern.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.subscribe(topic.as_str(), |_: u64, _| async { Ok(()) })
        .await
        .unwrap();
    node.stop().await.unwrap();
    drop(node);
}
