//! Service lifecycle: init, start and stop order, failures, duplicate paths, registry events,
//! and a service added or removed while the node runs, seen from another node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixture::{AddRequest, Fixture};
use common::{next, pair};
use runar::{AbstractService, Code, Error, LifecycleContext, Node, NodeConfig, ServiceState};
use tokio::sync::mpsc;

async fn node() -> Node {
    Node::new(NodeConfig::new("test-node", "test"))
        .await
        .unwrap()
}

/// Records its lifecycle calls: the test is about their order, so it is not the fixture.
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

#[tokio::test]
async fn a_service_added_after_start_is_callable_remotely_and_leaves_when_removed() {
    let (a, b, _) = pair().await;
    let added = Instant::now();
    a.add_service(Fixture::new("a").0.at("calc")).await.unwrap();
    // add_service returns once connected peers have acknowledged the change.
    let sum: f64 = b
        .request("calc/add", AddRequest { a: 1.0, b: 2.0 })
        .await
        .unwrap();
    assert_eq!(sum, 3.0);
    println!("late service callable remotely after {:?}", added.elapsed());
    assert!(added.elapsed() < Duration::from_secs(1));
    a.remove_service("calc").await.unwrap();
    let err = b
        .request::<_, f64>("calc/add", AddRequest { a: 1.0, b: 2.0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
