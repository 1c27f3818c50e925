//! Sealed fields: field-level end-to-end encryption declared in the schema.
//!
//! A field labelled in its `.proto` (`string ssn = 3 [(runar.label) = "user"];`) is a
//! [`Sealed`] in the generated message. In memory it is open; when the message is encoded for
//! another node it is sealed (HPKE, RFC 9180, auth mode) to the label's current key, and a node
//! that decodes it opens it when its [`KeyResolver`] holds that key, or keeps it sealed:
//! [`Sealed::open`] then answers `PermissionDenied`, never a silent default. A local call moves
//! the message and encrypts nothing. The envelope's format and what its associated data binds
//! are in `proto/runar/v1/README.md` ("Sealed fields").
//!
//! A node seals and opens with the resolver of its config (`NodeConfig::with_key_resolver`; the
//! default implementation is [`Keyring`]) and its own sealing key (`Node::sealing_key`), which
//! the nodes that open its envelopes must know: its peers learn it from its hello (the node
//! hands it to [`NodeSeal`]), others are told it (`Keyring::trust_node`). All the fields of one
//! label in one message are sealed under one HPKE context (one envelope per label per message),
//! each in its own slot. A node without a resolver sends labelled fields redacted, and opens
//! none.

mod auth_hpke;
mod dynamic;
mod envelope;
mod grant;
mod keys;
mod keystore;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType};

pub use dynamic::{
    FieldSchema, FieldSeal, FieldSealError, KeptSealed, MAX_NESTING, MessageSchema, Opened,
};
pub use envelope::MAX_LABEL_LEN;
pub use grant::{KeyGrant, MAX_PROFILE_ID_LEN};
pub use keys::{
    DEFAULT_RETENTION, KEY_ID_LEN, KEY_LEN, KeyError, KeyId, KeyPair, KeyResolver, Keyring,
    PublicKey, SealTo,
};
pub use keystore::{
    DEFAULT_ITERATIONS, EpochInfo, Keystore, KeystoreConfig, KeystoreError, PermissionCheck,
};

use crate::error::Error;
use crate::identity::NodeId;
use crate::log_limit::warn_limited;
use crate::value::scope::{self, Scope};
use auth_hpke::Shared;
use envelope::{Envelope, EnvelopeError, MESSAGE_ID_LEN, OpenCtx, SealCtx, Sender, Site};

/// A labelled field of a generated message, named by a marker type code generation emits.
pub trait SealedField: 'static {
    /// The full protobuf name of the message the field is in.
    const MESSAGE: &'static str;
    /// The field's number.
    const FIELD: u32;
    /// The field's label.
    const LABEL: &'static str;
}

/// A field value that can be sealed: how it encodes as a protobuf field of its own.
///
/// Implemented for the protobuf scalars (`String`, `Vec<u8>`, `bool`, `i32`, `i64`, `u32`,
/// `u64`, `f32`, `f64`); a message type gets it from code generation.
pub trait SealedValue: Clone + Default + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Encodes the value as field `tag` (key and value).
    fn encode_field(&self, tag: u32, buf: &mut impl BufMut);
    /// Merges a field's value of `wire_type` from `buf` (after its key).
    fn merge_field(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError>;
    /// The length of [`encode_field`](Self::encode_field)'s output.
    fn field_len(&self, tag: u32) -> usize;
}

macro_rules! sealed_scalar {
    ($($ty:ty => $module:ident),* $(,)?) => {$(
        impl SealedValue for $ty {
            fn encode_field(&self, tag: u32, buf: &mut impl BufMut) {
                prost::encoding::$module::encode(tag, self, buf);
            }
            fn merge_field(
                &mut self,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                prost::encoding::$module::merge(wire_type, self, buf, ctx)
            }
            fn field_len(&self, tag: u32) -> usize {
                prost::encoding::$module::encoded_len(tag, self)
            }
        }
    )*};
}

sealed_scalar!(
    String => string,
    Vec<u8> => bytes,
    bool => bool,
    i32 => int32,
    i64 => int64,
    u32 => uint32,
    u64 => uint64,
    f32 => float,
    f64 => double,
);

