//! Runar's runtime: the [`Node`], routing, the registry, type-erased values, the QUIC transport,
//! discovery and security.
//!
//! Most users depend on the `runar` facade crate, which re-exports everything here.
//!
//! The modules follow the data's path: a [`value::Value`] is routed by a
//! [`routing::TopicPath`] through the registry to a handler, locally or over the network.

pub mod codegen;
pub mod discovery;
mod error;
pub mod network;
mod node;
mod registry;
pub mod routing;
mod service;
pub mod value;
pub mod wire;

pub use discovery::{DiscoveryOptions, MemoryHub};
pub use error::{Code, Error, Result};
pub use network::{NetworkConfig, NetworkKey, NodeId};
pub use node::{
    BroadcastMode, Node, NodeConfig, PeerEvent, PeerRefusedEvent, PublishOptions, RefusalReason,
    RequestOptions, ServiceEvent, SubscribeOptions, SubscriptionId,
};
pub use service::{
    AbstractService, ActionHandler, Caller, EventContext, EventHandler, LifecycleContext,
    RequestContext, ServiceInfo, ServiceState, action_handler, event_handler,
};
pub use value::{Payload, Value};
