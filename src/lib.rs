//! # Runar: a schema-first service framework
//!
//! Describe a service once, as a `.proto` file compiled in `build.rs` (see `runar-build`) or as
//! a Rust trait or impl block annotated with [`#[runar::service]`](service). Code generation
//! gives typed handlers and typed clients; a [`Node`] hosts services and routes every call, to a
//! local handler in memory or to a remote node over QUIC, with the same typed API.
//!
//! ```
//! use runar::{AbstractService, LifecycleContext, Node, NodeConfig};
//!
//! struct Math;
//! impl AbstractService for Math {
//!     fn name(&self) -> &str { "Math" }
//!     fn path(&self) -> &str { "math" }
//!     async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
//!         ctx.register_action("double", |x: f64, _ctx| async move { Ok(x * 2.0) }).await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> runar::Result<()> {
//! let node = Node::new(NodeConfig::new("node-a", "demo")).await?;
//! node.add_service(Math).await?;
//! node.start().await?;
//! let y: f64 = node.request("math/double", 21.0f64).await?;
//! assert_eq!(y, 42.0);
//! node.stop().await
//! # }
//! ```
//!
//! # What you write against
//!
//! * [`#[runar::service]`](service) on a trait or an impl block, or `runar-build` from a
//!   `.proto` file, with [`include_proto!`]: typed servers and clients.
//! * [`Node`] and [`NodeConfig`]: host services, [`request`](Node::request),
//!   [`publish`](Node::publish), [`subscribe`](Node::subscribe); per-call [`RequestOptions`],
//!   [`PublishOptions`], [`SubscribeOptions`].
//! * [`AbstractService`] and the contexts its handlers get ([`LifecycleContext`],
//!   [`RequestContext`], [`EventContext`], [`Caller`]).
//! * The network as configuration: [`NetworkConfig`], [`NetworkKey`], [`DiscoveryOptions`],
//!   [`NodeId`].
//! * [`Error`], [`Code`], [`Result`]; [`Value`] and [`Payload`] for dynamic use; [`prost`].
//!
//! The wire protocol, the QUIC transport and discovery are internal; the `codegen` module that
//! generated code uses is hidden.

pub use prost;
#[allow(unused_imports, unreachable_pub)] // empty until the macros land
pub use runar_macros::*;
/// A labelled field's value: open in memory, sealed on the wire (see [`seal`]).
pub use runar_runtime::seal::Sealed;
pub use runar_runtime::*;

/// Includes the Rust code `runar-build` generated for a protobuf package.
///
/// ```ignore
/// pub mod shop { runar::include_proto!("shop"); }
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), concat!("/", $package, ".rs")));
    };
}