/// A labelled field: open (the value) in memory, or sealed (an envelope this node cannot open).
///
/// Generated messages hold it as `Option<Sealed<T, F>>` (`None`: the field is unset). Build one
/// with [`Sealed::new`] (or `From<T>`); read it with [`open`](Self::open), which fails with
/// `PermissionDenied` when the field arrived sealed to a key this node does not hold.
pub struct Sealed<T, F> {
    state: State<T>,
    field: PhantomData<fn() -> F>,
}

#[derive(Clone, PartialEq)]
enum State<T> {
    Open(T),
    /// The envelope's bytes, as they came (a relay sends them on unchanged).
    Sealed(Bytes),
}

impl<T: SealedValue, F: SealedField> Sealed<T, F> {
    /// An open field holding `value`.
    pub fn new(value: T) -> Self {
        Sealed {
            state: State::Open(value),
            field: PhantomData,
        }
    }

    /// The value, or `PermissionDenied` when the field is sealed to a key this node does not
    /// hold (or was redacted by a sender that held none).
    pub fn open(&self) -> crate::Result<&T> {
        match &self.state {
            State::Open(value) => Ok(value),
            State::Sealed(bytes) => Err(self.denied(bytes)),
        }
    }

    /// The value, moved out, or `PermissionDenied` as for [`open`](Self::open).
    pub fn into_open(self) -> crate::Result<T> {
        match self.state {
            State::Open(value) => Ok(value),
            State::Sealed(ref bytes) => Err(self.denied(bytes)),
        }
    }

    /// True when the field is sealed (this node could not open it).
    pub fn is_sealed(&self) -> bool {
        matches!(self.state, State::Sealed(_))
    }

    /// The field's label.
    pub fn label(&self) -> &'static str {
        F::LABEL
    }

    /// The envelope's epoch, when the field is sealed (not redacted).
    pub fn epoch(&self) -> Option<u32> {
        match &self.state {
            State::Sealed(bytes) => Envelope::parse(bytes)
                .ok()
                .filter(|e| e.sealed)
                .map(|e| e.epoch),
            State::Open(_) => None,
        }
    }

    fn denied(&self, bytes: &[u8]) -> Error {
        let redacted = Envelope::parse(bytes).map(|e| !e.sealed).unwrap_or(false);
        let why = if redacted {
            "its sender held no key for the label, so it was redacted"
        } else {
            "this node holds no key for its label"
        };
        Error::permission_denied(format!(
            "field {} of {} is sealed (label `{}`): {why}",
            F::FIELD,
            F::MESSAGE,
            F::LABEL
        ))
    }

    /// Encodes the field (for the prost-generated message: it is a oneof of one field there).
    #[doc(hidden)]
    pub fn encode(&self, buf: &mut impl BufMut) {
        let tag = F::FIELD;
        match &self.state {
            State::Open(value) if scope::is_local() => value.encode_field(tag, buf),
            State::Open(value) => {
                let mut plaintext = Vec::with_capacity(value.field_len(tag));
                value.encode_field(tag, &mut plaintext);
                let site = Site {
                    message: F::MESSAGE,
                    field: tag,
                    label: F::LABEL,
                };
                let mut envelope = Vec::new();
                let scope = scope::current();
                match scope
                    .as_ref()
                    .and_then(|s| s.as_any().downcast_ref::<NodeSeal>())
                {
                    Some(seal) => seal.seal(&site, &plaintext, &mut envelope),
                    None => envelope::redacted(F::LABEL, plaintext.len(), &mut envelope),
                }
                prost::encoding::bytes::encode(tag, &envelope, buf);
            }
            State::Sealed(bytes) => prost::encoding::bytes::encode(tag, bytes, buf),
        }
    }

    /// The field's encoded length (for the prost-generated message).
    #[doc(hidden)]
    pub fn encoded_len(&self) -> usize {
        let tag = F::FIELD;
        match &self.state {
            State::Open(value) if scope::is_local() => value.field_len(tag),
            State::Open(value) => {
                let len = envelope::envelope_len(F::LABEL, value.field_len(tag));
                prost::encoding::key_len(tag)
                    .saturating_add(prost::encoding::encoded_len_varint(len as u64))
                    .saturating_add(len)
            }
            State::Sealed(bytes) => prost::encoding::bytes::encoded_len(tag, bytes),
        }
    }

    /// Decodes the field (for the prost-generated message).
    #[doc(hidden)]
    pub fn merge(
        field: &mut Option<Self>,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if scope::is_local() {
            // Inside one node: open values went out in clear, sealed ones as their envelopes.
            // Only a length-delimited field can be either; it is an envelope when it parses as
            // one of this field's label.
            let mut framed = None;
            if wire_type == WireType::LengthDelimited {
                let mut bytes = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut bytes, buf, ctx.clone())?;
                if Envelope::parse(&bytes).is_ok_and(|e| e.label == F::LABEL) {
                    *field = Some(Sealed {
                        state: State::Sealed(bytes),
                        field: PhantomData,
                    });
                    return Ok(());
                }
                let mut with_len = Vec::with_capacity(bytes.len().saturating_add(10));
                prost::encoding::encode_varint(bytes.len() as u64, &mut with_len);
                with_len.extend_from_slice(&bytes);
                framed = Some(with_len);
            }
            let mut value = match field.take() {
                Some(Sealed {
                    state: State::Open(value),
                    ..
                }) => value,
                _ => T::default(),
            };
            match framed {
                Some(framed) => value.merge_field(wire_type, &mut framed.as_slice(), ctx)?,
                None => value.merge_field(wire_type, buf, ctx)?,
            }
            *field = Some(Sealed::new(value));
            return Ok(());
        }
        let mut bytes = Bytes::new();
        prost::encoding::bytes::merge(wire_type, &mut bytes, buf, ctx.clone())?;
        let site = Site {
            message: F::MESSAGE,
            field: tag,
            label: F::LABEL,
        };
        let opened = open_envelope(&site, &bytes)
            .map_err(|e| decode_error(format!("field {tag} of {}: {e}", F::MESSAGE)))?;
        *field = Some(match opened {
            Some(plaintext) => {
                let mut value = T::default();
                let mut pt = plaintext.as_slice();
                let (key_tag, key_wire) = prost::encoding::decode_key(&mut pt)?;
                if key_tag != tag {
                    return Err(decode_error(
                        "a sealed field's plaintext names another field",
                    ));
                }
                value.merge_field(key_wire, &mut pt, ctx)?;
                Sealed::new(value)
            }
            None => Sealed {
                state: State::Sealed(bytes),
                field: PhantomData,
            },
        });
        Ok(())
    }
}

