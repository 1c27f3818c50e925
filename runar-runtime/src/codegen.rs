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

/// A prost message's own schema, which `#[runar::message]` gives it: a `#[runar::service]`'s
/// synthesized schema defines the messages it uses that have one, with their fields and
/// `(runar.label)` options, so introspection, the CLI and the gRPC gateway see their labels.
pub trait MessageSchema {
    /// The message's full protobuf name (`vault.Record`).
    const FULL_NAME: &'static str;
    /// Its encoded `google.protobuf.DescriptorProto`, field options included.
    const DESCRIPTOR: &'static [u8];
    /// True when a field has a `(runar.label)`.
    const LABELLED: bool;
}

/// A message type's schema, when it has one: what a macro service's schema is built from.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct MessageInfo {
    /// The full protobuf name.
    pub full_name: &'static str,
    /// The encoded `DescriptorProto`.
    pub descriptor: &'static [u8],
    /// A field has a `(runar.label)`.
    pub labelled: bool,
}

/// Asks, in macro-generated code, whether a concrete type has a [`MessageSchema`]: with
/// [`ProbeSchema`] and [`ProbeNone`] in scope, `(&&SchemaProbe::<T>::new()).message_info()`
/// is `Some` for one that has (autoref picks the first impl that applies).
#[doc(hidden)]
pub struct SchemaProbe<T>(core::marker::PhantomData<T>);

impl<T> SchemaProbe<T> {
    /// The probe of `T`.
    pub const fn new() -> Self {
        SchemaProbe(core::marker::PhantomData)
    }
}

impl<T> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The probe's answer for a type with a [`MessageSchema`].
#[doc(hidden)]
pub trait ProbeSchema {
    /// The type's schema.
    fn message_info(&self) -> Option<MessageInfo>;
}

impl<T: MessageSchema> ProbeSchema for &SchemaProbe<T> {
    fn message_info(&self) -> Option<MessageInfo> {
        Some(MessageInfo {
            full_name: T::FULL_NAME,
            descriptor: T::DESCRIPTOR,
            labelled: T::LABELLED,
        })
    }
}

/// The probe's answer for any other type: none.
#[doc(hidden)]
pub trait ProbeNone {
    /// None.
    fn message_info(&self) -> Option<MessageInfo> {
        None
    }
}

impl<T> ProbeNone for SchemaProbe<T> {}

/// A macro service's schema: `file` (the encoded `FileDescriptorProto` the macro synthesized,
/// naming each user message by its Rust name) with each message of `messages` (its Rust name
/// and schema, when it has one) named by its full name, and defined in the file when it is in
/// the file's package and every message or enum its fields name is defined too (or a
/// `google.protobuf` type); `runar/options.proto` is imported when one has labels.
#[doc(hidden)]
pub fn schema_with_messages(file: &[u8], messages: &[(&str, Option<MessageInfo>)]) -> Vec<u8> {
    use prost::Message as _;
    let Ok(mut descriptor) = prost_types::FileDescriptorProto::decode(file) else {
        return file.to_vec();
    };
    let package = descriptor.package().to_owned();
    let qualified = |rust: &str| {
        messages
            .iter()
            .find(|(name, _)| *name == rust)
            .and_then(|(_, info)| info.as_ref())
            .map(|info| format!(".{}", info.full_name))
    };
    let rename = |name: &mut Option<String>| {
        if let Some(full) = name.as_deref().and_then(qualified) {
            *name = Some(full);
        }
    };
    for method in descriptor
        .service
        .iter_mut()
        .flat_map(|s| s.method.iter_mut())
    {
        rename(&mut method.input_type);
        rename(&mut method.output_type);
    }
    for field in descriptor
        .message_type
        .iter_mut()
        .flat_map(|m| m.field.iter_mut())
    {
        rename(&mut field.type_name);
    }
    // The candidates: in this package, each once.
    let in_package = |full: &str| match full.rsplit_once('.') {
        Some((p, _)) => p == package,
        None => package.is_empty(),
    };
    let mut defined: Vec<(MessageInfo, prost_types::DescriptorProto)> = Vec::new();
    for info in messages.iter().filter_map(|(_, info)| *info) {
        if !in_package(info.full_name) || defined.iter().any(|(d, _)| d.full_name == info.full_name)
        {
            continue;
        }
        if let Ok(parsed) = prost_types::DescriptorProto::decode(info.descriptor) {
            defined.push((info, parsed));
        }
    }
    let own: Vec<String> = descriptor
        .message_type
        .iter()
        .map(|m| match package.as_str() {
            "" => format!(".{}", m.name()),
            p => format!(".{p}.{}", m.name()),
        })
        .collect();
    // Drop, until none is dropped, a message naming a type that is not defined.
    loop {
        let names: Vec<String> = defined
            .iter()
            .map(|(info, _)| format!(".{}", info.full_name))
            .collect();
        let before = defined.len();
        defined.retain(|(_, parsed)| {
            parsed
                .field
                .iter()
                .filter_map(|f| f.type_name.as_deref())
                .all(|t| {
                    t.starts_with(".google.protobuf.")
                        || names.iter().any(|n| n == t)
                        || own.iter().any(|n| n == t)
                })
        });
        if defined.len() == before {
            break;
        }
    }
    if defined.iter().any(|(info, _)| info.labelled)
        && !descriptor.dependency.iter().any(|d| d == OPTIONS_PROTO)
    {
        descriptor.dependency.push(OPTIONS_PROTO.to_owned());
    }
    let mut out = descriptor.encode_to_vec();
    for (info, _) in defined {
        // `message_type` (4): the descriptor's own bytes, with its options' extensions.
        prost::encoding::bytes::encode(4, &info.descriptor.to_vec(), &mut out);
    }
    out
}

/// The file declaring Runar's options, `(runar.label)` among them.
const OPTIONS_PROTO: &str = "runar/options.proto";
