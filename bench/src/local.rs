//! A local request through the node against a direct call of the same async fn (the same
//! scenario as `runar-runtime/benches/local.rs`).

use std::hint::black_box;
use std::time::Instant;

use runar::{AbstractService, LifecycleContext, Node, NodeConfig};

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddRequest {
    #[prost(double, tag = "1")]
    a: f64,
    #[prost(double, tag = "2")]
    b: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddReply {
    #[prost(double, tag = "1")]
    sum: f64,
}

async fn add(req: AddRequest) -> runar::Result<AddReply> {
    Ok(AddReply { sum: req.a + req.b })
}

struct Math;

impl AbstractService for Math {
    fn name(&self) -> &str {
        "Math"
    }
    fn path(&self) -> &str {
        "math"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("add", |req: AddRequest, _ctx| add(req))
            .await
    }
}

/// Nanoseconds per call: (direct call, node request), each the median of `rounds` rounds.
pub async fn measure(iters: u32, rounds: usize) -> (f64, f64) {
    let node = Node::new(NodeConfig::new("local", "bench"))
        .await
        .expect("node");
    node.add_service(Math).await.expect("service");
    node.start().await.expect("start");
    let req = AddRequest { a: 1.0, b: 2.0 };
    let mut direct = Vec::new();
    let mut via_node = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..iters {
            black_box(add(black_box(req.clone())).await.expect("add"));
        }
        direct.push(t0.elapsed().as_nanos() as f64 / f64::from(iters));
        let t0 = Instant::now();
        for _ in 0..iters {
            let r: AddReply = node
                .request("math/add", black_box(req.clone()))
                .await
                .expect("math/add");
            black_box(r);
        }
        via_node.push(t0.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    let _ = node.stop().await;
    (median(direct), median(via_node))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