impl<T: SealedValue, F: SealedField> From<T> for Sealed<T, F> {
    fn from(value: T) -> Self {
        Sealed::new(value)
    }
}

impl<T: Clone, F> Clone for Sealed<T, F> {
    fn clone(&self) -> Self {
        Sealed {
            state: self.state.clone(),
            field: PhantomData,
        }
    }
}

impl<T: PartialEq, F> PartialEq for Sealed<T, F> {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

impl<T: Eq, F> Eq for Sealed<T, F> {}

impl<T: std::hash::Hash, F> std::hash::Hash for Sealed<T, F> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match &self.state {
            State::Open(value) => value.hash(state),
            State::Sealed(bytes) => bytes.hash(state),
        }
    }
}

impl<T: fmt::Debug, F: SealedField> fmt::Debug for Sealed<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Open(value) => f.debug_tuple("Open").field(value).finish(),
            State::Sealed(_) => write!(f, "<sealed:{}>", F::LABEL),
        }
    }
}

/// Counts of a node's seals and opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealStats {
    /// Fields sealed for another node.
    pub sealed: u64,
    /// HPKE contexts set up to seal them: one per label per message, whatever its number of
    /// fields of that label.
    pub envelopes: u64,
    /// Fields sent redacted: no key for their label.
    pub redacted: u64,
    /// Fields opened.
    pub opened: u64,
    /// Fields received that stayed sealed: no key for their label, epoch or sender.
    pub kept_sealed: u64,
    /// Fields refused: malformed, moved or tampered with.
    pub refused: u64,
    /// Sealing keys held as announced by peers (this node's own included): one per connected
    /// peer; a peer's is forgotten when its last connection closes.
    pub peer_keys: u64,
}

