//! Profiling driver: a tight loop of local requests (for callgrind or perf).
//!
//! `cargo build --release -p runar-runtime --example prof_local`, then
//! `valgrind --tool=callgrind target/release/examples/prof_local 20000`.
#![allow(missing_docs, clippy::unwrap_used)]
use runar_runtime::{AbstractService, LifecycleContext, Node, NodeConfig, Result};

#[derive(Clone, PartialEq, prost::Message)]
struct AddRequest {
    #[prost(double, tag = "1")]
    a: f64,
    #[prost(double, tag = "2")]
    b: f64,
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
        ctx.register_action("add", |r: AddRequest, _| async move { Ok(r.a + r.b) })
            .await
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::new(NodeConfig::new("p", "p")).await.unwrap();
        node.add_service(Math).await.unwrap();
        node.start().await.unwrap();
        let n: u64 = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000);
        let mut acc = 0.0;
        for _ in 0..n {
            let r: f64 = node
                .request("math/add", AddRequest { a: 1.0, b: 2.0 })
                .await
                .unwrap();
            acc += r;
        }
        println!("{acc}");
    });
}
