//! The one module generated code uses (from `runar-build` and `#[runar::service]`).
//!
//! Generated code names only `runar::codegen::*`, so the generated surface stays small and the
//! runtime can change behind it.

pub use futures::future::BoxFuture;
pub use prost;
/// The well-known protobuf types (`Timestamp`, `Duration`, …) that `runar-build` output names.
pub use prost_types;

/// Implements `SealedValue` for a message type a labelled field holds.
pub use crate::__sealed_message as sealed_message;
pub use crate::error::{Code, Error, Result};
pub use crate::metadata::Metadata;
pub use crate::node::service::{
    AbstractService, ActionHandler, CallKind, EventContext, EventHandler, Interceptor,
    LifecycleContext, RequestContext, Streaming, action_handler, event_handler, stream_once,
};
pub use crate::node::{Node, PublishOptions, RequestOptions, SubscribeOptions, SubscriptionId};
pub use crate::seal::{Sealed, SealedField, SealedValue};
pub use crate::value::{Payload, Value};
pub use futures::Stream;

/// Implements [`SealedValue`] for a prost message type, so a labelled field can hold it.
#[doc(hidden)]
#[macro_export]
macro_rules! __sealed_message {
    ($ty:ty) => {
        impl $crate::codegen::SealedValue for $ty {
            fn encode_field(&self, tag: u32, buf: &mut impl $crate::codegen::prost::bytes::BufMut) {
                $crate::codegen::prost::encoding::message::encode(tag, self, buf);
            }
            fn merge_field(
                &mut self,
                wire_type: $crate::codegen::prost::encoding::WireType,
                buf: &mut impl $crate::codegen::prost::bytes::Buf,
                ctx: $crate::codegen::prost::encoding::DecodeContext,
            ) -> ::core::result::Result<(), $crate::codegen::prost::DecodeError> {
                $crate::codegen::prost::encoding::message::merge(wire_type, self, buf, ctx)
            }
            fn field_len(&self, tag: u32) -> usize {
                $crate::codegen::prost::encoding::message::encoded_len(tag, self)
            }
        }
    };
}