#[derive(Default)]
struct Counters {
    sealed: AtomicU64,
    envelopes: AtomicU64,
    redacted: AtomicU64,
    opened: AtomicU64,
    kept_sealed: AtomicU64,
    refused: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A node's seal scope: its id, its sealing key and its resolver. Attached to the values it
/// sends to and receives from peers (`Value::scoped`).
pub(crate) struct NodeSeal {
    node: NodeId,
    key: KeyPair,
    resolver: Arc<dyn KeyResolver>,
    /// The sealing keys the node's peers announced on their connections, by node.
    announced: RwLock<HashMap<NodeId, Announced>>,
    /// Per label this node sealed to, the label's key it was sealed to last and the static DH
    /// of this node's key with it (auth mode's second DH, the same for every message to that
    /// key). The labels are the program's (`SealedField::LABEL`), so the list is as long as
    /// its schema has labels; a rotation replaces a label's entry.
    seal_dh: RwLock<Vec<(&'static str, PublicKey, Shared)>>,
    counters: Counters,
}

/// A peer's announced sealing key and, per label, the static DH of the peer's key with the
/// label's key pair this node last opened its envelopes with (auth mode's second DH; a
/// rotation replaces the entry). Forgotten with the key, so the entries are bounded by the
/// connected peers times the labels the node holds.
struct Announced {
    key: PublicKey,
    dh: Vec<(String, PublicKey, Shared)>,
}

/// The state of the encode in progress: its message id and, per label, the HPKE context its
/// fields are sealed with (`None`: no key, its fields go redacted).
#[derive(Default)]
struct Encoding {
    id: Option<[u8; MESSAGE_ID_LEN]>,
    labels: Vec<(&'static str, Option<SealCtx>)>,
}

/// A context the decode in progress opened (or could not): one per sender, label and
/// encapsulated key.
struct Opening {
    sender: NodeId,
    label: String,
    enc: [u8; KEY_LEN],
    /// `None`: this node cannot open it (no key of that id and epoch, unknown sender).
    ctx: Option<OpenCtx>,
    /// The sequence numbers opened, each once.
    seqs: Vec<u32>,
}

/// The state of the decode in progress.
#[derive(Default)]
struct Decoding {
    /// The message id of each sender's first envelope (a relay's own envelopes sit beside
    /// those it passes on, each sender's with its own id).
    ids: Vec<(NodeId, [u8; MESSAGE_ID_LEN])>,
    contexts: Vec<Opening>,
}

thread_local! {
    static ENCODING: RefCell<Encoding> = RefCell::new(Encoding::default());
    static DECODING: RefCell<Decoding> = RefCell::new(Decoding::default());
}

/// Opens `bytes` (a field's envelope) in the current scope: the plaintext, or `None` when this
/// node cannot open it (no scope, no key, redacted, unknown sender).
fn open_envelope(site: &Site<'_>, bytes: &[u8]) -> Result<Option<Vec<u8>>, EnvelopeError> {
    let scope = scope::current();
    let seal = scope
        .as_ref()
        .and_then(|s| s.as_any().downcast_ref::<NodeSeal>());
    let result = Envelope::parse(bytes).and_then(|envelope| {
        if envelope.label != site.label {
            return Err(EnvelopeError::DoesNotOpen);
        }
        match seal {
            Some(seal) => seal.open(site, &envelope),
            None => Ok(None),
        }
    });
    if let Some(seal) = seal {
        match &result {
            Ok(Some(_)) => count(&seal.counters.opened),
            Ok(None) => count(&seal.counters.kept_sealed),
            Err(e) => {
                count(&seal.counters.refused);
                warn_limited!(
                    message = site.message,
                    field = site.field,
                    "sealed field refused: {e}"
                );
            }
        }
    }
    result
}

/// True when `bytes` parse as an envelope (for the fuzz target `fuzzing::sealed_fields`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parses_as_envelope(bytes: &[u8]) -> bool {
    Envelope::parse(bytes).is_ok()
}

impl NodeSeal {
    pub(crate) fn new(node: NodeId, key: KeyPair, resolver: Arc<dyn KeyResolver>) -> Self {
        NodeSeal {
            node,
            key,
            resolver,
            announced: RwLock::default(),
            seal_dh: RwLock::default(),
            counters: Counters::default(),
        }
    }

    /// Records `node`'s sealing key as `node` announced it on an authenticated connection
    /// (replacing an earlier one: a restarted node may have a new key).
    pub(crate) fn announce(&self, node: NodeId, key: PublicKey) {
        let known = crate::lock::read(&self.announced)
            .get(&node)
            .is_some_and(|a| a.key == key);
        if !known {
            crate::lock::write(&self.announced).insert(
                node,
                Announced {
                    key,
                    dh: Vec::new(),
                },
            );
        }
    }

