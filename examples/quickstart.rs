//! Quick start: one local node, a service, typed requests and events.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use runar::{
    AbstractService, Code, Error, LifecycleContext, Node, NodeConfig, PublishOptions,
    SubscribeOptions,
};

/// The request of `math/add`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddRequest {
    /// First operand.
    #[prost(double, tag = "1")]
    pub a: f64,
    /// Second operand.
    #[prost(double, tag = "2")]
    pub b: f64,
}

/// A hand-written service. (Generated code from a `.proto` or `#[runar::service]` writes this
/// for you; see the `proto_service` and `macro_service` examples.)
struct Math;

impl AbstractService for Math {
    fn name(&self) -> &str {
        "Math"
    }
    fn path(&self) -> &str {
        "math"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("add", |req: AddRequest, ctx| async move {
            let sum = req.a + req.b;
            ctx.publish("math/computed", sum).await?;
            Ok(sum)
        })
        .await?;
        ctx.register_action("divide", |req: AddRequest, _ctx| async move {
            if req.b == 0.0 {
                return Err(Error::new(Code::InvalidArgument, "division by zero"));
            }
            Ok(req.a / req.b)
        })
        .await?;
        ctx.register_action("constants/{name}", |_: (), ctx| async move {
            match ctx.param("name") {
                Some("pi") => Ok(std::f64::consts::PI),
                Some("e") => Ok(std::f64::consts::E),
                other => Err(Error::not_found(format!("no constant {other:?}"))),
            }
        })
        .await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let node = Node::new(
        NodeConfig::new("quickstart", "demo").with_request_timeout(Duration::from_secs(5)),
    )
    .await?;
    node.add_service(Math).await?;
    node.start().await?;

    // Events: a subscription with a wildcard; `tx` tells main when they arrive.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = node
        .subscribe("math/>", move |value: f64, ctx| {
            let tx = tx.clone();
            async move {
                println!("event    {} = {value}", ctx.topic());
                let _ = tx.send(());
                Ok(())
            }
        })
        .await?;

    // Typed requests: local handlers run in memory, nothing is serialized.
    let sum: f64 = node
        .request("math/add", AddRequest { a: 1.0, b: 2.0 })
        .await?;
    println!("request  math/add(1, 2) = {sum}");
    let pi: f64 = node.request("math/constants/pi", ()).await?;
    println!("request  math/constants/pi = {pi:.5}");
    // Errors keep their code and message.
    if let Err(err) = node
        .request::<_, f64>("math/divide", AddRequest { a: 1.0, b: 0.0 })
        .await
    {
        println!(
            "error    math/divide(1, 0) -> {} ({})",
            err.code(),
            err.message()
        );
    }
    if let Err(err) = node.request::<(), f64>("math/sqrt", ()).await {
        println!("error    math/sqrt -> {}", err.code());
    }
    rx.recv().await;

    // Retained events reach subscribers that come later.
    node.publish_with(
        "status/math",
        String::from("ready"),
        PublishOptions::default().with_retain_for(Duration::from_secs(60)),
    )
    .await?;
    let (tx, mut late) = tokio::sync::mpsc::unbounded_channel();
    node.subscribe_with(
        "status/>",
        SubscribeOptions::include_past(),
        move |s: String, ctx| {
            let tx = tx.clone();
            async move {
                println!(
                    "retained {} = {s} (retained: {})",
                    ctx.topic(),
                    ctx.is_retained()
                );
                let _ = tx.send(());
                Ok(())
            }
        },
    )
    .await?;
    late.recv().await;

    node.unsubscribe(sub).await?;
    println!("actions  {:?}", node.actions());
    node.stop().await?;
    Ok(())
}
