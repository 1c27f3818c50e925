//! The type-erased [`Value`] that carries requests, responses and events through the node.
//!
//! A value holds either a typed Rust message in memory or protobuf bytes that came from the
//! network. Nothing is encoded until a value crosses the network ("late serialization"), and bytes
//! are decoded only into the type a handler asks for. When the sender and the receiver use
//! different Rust types for the same protobuf schema (say, two crates generated from one
//! `.proto`), the value falls back to encoding and decoding instead of failing.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};

pub(crate) mod scope;
pub(crate) mod types;

use scope::Scope;

/// A message Runar can carry: any prost message.
///
/// prost implements [`prost::Message`] for `()` and for the protobuf wrapper types (`f64`, `i64`,
/// `bool`, `String`, `Vec<u8>`, …), so those work as payloads too: `()` encodes as an empty
/// message and a scalar as a one-field message (field 1), like `google.protobuf.DoubleValue`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Runar payload (a prost message)",
    label = "not a prost message",
    note = "use a prost message (`#[derive(runar::prost::Message)]` or one generated from a .proto), \
            a scalar (`f64`, `i64`, `bool`, …), `String`, `Vec<u8>` or `()`; in a \
            `#[runar::service]`, list the fields as parameters instead"
)]
pub trait Payload: prost::Message + Default + Clone + Send + Sync + 'static {}

impl<T> Payload for T where T: prost::Message + Default + Clone + Send + Sync + 'static {}

/// Object-safe view of a [`Payload`], so a [`Value`] can hold any of them.
pub(crate) trait ErasedPayload: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    /// Moves the message into `slot` when `slot` is an `Option` of its type (one virtual call
    /// and one type check: the local path's typed hand-over); gives it back otherwise.
    fn take_into(
        self: Box<Self>,
        slot: &mut dyn Any,
    ) -> std::result::Result<(), Box<dyn ErasedPayload>>;
    fn encode_into(&self, buf: &mut BytesMut);
    fn encoded_len(&self) -> usize;
    fn type_name(&self) -> &'static str;
    fn known_name(&self) -> Option<&'static str>;
    fn clone_box(&self) -> Box<dyn ErasedPayload>;
}

impl<T: Payload> ErasedPayload for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn take_into(
        self: Box<Self>,
        slot: &mut dyn Any,
    ) -> std::result::Result<(), Box<dyn ErasedPayload>> {
        match slot.downcast_mut::<Option<T>>() {
            Some(slot) => {
                *slot = Some(*self);
                Ok(())
            }
            None => Err(self),
        }
    }
    fn encode_into(&self, buf: &mut BytesMut) {
        // `encode_raw` cannot fail: the buffer grows as needed.
        prost::Message::encode_raw(self, buf);
    }
    fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn known_name(&self) -> Option<&'static str> {
        types::known_name::<T>()
    }
    fn clone_box(&self) -> Box<dyn ErasedPayload> {
        Box::new(self.clone())
    }
}

enum Repr {
    Typed(Box<dyn ErasedPayload>),
    Encoded(Bytes),
}

/// A request, response or event payload: a typed message in memory, or protobuf bytes.
///
/// ```
/// use runar_runtime::value::Value;
/// let v = Value::new(2.5f64);
/// assert!(!v.is_encoded());
/// assert_eq!(v.into_typed::<f64>().unwrap(), 2.5);
/// ```
pub struct Value {
    repr: Repr,
    /// The node's seal scope, on a value bound for a peer or received from one: sealed fields
    /// are sealed when it encodes and opened when it decodes (see `crate::seal`).
    scope: Option<Arc<dyn Scope>>,
}

impl Value {
    /// A value holding `message` in memory; nothing is encoded.
    pub fn new<T: Payload>(message: T) -> Self {
        Value {
            repr: Repr::Typed(Box::new(message)),
            scope: None,
        }
    }

    /// The empty value, `()`.
    pub fn empty() -> Self {
        Value::new(())
    }

