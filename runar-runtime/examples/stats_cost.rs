#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
use runar_runtime::{AbstractService, LifecycleContext, Node, NodeConfig, Result};
use std::hint::black_box;
use std::time::Instant;
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
async fn add(req: AddRequest) -> Result<AddReply> {
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
    async fn init(&self, ctx: &LifecycleContext) -> Result<()> {
        ctx.register_action("add", |req: AddRequest, _ctx| add(req))
            .await
    }
}
fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::new(NodeConfig::new("local", "bench")).await.unwrap();
        node.add_service(Math).await.unwrap();
        node.start().await.unwrap();
        let req = AddRequest { a: 1.0, b: 2.0 };
        let mut v = Vec::new();
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..iters {
                let r: AddReply = node
                    .request("math/add", black_box(req.clone()))
                    .await
                    .unwrap();
                black_box(r);
            }
            v.push(t0.elapsed().as_nanos() as f64 / f64::from(iters));
        }
        v.sort_by(f64::total_cmp);
        println!("median {:.1} ns/call, min {:.1}", v[v.len() / 2], v[0]);
    });
}
