//! Code-first services with `#[runar::service]`: a trait and an impl block on one node.
//!
//! `cargo run --example macro_service`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use runar::{Node, NodeConfig};

/// Summary statistics of some numbers.
#[derive(Clone, PartialEq, runar::prost::Message)]
pub struct StatsRequest {
    /// The numbers.
    #[prost(double, repeated, tag = "1")]
    pub values: Vec<f64>,
}

/// The statistics.
#[derive(Clone, PartialEq, runar::prost::Message)]
pub struct StatsReply {
    /// How many numbers.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Their mean.
    #[prost(double, tag = "2")]
    pub mean: f64,
}

/// Arithmetic, declared as a trait.
#[runar::service(path = "math")]
pub trait Math {
    /// Adds two numbers.
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64>;
    /// Counts and averages numbers (a prost message in, a prost message out).
    async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply>;
}

struct MathImpl;

impl Math for MathImpl {
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply> {
        let count = req.values.len() as u64;
        let mean = if count == 0 {
            0.0
        } else {
            req.values.iter().sum::<f64>() / count as f64
        };
        Ok(StatsReply { count, mean })
    }
}

/// A calculator, declared as an impl block; it also counts `math/computed` events.
#[derive(Clone, Default)]
struct Calc {
    seen: Arc<AtomicU64>,
}

#[runar::service(path = "calc")]
impl Calc {
    /// Multiplies two numbers and publishes the product on `math/computed`.
    #[action]
    async fn mul(&self, ctx: runar::RequestContext, a: f64, b: f64) -> runar::Result<f64> {
        let product = a * b;
        ctx.publish("math/computed", product).await?;
        Ok(product)
    }

    /// Greets someone, optionally loudly.
    #[action("greet")]
    async fn hello(&self, name: String, loud: Option<bool>) -> runar::Result<String> {
        let text = format!("hello, {name}");
        Ok(if loud.unwrap_or(false) {
            text.to_uppercase()
        } else {
            text
        })
    }

    /// How many `math/computed` events arrived.
    #[action]
    async fn seen(&self) -> runar::Result<u64> {
        Ok(self.seen.load(Ordering::SeqCst))
    }

    #[subscribe("math/computed")]
    async fn on_computed(&self, value: f64) -> runar::Result<()> {
        println!("event math/computed: {value}");
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> runar::Result<()> {
    let node = Node::new(NodeConfig::new("example", "demo")).await?;
    node.add_service(MathServer::new(MathImpl)).await?;
    node.add_service(Calc::default()).await?;
    node.start().await?;
    println!("actions: {:?}", node.actions());

    let math = MathClient::new(node.clone()).with_timeout(Duration::from_secs(2));
    println!("math.add(1, 2) = {}", math.add(1.0, 2.0).await?);
    let stats = math
        .stats(StatsRequest {
            values: vec![1.0, 2.0, 6.0],
        })
        .await?;
    println!("math.stats([1, 2, 6]) = {stats:?}");

    let calc = CalcClient::new(node.clone());
    println!("calc.mul(6, 7) = {}", calc.mul(6.0, 7.0).await?);
    println!(
        "calc.hello(\"runar\", loud) = {}",
        calc.hello("runar".into(), Some(true)).await?
    );

    // The subscription runs on its own task: wait for it, with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while calc.seen().await? == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(runar::Error::deadline_exceeded("the event never arrived"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("calc.seen() = {}", calc.seen().await?);

    node.stop().await
}