    /// A value holding protobuf bytes, decoded lazily into the type a reader asks for.
    pub fn from_encoded(bytes: Bytes) -> Self {
        Value {
            repr: Repr::Encoded(bytes),
            scope: None,
        }
    }

    /// The value with `scope`: its encode (bound for a peer) seals the labelled fields, its
    /// decode (bytes from a peer) opens those the node holds keys for.
    pub(crate) fn scoped(mut self, scope: Arc<dyn Scope>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// [`scoped`](Self::scoped) when there is a scope (a node that seals fields), else the
    /// value as it is.
    pub(crate) fn within(self, scope: Option<&Arc<dyn Scope>>) -> Self {
        match scope {
            Some(scope) => self.scoped(scope.clone()),
            None => self,
        }
    }

    /// True when the value holds bytes rather than a typed message.
    pub fn is_encoded(&self) -> bool {
        matches!(self.repr, Repr::Encoded(_))
    }

    /// The Rust type name of the message held in memory, if any.
    pub fn type_name(&self) -> Option<&'static str> {
        match &self.repr {
            Repr::Typed(m) => Some(m.type_name()),
            Repr::Encoded(_) => None,
        }
    }

    /// The protobuf name of the message held in memory, when prost names its type (the
    /// scalars, `String`, bytes and `()`, as their `google.protobuf` wrappers and `Empty`).
    pub(crate) fn known_name(&self) -> Option<&'static str> {
        match &self.repr {
            Repr::Typed(m) => m.known_name(),
            Repr::Encoded(_) => None,
        }
    }

    /// True when the value holds a message of Rust type `id` in memory.
    pub(crate) fn holds(&self, id: std::any::TypeId) -> bool {
        match &self.repr {
            Repr::Typed(m) => m.as_any().type_id() == id,
            Repr::Encoded(_) => false,
        }
    }

    /// A reference to the message when it is held in memory as a `T`.
    pub fn downcast_ref<T: Payload>(&self) -> Option<&T> {
        match &self.repr {
            Repr::Typed(m) => m.as_any().downcast_ref::<T>(),
            Repr::Encoded(_) => None,
        }
    }

    /// Takes the message out as a `T`: moved out when held as a `T` (no copy, no encoding),
    /// otherwise decoded from its protobuf encoding.
    pub fn into_typed<T: Payload>(self) -> Result<T> {
        match self.repr {
            Repr::Typed(m) => {
                let mut slot: Option<T> = None;
                match m.take_into(&mut slot) {
                    Ok(()) => slot.ok_or_else(|| Error::internal("a typed value was not moved")),
                    Err(m) => {
                        let from = m.type_name();
                        scope::locally(|| decode_as::<T>(encode_erased(m.as_ref()), Some(from)))
                    }
                }
            }
            Repr::Encoded(bytes) => match &self.scope {
                Some(s) => scope::within(s, || decode_as::<T>(bytes, None)),
                None => decode_as::<T>(bytes, None),
            },
        }
    }

    /// A copy of the message as a `T` (cloned when held as a `T`, otherwise decoded).
    pub fn to_typed<T: Payload>(&self) -> Result<T> {
        match &self.repr {
            Repr::Typed(m) => match m.as_any().downcast_ref::<T>() {
                Some(t) => Ok(t.clone()),
                None => scope::locally(|| {
                    decode_as::<T>(encode_erased(m.as_ref()), Some(m.type_name()))
                }),
            },
            Repr::Encoded(bytes) => match &self.scope {
                Some(s) => scope::within(s, || decode_as::<T>(bytes.clone(), None)),
                None => decode_as::<T>(bytes.clone(), None),
            },
        }
    }

    /// The protobuf encoding of the value. Cheap for a value that already holds bytes.
    pub fn to_bytes(&self) -> Bytes {
        match &self.repr {
            Repr::Typed(m) => match &self.scope {
                Some(s) => scope::within(s, || encode_erased(m.as_ref())),
                None => encode_erased(m.as_ref()),
            },
            Repr::Encoded(bytes) => bytes.clone(),
        }
    }

    /// Appends the value's protobuf encoding to `buf` ([`encoded_len`](Self::encoded_len)
    /// bytes), without an intermediate buffer.
    pub(crate) fn encode_into(&self, buf: &mut BytesMut) {
        match &self.repr {
            Repr::Typed(m) => match &self.scope {
                Some(s) => scope::within(s, || m.encode_into(buf)),
                None => m.encode_into(buf),
            },
            Repr::Encoded(bytes) => buf.extend_from_slice(bytes),
        }
    }

    /// The length of the value's protobuf encoding.
    pub fn encoded_len(&self) -> usize {
        match &self.repr {
            // A sealed field's length does not depend on the scope (see `crate::seal`).
            Repr::Typed(m) => m.encoded_len(),
            Repr::Encoded(bytes) => bytes.len(),
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        let repr = match &self.repr {
            Repr::Typed(m) => Repr::Typed(m.clone_box()),
            Repr::Encoded(bytes) => Repr::Encoded(bytes.clone()),
        };
        Value {
            repr,
            scope: self.scope.clone(),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Typed(m) => write!(f, "Value({})", m.type_name()),
            Repr::Encoded(b) => write!(f, "Value({} encoded bytes)", b.len()),
        }
    }
}

