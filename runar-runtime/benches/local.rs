//! Local-path benchmarks: what the node adds over a direct call, event fan-out, and routing
//! cost against the number of registered actions.
//!
//! `cargo bench -p runar-runtime --bench local`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use runar_runtime::{AbstractService, LifecycleContext, Node, NodeConfig, PublishOptions, Result};
use tokio::runtime::Runtime;

#[derive(Clone, PartialEq, prost::Message)]
struct AddRequest {
    #[prost(double, tag = "1")]
    a: f64,
    #[prost(double, tag = "2")]
    b: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AddReply {
    #[prost(double, tag = "1")]
    sum: f64,
}

/// The handler both sides call.
async fn add(req: AddRequest) -> Result<AddReply> {
    Ok(AddReply { sum: req.a + req.b })
}

/// A service with `extra` filler actions besides `math/add` and `math/items/{id}`.
struct Math {
    extra: usize,
}

impl AbstractService for Math {
    fn name(&self) -> &str {
        "Math"
    }
    fn path(&self) -> &str {
        "math"
    }
    async fn init(&self, ctx: &LifecycleContext) -> Result<()> {
        ctx.register_action("add", |req: AddRequest, _ctx| add(req))
            .await?;
        ctx.register_action("items/{id}", |req: AddRequest, _ctx| add(req))
            .await?;
        for i in 0..self.extra {
            ctx.register_action(&format!("filler/{i}/op"), |req: AddRequest, _ctx| add(req))
                .await?;
            ctx.register_action(&format!("filler/{i}/{{id}}/op"), |req: AddRequest, _ctx| {
                add(req)
            })
            .await?;
        }
        Ok(())
    }
}

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

async fn math_node(extra: usize) -> Node {
    let node = Node::new(NodeConfig::new("bench", "bench")).await.unwrap();
    node.add_service(Math { extra }).await.unwrap();
    node.start().await.unwrap();
    node
}

fn request_vs_direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_request");
    for (name, rt) in runtimes() {
        let node = rt.block_on(math_node(0));
        let req = AddRequest { a: 1.0, b: 2.0 };
        group.bench_function(format!("direct_call/{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(add(black_box(req.clone())).await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function(format!("node_request/{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let r: AddReply = node
                            .request("math/add", black_box(req.clone()))
                            .await
                            .unwrap();
                        black_box(r);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn routing_scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for extra in [10usize, 10_000] {
        let node = rt.block_on(math_node(extra));
        let actions = node.actions().len();
        for (kind, path) in [("literal", "math/add"), ("template", "math/items/7")] {
            group.bench_function(format!("{kind}/{actions}_actions"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let r: AddReply = node
                                .request(path, AddRequest { a: 1.0, b: 2.0 })
                                .await
                                .unwrap();
                            black_box(r);
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

fn publish_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for (name, rt) in runtimes() {
        for subscribers in [1u64, 100] {
            let delivered = Arc::new(AtomicU64::new(0));
            let node = rt.block_on(async {
                let node = math_node(0).await;
                for _ in 0..subscribers {
                    let delivered = delivered.clone();
                    node.subscribe("math/computed", move |v: f64, _| {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        black_box(v);
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                }
                node
            });
            group.bench_function(format!("{subscribers}_subscribers/{name}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let target = delivered.load(Ordering::Relaxed) + iters * subscribers;
                        // Every event is counted: wait for room rather than drop.
                        let wait = PublishOptions::default().with_wait(Duration::MAX);
                        let start = Instant::now();
                        for _ in 0..iters {
                            node.publish_with("math/computed", 1.0f64, wait.clone())
                                .await
                                .unwrap();
                        }
                        // Measure until every subscriber has handled every event.
                        while delivered.load(Ordering::Relaxed) < target {
                            tokio::task::yield_now().await;
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = request_vs_direct, routing_scale, publish_fanout
}
criterion_main!(benches);