    /// Forgets `node`'s announced key: it has no connection to this node any more (so the map
    /// is bounded by the connected peers, however many identities have come and gone).
    pub(crate) fn forget(&self, node: &NodeId) {
        crate::lock::write(&self.announced).remove(node);
    }

    pub(crate) fn stats(&self) -> SealStats {
        let c = &self.counters;
        SealStats {
            sealed: c.sealed.load(Ordering::Relaxed),
            envelopes: c.envelopes.load(Ordering::Relaxed),
            redacted: c.redacted.load(Ordering::Relaxed),
            opened: c.opened.load(Ordering::Relaxed),
            kept_sealed: c.kept_sealed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            peer_keys: u64::try_from(crate::lock::read(&self.announced).len()).unwrap_or(u64::MAX),
        }
    }

    /// Seals `plaintext` at `site` into `out`, with the context of its label in the message
    /// being encoded (set up for the label's first field).
    fn seal(&self, site: &Site<'static>, plaintext: &[u8], out: &mut Vec<u8>) {
        let sealed = ENCODING.with(|encoding| {
            let mut encoding = encoding.borrow_mut();
            let encoding = &mut *encoding;
            let message_id = *encoding.id.get_or_insert_with(random_id);
            let sender = Sender {
                node: self.node,
                key: &self.key,
                message_id,
            };
            let at = match encoding
                .labels
                .iter()
                .position(|(label, _)| *label == site.label)
            {
                Some(at) => at,
                None => {
                    let ctx = self.resolver.seal_key(site.label).and_then(|to| {
                        let dh = self.seal_dh(site.label, &to.public)?;
                        let ctx = SealCtx::begin(&to.public, to.epoch, &sender, &dh);
                        if ctx.is_some() {
                            count(&self.counters.envelopes);
                        }
                        ctx
                    });
                    encoding.labels.push((site.label, ctx));
                    encoding.labels.len().saturating_sub(1)
                }
            };
            match encoding
                .labels
                .get_mut(at)
                .and_then(|(_, ctx)| ctx.as_mut())
            {
                Some(ctx) => ctx.seal(site, &sender, plaintext, out),
                None => {
                    envelope::redacted(site.label, plaintext.len(), out);
                    false
                }
            }
        });
        if sealed {
            count(&self.counters.sealed);
        } else {
            count(&self.counters.redacted);
        }
    }

    fn open(
        &self,
        site: &Site<'_>,
        envelope: &Envelope<'_>,
    ) -> Result<Option<Vec<u8>>, EnvelopeError> {
        if !envelope.sealed {
            return Ok(None);
        }
        DECODING.with(|decoding| {
            let mut decoding = decoding.borrow_mut();
            let decoding = &mut *decoding;
            // Every envelope one sender sealed in one message carries the same message id.
            match decoding
                .ids
                .iter()
                .find(|(sender, _)| *sender == envelope.sender)
            {
                Some((_, first)) if *first != envelope.message_id => {
                    return Err(EnvelopeError::DoesNotOpen);
                }
                Some(_) => {}
                None => decoding.ids.push((envelope.sender, envelope.message_id)),
            }
            // And every envelope of one label from one sender in it, the same context.
            let at = match decoding
                .contexts
                .iter()
                .position(|o| o.sender == envelope.sender && o.label == envelope.label)
            {
                Some(at) => at,
                None => {
                    let ctx = self.open_ctx(site, envelope)?;
                    decoding.contexts.push(Opening {
                        sender: envelope.sender,
                        label: envelope.label.to_owned(),
                        enc: envelope.enc,
                        ctx,
                        seqs: Vec::new(),
                    });
                    decoding.contexts.len().saturating_sub(1)
                }
            };
            let Some(opening) = decoding.contexts.get_mut(at) else {
                return Ok(None);
            };
            if opening.enc != envelope.enc || opening.seqs.contains(&envelope.seq) {
                return Err(EnvelopeError::DoesNotOpen);
            }
            let Some(ctx) = &opening.ctx else {
                return Ok(None);
            };
            let plaintext = envelope.open(site, ctx)?;
            opening.seqs.push(envelope.seq);
            Ok(Some(plaintext))
        })
    }