fn encode_erased(message: &dyn ErasedPayload) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    message.encode_into(&mut buf);
    buf.freeze()
}

/// Decodes `bytes` as a `T`; an error names the target type (and `from`, a message converted).
/// Decoded from `Bytes` (not a slice), a `bytes` field that prost keeps as `Bytes` shares the
/// encoding's buffer instead of being copied into a buffer of its own.
fn decode_as<T: Payload>(bytes: impl bytes::Buf, from: Option<&'static str>) -> Result<T> {
    T::decode(bytes).map_err(|e| {
        let target = std::any::type_name::<T>();
        match from {
            Some(from) => {
                Error::invalid_argument(format!("cannot convert a {from} into a {target}: {e}"))
            }
            None => Error::invalid_argument(format!("cannot decode a {target}: {e}")),
        }
    })
}

/// A value as it is read to be encoded: a [`Value`], or a typed message not boxed into one.
#[derive(Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    /// A value.
    Value(&'a Value),
    /// A typed message, as a publish holds it until a local subscription takes it.
    Message(&'a dyn ErasedPayload),
    /// Nothing: a message already taken.
    Empty,
}

impl<'a> ValueRef<'a> {
    /// A typed message.
    pub(crate) fn message<T: Payload>(message: &'a T) -> Self {
        ValueRef::Message(message)
    }

    /// Whether it holds bytes rather than a typed message (see [`Value::is_encoded`]).
    pub(crate) fn is_encoded(self) -> bool {
        matches!(self, ValueRef::Value(value) if value.is_encoded())
    }

    /// The length of its protobuf encoding.
    pub(crate) fn encoded_len(self) -> usize {
        match self {
            ValueRef::Value(value) => value.encoded_len(),
            ValueRef::Message(message) => message.encoded_len(),
            ValueRef::Empty => 0,
        }
    }

    /// Its protobuf encoding as bytes of its own (see [`Value::to_bytes`]: a value that holds
    /// bytes gives those).
    pub(crate) fn to_bytes(self) -> Bytes {
        match self {
            ValueRef::Value(value) => value.to_bytes(),
            ValueRef::Message(message) => encode_erased(message),
            ValueRef::Empty => Bytes::new(),
        }
    }

    /// Appends its protobuf encoding to `buf` (see [`Value::encode_into`]).
    pub(crate) fn encode_into(self, buf: &mut BytesMut) {
        match self {
            ValueRef::Value(value) => value.encode_into(buf),
            ValueRef::Message(message) => message.encode_into(buf),
            ValueRef::Empty => {}
        }
    }
}

/// An event's value on its way to its subscriptions: owned until a local subscription's queue
/// takes it, then shared by every local one.
pub(crate) enum EventValue {
    /// The value itself.
    Owned(Value),
    /// The value, shared by several subscriptions.
    Shared(Arc<Value>),
}

impl EventValue {
    /// The value.
    pub(crate) fn get(&self) -> &Value {
        match self {
            EventValue::Owned(value) => value,
            EventValue::Shared(value) => value,
        }
    }

    /// The value, shared, leaving nothing behind (for the last to take it).
    pub(crate) fn take_shared(&mut self) -> Arc<Value> {
        match self.take() {
            EventValue::Shared(value) => value,
            EventValue::Owned(value) => Arc::new(value),
        }
    }

    /// The value itself, leaving nothing behind (for the last to take it): no `Arc` made.
    pub(crate) fn take(&mut self) -> EventValue {
        std::mem::replace(self, EventValue::Owned(Value::empty()))
    }

    /// The value as a `T`: moved out when nothing else holds it, else cloned or decoded (see
    /// [`Value::into_typed`] and [`Value::to_typed`]).
    pub(crate) fn into_typed<T: Payload>(self) -> Result<T> {
        match self {
            EventValue::Owned(value) => value.into_typed(),
            EventValue::Shared(value) => match Arc::try_unwrap(value) {
                Ok(value) => value.into_typed(),
                Err(value) => value.to_typed(),
            },
        }
    }

    /// The value, shared (moved into an `Arc` the first time).
    pub(crate) fn share(&mut self) -> Arc<Value> {
        let shared = match self {
            EventValue::Shared(value) => return value.clone(),
            EventValue::Owned(value) => Arc::new(std::mem::replace(value, Value::empty())),
        };
        *self = EventValue::Shared(shared.clone());
        shared
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct PointA {
        #[prost(int32, tag = "1")]
        x: i32,
        #[prost(string, tag = "2")]
        label: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct PointB {
        #[prost(int32, tag = "1")]
        x: i32,
        #[prost(string, tag = "2")]
        label: String,
    }

    #[test]
    fn typed_value_moves_out_without_encoding() {
        let v = Value::new(PointA {
            x: 3,
            label: "a".into(),
        });
        assert!(!v.is_encoded());
        assert_eq!(v.downcast_ref::<PointA>().unwrap().x, 3);
        assert_eq!(v.into_typed::<PointA>().unwrap().label, "a");
    }

    #[test]
    fn same_schema_other_type_falls_back_to_encoding() {
        let v = Value::new(PointA {
            x: 9,
            label: "z".into(),
        });
        assert!(v.downcast_ref::<PointB>().is_none());
        let b: PointB = v.to_typed().unwrap();
        assert_eq!((b.x, b.label.as_str()), (9, "z"));
        let b: PointB = v.into_typed().unwrap();
        assert_eq!(b.x, 9);
    }

    #[test]
    fn encoded_value_decodes_lazily() {
        let bytes = Value::new(PointA {
            x: 5,
            label: "q".into(),
        })
        .to_bytes();
        let v = Value::from_encoded(bytes);
        assert!(v.is_encoded());
        assert_eq!(v.to_typed::<PointB>().unwrap().x, 5);
        assert_eq!(v.into_typed::<PointA>().unwrap().label, "q");
    }

    #[test]
    fn garbage_bytes_give_invalid_argument() {
        let v = Value::from_encoded(Bytes::from_static(&[0xff, 0xff, 0xff]));
        let err = v.into_typed::<PointA>().unwrap_err();
        assert_eq!(err.code(), crate::Code::InvalidArgument);
    }

    #[test]
    fn scalars_and_unit_are_payloads() {
        assert_eq!(Value::new(1.5f64).to_typed::<f64>().unwrap(), 1.5);
        let bytes = Value::new(String::from("hi")).to_bytes();
        assert_eq!(
            Value::from_encoded(bytes).into_typed::<String>().unwrap(),
            "hi"
        );
        Value::empty().into_typed::<()>().unwrap();
    }
}
