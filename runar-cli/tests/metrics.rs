//! The node's metrics: through the `metrics` facade to a recorder, and as Prometheus text
//! fetched with a real HTTP GET. (Here because this crate's tests turn the facade's `metrics`
//! and `prometheus` features on.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use runar::{AbstractService, Code, Error, LifecycleContext, Node, NodeConfig, PrometheusOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Math;

impl AbstractService for Math {
    fn name(&self) -> &str {
        "math"
    }
    fn path(&self) -> &str {
        "math"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("double", |n: u64, _| async move { Ok(n * 2) })
            .await?;
        ctx.register_action("fail", |_: (), _| async {
            Err::<(), _>(Error::new(Code::NotFound, "nothing"))
        })
        .await
    }
}

async fn busy_node(name: &str) -> Node {
    let node = Node::new(NodeConfig::new(name, "m").with_metrics_interval(None))
        .await
        .unwrap();
    node.add_service(Math).await.unwrap();
    node.start().await.unwrap();
    for n in 0..3u64 {
        let _: u64 = node.request("math/double", n).await.unwrap();
    }
    let _ = node.request::<(), ()>("math/fail", ()).await.unwrap_err();
    node
}

/// GETs `path` from `addr` with a plain HTTP/1.1 request; the whole answer.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

#[tokio::test]
async fn prometheus_text_over_a_real_http_get() {
    let node = busy_node("prom").await;
    let addr = node
        .serve_prometheus("127.0.0.1:0".parse().unwrap(), PrometheusOptions::default())
        .await
        .unwrap();
    let answer = get(addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("content-type: text/plain; version=0.0.4"));
    assert!(
        answer.contains("# TYPE runar_requests_total counter\n"),
        "{answer}"
    );
    assert!(
        answer.contains("runar_requests_total{node=\"prom\",path=\"math/double\"} 3\n"),
        "{answer}"
    );
    assert!(
        answer.contains(
            "runar_request_errors_total{node=\"prom\",path=\"math/fail\",code=\"NotFound\"} 1\n"
        ),
        "{answer}"
    );
    assert!(answer.contains("runar_events_published_total{node=\"prom\"} "));
    assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    // A request head over the limit is refused, not buffered.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let huge = format!("GET /metrics HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(20_000));
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    // The 431 may be lost to the reset of a close with unread bytes; the endpoint goes on.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 200 OK"));
    node.stop().await.unwrap();
}

/// A recorder that keeps the last value of each counter and gauge, by `name{labels}`.
#[derive(Clone, Default)]
struct Values(Arc<Mutex<HashMap<String, f64>>>);

struct Cell {
    key: String,
    values: Values,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .values
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.values
            .0
            .lock()
            .unwrap()
            .insert(self.key.clone(), value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self
            .values
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self
            .values
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.values
            .0
            .lock()
            .unwrap()
            .insert(self.key.clone(), value);
    }
}

impl Values {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        Arc::new(Cell {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            values: self.clone(),
        })
    }
}

impl Recorder for Values {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn metrics_reach_the_facade_s_recorder() {
    let values = Values::default();
    metrics::set_global_recorder(values.clone()).unwrap();
    let node = busy_node("facade").await;
    node.record_metrics();
    let read = |key: &str| values.0.lock().unwrap().get(key).copied();
    assert_eq!(
        read("runar_requests_total{node=facade,path=math/double}"),
        Some(3.0)
    );
    assert_eq!(
        read("runar_requests_in_flight{node=facade,path=math/double}"),
        Some(0.0)
    );
    assert_eq!(
        read("runar_request_errors_total{node=facade,path=math/fail,code=NotFound}"),
        Some(1.0)
    );
    // The node records by itself every `metrics_interval` while it runs.
    let ticking = Node::new(
        NodeConfig::new("ticking", "m").with_metrics_interval(Some(Duration::from_millis(10))),
    )
    .await
    .unwrap();
    ticking.add_service(Math).await.unwrap();
    ticking.start().await.unwrap();
    let _: u64 = ticking.request("math/double", 1u64).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while read("runar_requests_total{node=ticking,path=math/double}") != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.stop().await.unwrap();
    ticking.stop().await.unwrap();
}