    /// The context of `envelope`'s label in the message being decoded, set up: `None` when
    /// this node holds no key of its id and epoch or does not know its sender.
    fn open_ctx(
        &self,
        site: &Site<'_>,
        envelope: &Envelope<'_>,
    ) -> Result<Option<OpenCtx>, EnvelopeError> {
        let Some(key) = self
            .resolver
            .open_key(site.label, envelope.key_id, envelope.epoch)
        else {
            return Ok(None);
        };
        let announced = crate::lock::read(&self.announced)
            .get(&envelope.sender)
            .map(|a| a.key);
        let trusted = self.resolver.sender_key(&envelope.sender);
        if announced.is_none() && trusted.is_none() {
            return Ok(None);
        }
        // The envelope's sender key must be one vouched for its node: announced by the node on
        // its connection, or known to the resolver (a node met through a relay).
        let Some(sender_key) = [announced, trusted]
            .into_iter()
            .flatten()
            .find(|key| key.as_bytes() == &envelope.sender_key)
        else {
            return Err(EnvelopeError::DoesNotOpen);
        };
        let dh = if announced == Some(sender_key) {
            self.open_dh(&envelope.sender, site.label, &key, &sender_key)
        } else {
            // A sender met through a relay: not kept (the announced keys bound the cache).
            auth_hpke::dh(&key.x25519_secret(), sender_key.as_bytes())
        }
        .ok_or(EnvelopeError::DoesNotOpen)?;
        OpenCtx::new(envelope, &key, &sender_key, &dh).map(Some)
    }

    /// The static DH of this node's sealing key with `to`, `label`'s key now: computed when
    /// the label is first sealed and when its key changes, kept in `seal_dh`. `None` when `to`
    /// is a low-order key.
    fn seal_dh(&self, label: &'static str, to: &PublicKey) -> Option<Shared> {
        let kept = crate::lock::read(&self.seal_dh)
            .iter()
            .find(|(l, k, _)| *l == label && k == to)
            .map(|(_, _, dh)| *dh);
        if kept.is_some() {
            return kept;
        }
        let dh = auth_hpke::dh(&self.key.x25519_secret(), to.as_bytes())?;
        let mut cache = crate::lock::write(&self.seal_dh);
        cache.retain(|(l, _, _)| *l != label);
        cache.push((label, *to, dh));
        Some(dh)
    }

    /// The static DH of `key` (`label`'s key pair an envelope is sealed to) with `sender_key`,
    /// the key `sender` announced: kept with the announced key, per label. `None` when
    /// `sender_key` is a low-order key.
    fn open_dh(
        &self,
        sender: &NodeId,
        label: &str,
        key: &KeyPair,
        sender_key: &PublicKey,
    ) -> Option<Shared> {
        let public = key.public();
        let kept = crate::lock::read(&self.announced)
            .get(sender)
            .filter(|a| a.key == *sender_key)
            .and_then(|a| {
                a.dh.iter()
                    .find(|(l, k, _)| l == label && *k == public)
                    .map(|(_, _, dh)| *dh)
            });
        if kept.is_some() {
            return kept;
        }
        let dh = auth_hpke::dh(&key.x25519_secret(), sender_key.as_bytes())?;
        let mut announced = crate::lock::write(&self.announced);
        if let Some(a) = announced.get_mut(sender).filter(|a| a.key == *sender_key) {
            a.dh.retain(|(l, _, _)| l != label);
            a.dh.push((label.to_owned(), public, dh));
        }
        Some(dh)
    }
}

impl Scope for NodeSeal {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn enter(&self) {
        ENCODING.with(|encoding| {
            let mut encoding = encoding.borrow_mut();
            encoding.id = None;
            encoding.labels.clear();
        });
        DECODING.with(|decoding| {
            let mut decoding = decoding.borrow_mut();
            decoding.ids.clear();
            decoding.contexts.clear();
        });
    }
}

/// A decode error with this message (prost has no other way to make one).
#[allow(deprecated)]
fn decode_error(message: impl Into<std::borrow::Cow<'static, str>>) -> DecodeError {
    DecodeError::new(message)
}

fn random_id() -> [u8; MESSAGE_ID_LEN] {
    let mut id = [0u8; MESSAGE_ID_LEN];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut id).is_err() {
        // The system's random source failed: fall back to the clock and a counter, still
        // unique per message in this process.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[8..].copy_from_slice(&t.to_be_bytes());
    }
    id
}

#[cfg(test)]
mod tests;
