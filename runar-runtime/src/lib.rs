//! Runar's runtime: the [`Node`], routing, the registry, type-erased values, the QUIC transport,
//! discovery and security.
//!
//! Most users depend on the `runar` facade crate, which re-exports everything here.
//!
//! The modules follow the data's path: a [`value::Value`] is routed by a
//! [`routing::TopicPath`] through the registry to a handler, locally or over the network.
//!
//! # The public API
//!
//! * The node: [`Node`], [`NodeConfig`], the per-call options ([`RequestOptions`],
//!   [`PublishOptions`], [`SubscribeOptions`], [`BroadcastMode`]), [`SubscriptionId`], the
//!   `$registry` events it publishes ([`ServiceEvent`], [`PeerEvent`]), and its event counters
//!   ([`NodeStats`], [`SubscriptionStats`]).
//! * Streaming calls: [`Node::request_stream`], [`LifecycleContext::register_stream`],
//!   [`Streaming`] (the incoming messages), [`CallKind`], [`Stream`] (re-exported from
//!   `futures-core`), [`stream_once`].
//! * Services: [`AbstractService`] and its [`LifecycleContext`]; handlers get a
//!   [`RequestContext`] or an [`EventContext`] and know their [`Caller`]; [`ServiceInfo`],
//!   [`ServiceState`]; the type-erased [`ActionHandler`] / [`EventHandler`] and their typed
//!   adapters [`action_handler`] / [`event_handler`].
//! * Values and paths: [`Value`], [`Payload`], the [`value`] and [`routing`] modules.
//! * The network, as configuration: [`NetworkConfig`], [`NetworkKey`], [`DiscoveryOptions`]
//!   (with [`MulticastGroupSpec`] and the in-process [`MemoryHub`]), [`PeerLimits`], and [`NodeId`].
//! * Metadata and interceptors: [`Metadata`] (per call, per client, per publish; read in the
//!   handler's context), [`Interceptor`]s that see each [`Call`] on the calling and the serving
//!   side.
//! * Several networks per node (`NodeConfig::with_additional_network`, `Node::add_service_to`)
//!   and who may do what in each: the [`policy`] module (`Node::set_policy`).
//! * Sealed fields (end-to-end field encryption declared in the schema): the [`seal`] module
//!   ([`seal::Sealed`], [`seal::KeyResolver`], [`seal::Keyring`]).
//! * Errors: [`Error`], [`Code`], [`Result`].
//!
//! The protocol, the transport and discovery are internal. Generated code uses the hidden
//! `codegen` module.

#[doc(hidden)]
pub mod codegen;
mod coop;
mod discovery;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod lock;
mod log_limit;
mod metadata;
mod network;
mod node;
pub mod policy;
pub mod routing;
pub mod seal;
pub mod value;
mod wire;

pub use discovery::{DiscoveryOptions, MemoryHub, MulticastGroupSpec};
pub use error::{Code, Error, Result};
pub use futures::Stream;
pub use identity::{NodeId, ParseNodeIdError};
pub use metadata::{Metadata, MetadataValue, TRACEPARENT};
pub use network::{NetworkConfig, NetworkKey, PeerLimits, RefusalReason};
#[cfg(feature = "prometheus")]
pub use node::PrometheusOptions;
pub use node::service::{
    AbstractService, ActionHandler, Call, CallKind, Caller, EventContext, EventHandler,
    Interceptor, LifecycleContext, RequestContext, ServiceInfo, ServiceState, Streaming,
    action_handler, event_handler, stream_once,
};
pub use node::{
    BroadcastMode, Node, NodeConfig, NodeStats, PeerEvent, PeerRefusedEvent, PublishOptions,
    ReachableService, RequestOptions, ServiceEvent, SubscribeOptions, SubscriptionId,
    SubscriptionStats,
};
pub use value::{Payload, Value};

/// The built-in `$runar` introspection service every node runs (see
/// `proto/runar/v1/introspection.proto`): its action paths and typed messages. Call it on any
/// node with [`Node::request_on`], or through [`Node::describe_peer`] and
/// [`Node::list_schemas`]; a node answers for itself with [`Node::node_info`],
/// [`Node::service_list`], [`Node::peer_list`] and [`Node::stats_report`].
pub mod introspection {
    pub use crate::node::introspection::{INFO, PEERS, PING, SERVICE_PATH, SERVICES, STATS};
    pub use crate::wire::{
        ActionDescription, ActionStats, CallKind, EventDescription, NodeInfo, NodeInfoRequest,
        NodeStatsReport, NodeStatsRequest, PeerDescription, PeerList, PeerListRequest, PingReply,
        PingRequest, ServiceDescription, ServiceList, ServiceListRequest, SubscriptionReport,
    };
}

/// Protocol, transport and discovery internals, for Runar's own raw-client tests, fuzzing and
/// benchmarks. Not part of the API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::discovery::{Discovery, DiscoveryEvent, LocalPeer};
    pub use crate::identity::{NodeKeypair, verify};
    pub use crate::network::admission;
    pub use crate::network::{
        FRAME_HEADER_LEN, Incoming, Pending, Transport, TransportConfig, TransportError,
        peer_node_id, read_frame, write_frame,
    };
    /// The protocol messages (see `proto/runar/v1/README.md`).
    pub mod wire {
        pub use crate::wire::*;
    }
}
