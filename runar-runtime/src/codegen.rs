//! The one module generated code uses (from `runar-build` and `#[runar::service]`).
//!
//! Generated code names only `runar::codegen::*`, so the generated surface stays small and the
//! runtime can change behind it.

pub use futures::future::BoxFuture;
pub use prost;
/// The well-known protobuf types (`Timestamp`, `Duration`, …) that `runar-build` output names.
pub use prost_types;

pub use crate::error::{Code, Error, Result};
pub use crate::metadata::Metadata;
pub use crate::node::service::{
    AbstractService, ActionHandler, CallKind, EventContext, EventHandler, Interceptor,
    LifecycleContext, RequestContext, Streaming, action_handler, event_handler, stream_once,
};
pub use crate::node::{Node, PublishOptions, RequestOptions, SubscribeOptions, SubscriptionId};
pub use crate::seal::{Sealed, SealedField, SealedValue};
pub use crate::value::{Payload, Value};
/// Implements `SealedValue` for a message type a labelled field holds.
pub use crate::__sealed_message as sealed_message;
pub use futures::Stream;
