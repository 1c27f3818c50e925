//! Sealing and opening the labelled fields of an *encoded* message whose schema is known only
//! at run time: for tools that convert messages with descriptors they were served (the `runar`
//! CLI, a gateway) rather than with generated types.
//!
//! The result is the wire format generated code produces and expects (see the module above):
//! one message id per message, one HPKE context per label per message (its fields in their own
//! slots), the same associated data. A field's plaintext is the field encoded on its own (key
//! and value), as [`super::SealedValue::encode_field`] writes it.

use std::sync::Arc;

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, encode_varint};

use super::envelope::{self, Envelope, EnvelopeError, SealCtx, Sender, Site};
use super::{MAX_LABEL_LEN, NodeSeal, count, open_envelope, random_id};
use crate::value::scope::{self, Scope};

/// How deep [`FieldSeal`] looks for labelled fields in nested messages: prost's own
/// recursion limit when it decodes (100), so a message it can decode is searched whole.
pub const MAX_NESTING: u32 = 100;

/// A message type as a tool that holds its schema at run time describes it to [`FieldSeal`]
/// (a `prost_reflect::MessageDescriptor` behind a newtype, typically).
pub trait MessageSchema: Sized {
    /// The message's full protobuf name (`vault.Record`, `vault.Record.Inner`).
    fn full_name(&self) -> &str;
    /// Field `number` of the message, when the schema has it.
    fn field(&self, number: u32) -> Option<FieldSchema<Self>>;
}

/// What [`FieldSeal`] needs to know of one field.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FieldSchema<M> {
    /// The field's label (`[(runar.label) = "user"]`), when it has one.
    pub label: Option<String>,
    /// The field's message type, when it is a message field (searched for labelled fields in
    /// turn: each element of a repeated field, each entry of a map, the plaintext of a
    /// labelled one); `None` for scalars. A schema may leave out the message types it knows
    /// hold no labelled field, so they are copied without being walked.
    pub message: Option<M>,
}

impl<M> FieldSchema<M> {
    /// A field with this label (or none) and message type (or none).
    pub fn new(label: Option<String>, message: Option<M>) -> Self {
        FieldSchema { label, message }
    }
}

/// A labelled field that stayed sealed in [`FieldSeal::open`]: where it was and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeptSealed {
    /// Field numbers from the top message down to the field.
    pub path: Vec<u32>,
    /// For each field of `path`, which occurrence of it in its message this is, from 0 in the
    /// order of the bytes: the element's index for a repeated field (the entry's, in the
    /// bytes' order, for a map), 0 for a field that occurs once.
    pub occurrences: Vec<u32>,
    /// The field's label.
    pub label: String,
    /// True when its sender redacted it (it held no key for the label), rather than sealing
    /// it to a key this node does not hold.
    pub redacted: bool,
}

/// An opened message: [`FieldSeal::open`]'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Opened {
    /// The message with every field this node could open in clear, and without the fields it
    /// could not: it decodes with the schema's declared types.
    pub bytes: Vec<u8>,
    /// The labelled fields taken out because this node cannot open them (no key of their
    /// label, epoch or sender, or redacted by their sender).
    pub sealed: Vec<KeptSealed>,
}

/// Why [`FieldSeal`] refused a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FieldSealError {
    /// The bytes do not parse as the message.
    #[error("the message does not parse as `{message}`: {reason}")]
    Malformed {
        /// The message's full name.
        message: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The message nests messages [`MAX_NESTING`] deep or deeper.
    #[error("`{message}` nests messages deeper than {MAX_NESTING}")]
    TooDeep {
        /// The full name of the message at the limit.
        message: String,
    },
    /// No key to seal a label to: the resolver neither holds the label nor knows a public key
    /// of it.
    #[error("no key to seal label `{label}` to (field {field} of `{message}`)")]
    NoKey {
        /// The message's full name.
        message: String,
        /// The field number.
        field: u32,
        /// The label.
        label: String,
    },
    /// A label longer than [`MAX_LABEL_LEN`] bytes (code generation refuses them).
    #[error("label `{label}` of field {field} of `{message}` is too long")]
    InvalidLabel {
        /// The message's full name.
        message: String,
        /// The field number.
        field: u32,
        /// The label.
        label: String,
    },
    /// An envelope that is malformed, moved from another field, message or label, or tampered
    /// with.
    #[error("field {field} of `{message}` (label `{label}`): {reason}")]
    Refused {
        /// The message's full name.
        message: String,
        /// The field number.
        field: u32,
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
}

/// A node's sealing, for encoded messages and a schema known at run time
/// (`Node::field_seal`): [`seal`](Self::seal) before sending a message to a peer,
/// [`open`](Self::open) after receiving one. It counts in the node's `SealStats`.
#[derive(Clone)]
pub struct FieldSeal {
    /// `None` on a node without a key resolver: it seals nothing (`NoKey`) and opens nothing.
    seal: Option<Arc<NodeSeal>>,
}

impl std::fmt::Debug for FieldSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldSeal")
            .field("node", &self.seal.as_ref().map(|s| s.node))
            .finish_non_exhaustive()
    }
}

/// What one walk over a message does to its labelled fields.
enum Walk {
    /// Seal the labelled fields found in clear, for one message id.
    Seal {
        message_id: [u8; envelope::MESSAGE_ID_LEN],
        /// Per label, the context its fields are sealed with.
        labels: Vec<(String, SealCtx)>,
    },
    /// Open the labelled fields (their envelopes); the ones that stay sealed go here.
    Open(Vec<KeptSealed>),
}

impl FieldSeal {
    pub(crate) fn new(seal: Option<Arc<NodeSeal>>) -> Self {
        FieldSeal { seal }
    }

    /// `bytes` (an encoded `schema` message) with every labelled field in clear sealed to its
    /// label's current key, as generated code seals it when it encodes for a peer (the
    /// labelled fields inside a labelled message field sealed first, inside its plaintext).
    /// Fails with [`FieldSealError::NoKey`] when the resolver has no key for a label present,
    /// or the node has no resolver (rather than sending it redacted, as generated code does).
    pub fn seal<M: MessageSchema>(
        &self,
        schema: &M,
        bytes: &[u8],
    ) -> Result<Vec<u8>, FieldSealError> {
        let mut walk = Walk::Seal {
            message_id: random_id(),
            labels: Vec::new(),
        };
        let mut path = Vec::new();
        Ok(self
            .walk(schema, bytes, &mut path, 0, &mut walk)?
            .unwrap_or_else(|| bytes.to_vec()))
    }

    /// `bytes` (an encoded `schema` message from a peer) with its labelled fields opened where
    /// this node holds their key, as generated code opens them when it decodes; the others are
    /// taken out and listed (all of them on a node without a key resolver). Fails on an
    /// envelope that is malformed, moved or tampered with.
    pub fn open<M: MessageSchema>(
        &self,
        schema: &M,
        bytes: &[u8],
    ) -> Result<Opened, FieldSealError> {
        let open = || {
            let mut walk = Walk::Open(Vec::new());
            let mut path = Vec::new();
            let stripped = self.walk(schema, bytes, &mut path, 0, &mut walk)?;
            let sealed = match walk {
                Walk::Open(sealed) => sealed,
                Walk::Seal { .. } => Vec::new(),
            };
            Ok(Opened {
                bytes: stripped.unwrap_or_else(|| bytes.to_vec()),
                sealed,
            })
        };
        match &self.seal {
            Some(seal) => {
                let scope: Arc<dyn Scope> = seal.clone();
                // In the node's scope: the checks and counts of a decode by generated code,
                // with the state of one message (one message id per sender, each slot opened
                // once).
                scope::within(&scope, open)
            }
            None => open(),
        }
    }

    /// Opens `bytes`, the envelope at `site`: its plaintext, `None` when it stays sealed.
    fn open_one(&self, site: &Site<'_>, bytes: &[u8]) -> Result<Option<Vec<u8>>, EnvelopeError> {
        if self.seal.is_some() {
            // In the node's scope (`open`).
            return open_envelope(site, bytes);
        }
        let envelope = Envelope::parse(bytes)?;
        if envelope.label != site.label {
            return Err(EnvelopeError::DoesNotOpen);
        }
        Ok(None)
    }

    /// Walks one message: `Some(new bytes)` when a labelled field in it (or in a message
    /// nested in it) changed, `None` when none did. `depth` is bounded by [`MAX_NESTING`].
    /// `path` is where the message is: (field number, occurrence) from the top message.
    fn walk<M: MessageSchema>(
        &self,
        schema: &M,
        bytes: &[u8],
        path: &mut Vec<(u32, u32)>,
        depth: u32,
        walk: &mut Walk,
    ) -> Result<Option<Vec<u8>>, FieldSealError> {
        let malformed = |reason| FieldSealError::Malformed {
            message: schema.full_name().to_owned(),
            reason,
        };
        if depth >= MAX_NESTING {
            return Err(FieldSealError::TooDeep {
                message: schema.full_name().to_owned(),
            });
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut changed = false;
        // How often each labelled or message field occurred so far (only those can be on a
        // path): an element's index.
        let mut seen = rustc_hash::FxHashMap::<u32, u32>::default();
        let mut occurrence = |number: u32| {
            let count = seen.entry(number).or_insert(0);
            let this = *count;
            *count = count.saturating_add(1);
            this
        };
        let mut buf = bytes;
        while !buf.is_empty() {
            let start = buf;
            let (number, wire_type) =
                decode_key(&mut buf).map_err(|_| malformed("bad field key"))?;
            // For a length-delimited field, its value.
            let mut value = None;
            if wire_type == WireType::LengthDelimited {
                let len = decode_varint(&mut buf)
                    .ok()
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or_else(|| malformed("bad length"))?;
                value = Some(buf.get(..len).ok_or_else(|| malformed("truncated field"))?);
                buf = buf.get(len..).ok_or_else(|| malformed("truncated field"))?;
            } else {
                prost::encoding::skip_field(wire_type, number, &mut buf, DecodeContext::default())
                    .map_err(|_| malformed("bad field"))?;
            }
            let taken = start.len().saturating_sub(buf.len());
            let whole = start
                .get(..taken)
                .ok_or_else(|| malformed("truncated field"))?;
            let field = schema.field(number);
            let label = field.as_ref().and_then(|f| f.label.as_deref());
            // The message type of a length-delimited message field, walked in turn.
            let inner = field
                .as_ref()
                .and_then(|f| f.message.as_ref())
                .filter(|_| value.is_some());
            if let Some(label) = label {
                let at = (number, occurrence(number));
                let site = Site {
                    message: schema.full_name(),
                    field: number,
                    label,
                };
                if label.len() > MAX_LABEL_LEN {
                    return Err(FieldSealError::InvalidLabel {
                        message: site.message.to_owned(),
                        field: number,
                        label: label.to_owned(),
                    });
                }
                changed = true;
                if matches!(walk, Walk::Seal { .. }) {
                    // A labelled message field: its own labelled fields are sealed inside it
                    // first, as generated code seals them.
                    let mut nested = None;
                    if let (Some(inner), Some(value)) = (inner, value) {
                        path.push(at);
                        let walked = self.walk(inner, value, path, depth.saturating_add(1), walk);
                        path.pop();
                        nested = walked?;
                    }
                    let plaintext = match nested {
                        Some(body) => {
                            let mut field = Vec::with_capacity(body.len().saturating_add(8));
                            put_len(number, &body, &mut field);
                            std::borrow::Cow::Owned(field)
                        }
                        None => std::borrow::Cow::Borrowed(whole),
                    };
                    if let Walk::Seal { message_id, labels } = walk {
                        self.seal_field(&site, *message_id, labels, &plaintext, &mut out)?;
                    }
                    continue;
                }
                let envelope = value.ok_or_else(|| refused(&site, "not an envelope"))?;
                let Some(plaintext) = self
                    .open_one(&site, envelope)
                    .map_err(|e| refused(&site, e))?
                else {
                    if let Walk::Open(sealed) = walk {
                        let steps = path.iter().chain([&at]);
                        sealed.push(KeptSealed {
                            path: steps.clone().map(|(number, _)| *number).collect(),
                            occurrences: steps.map(|(_, occurrence)| *occurrence).collect(),
                            label: label.to_owned(),
                            redacted: Envelope::parse(envelope).is_ok_and(|e| !e.sealed),
                        });
                    }
                    continue;
                };
                // The plaintext is the field on its own: its key must be ours.
                let mut pt = plaintext.as_slice();
                let wire = match decode_key(&mut pt) {
                    Ok((tag, wire)) if tag == number => wire,
                    _ => return Err(refused(&site, "its plaintext names another field")),
                };
                match inner {
                    Some(inner) if wire == WireType::LengthDelimited => {
                        // A labelled message field: open the labelled fields sealed inside.
                        let body = decode_varint(&mut pt)
                            .ok()
                            .and_then(|len| usize::try_from(len).ok())
                            .and_then(|len| pt.get(..len))
                            .ok_or_else(|| refused(&site, "its plaintext is truncated"))?;
                        path.push(at);
                        let walked = self.walk(inner, body, path, depth.saturating_add(1), walk);
                        path.pop();
                        match walked? {
                            Some(new) => put_len(number, &new, &mut out),
                            None => out.extend_from_slice(&plaintext),
                        }
                    }
                    _ => out.extend_from_slice(&plaintext),
                }
                continue;
            }
            if let (Some(inner), Some(value)) = (inner, value) {
                path.push((number, occurrence(number)));
                let walked = self.walk(inner, value, path, depth.saturating_add(1), walk);
                path.pop();
                if let Some(new) = walked? {
                    changed = true;
                    put_len(number, &new, &mut out);
                    continue;
                }
            }
            out.extend_from_slice(whole);
        }
        Ok(changed.then_some(out))
    }

    /// Seals `plaintext` (the field, key and value) at `site` as a bytes field into `out`.
    fn seal_field(
        &self,
        site: &Site<'_>,
        message_id: [u8; envelope::MESSAGE_ID_LEN],
        labels: &mut Vec<(String, SealCtx)>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FieldSealError> {
        let no_key = || FieldSealError::NoKey {
            message: site.message.to_owned(),
            field: site.field,
            label: site.label.to_owned(),
        };
        let seal = self.seal.as_ref().ok_or_else(no_key)?;
        let sender = Sender {
            node: seal.node,
            key: &seal.key,
            message_id,
        };
        let at = match labels.iter().position(|(l, _)| l == site.label) {
            Some(at) => at,
            None => {
                let to = seal.resolver.seal_key(site.label).ok_or_else(no_key)?;
                // Not kept (labels here come from schemas known at run time): once per label
                // per message.
                let dh = super::auth_hpke::dh(&seal.key.x25519_secret(), to.public.as_bytes())
                    .ok_or_else(no_key)?;
                let ctx = SealCtx::begin(&to.public, to.epoch, &sender, &dh).ok_or_else(no_key)?;
                count(&seal.counters.envelopes);
                labels.push((site.label.to_owned(), ctx));
                labels.len().saturating_sub(1)
            }
        };
        let ctx = labels.get_mut(at).map(|(_, ctx)| ctx).ok_or_else(no_key)?;
        let mut envelope = Vec::with_capacity(envelope::envelope_len(site.label, plaintext.len()));
        if !ctx.seal(site, &sender, plaintext, &mut envelope) {
            return Err(refused(site, "the label's context sealed its last field"));
        }
        count(&seal.counters.sealed);
        prost::encoding::bytes::encode(site.field, &envelope, out);
        Ok(())
    }
}

/// Appends field `number` as a length-delimited `value`.
fn put_len(number: u32, value: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

fn refused(site: &Site<'_>, reason: impl ToString) -> FieldSealError {
    FieldSealError::Refused {
        message: site.message.to_owned(),
        field: site.field,
        label: site.label.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::identity::NodeId;
    use crate::seal::{KeyPair, Keyring, SealStats};

    /// `t.M { string a = 1 [label user]; t.N n = 2; string plain = 3; t.N inner = 4 [label
    /// user]; repeated t.N many = 5; }`,
    /// `t.N { string b = 1 [label user]; }`, or the same fields under another message name.
    #[derive(Clone)]
    struct Schema(&'static str);

    impl MessageSchema for Schema {
        fn full_name(&self) -> &str {
            self.0
        }
        fn field(&self, number: u32) -> Option<FieldSchema<Self>> {
            let user = Some("user".to_owned());
            match (self.0, number) {
                ("t.N", 1) => Some(FieldSchema::new(user, None)),
                (_, 1) => Some(FieldSchema::new(user, None)),
                ("t.N", _) => None,
                (_, 2) => Some(FieldSchema::new(None, Some(Schema("t.N")))),
                (_, 3) => Some(FieldSchema::new(None, None)),
                // `t.N inner = 4 [label user]; repeated t.N many = 5;`
                (_, 4) => Some(FieldSchema::new(user, Some(Schema("t.N")))),
                (_, 5) => Some(FieldSchema::new(None, Some(Schema("t.N")))),
                _ => None,
            }
        }
    }

    fn string(tag: u32, value: &str, out: &mut Vec<u8>) {
        prost::encoding::string::encode(tag, &value.to_owned(), out);
    }

    /// `a = "hi", n = { b = "x" }, plain = "p"`.
    fn message() -> Vec<u8> {
        let mut inner = Vec::new();
        string(1, "x", &mut inner);
        let mut out = Vec::new();
        string(1, "hi", &mut out);
        prost::encoding::bytes::encode(2, &inner, &mut out);
        string(3, "p", &mut out);
        out
    }

    fn seal_of(id: u8, ring: Keyring) -> (FieldSeal, NodeId, KeyPair) {
        let node = NodeId::from_bytes([id; 16]);
        let key = KeyPair::generate();
        let seal = NodeSeal::new(node, key.clone(), Arc::new(ring));
        (FieldSeal::new(Some(Arc::new(seal))), node, key)
    }

    /// A node holding `user` (epoch 1) that knows `sender`'s sealing key.
    fn holder_of(user: &KeyPair, sender: NodeId, sender_key: &KeyPair) -> FieldSeal {
        let ring = Keyring::new();
        ring.hold("user", 1, user);
        let (holder, _, _) = seal_of(2, ring);
        holder
            .seal
            .as_ref()
            .unwrap()
            .announce(sender, sender_key.public());
        holder
    }

    #[test]
    fn sealed_fields_open_for_a_holder_stay_sealed_for_others_and_refuse_moves() {
        let user = KeyPair::generate();
        let ring = Keyring::new();
        ring.seal_to("user", 1, user.public());
        let (sender, sender_id, sender_key) = seal_of(1, ring);
        let sealed = sender.seal(&Schema("t.M"), &message()).unwrap();
        assert_ne!(sealed, message());
        assert!(!sealed.windows(2).any(|w| w == b"hi"), "a is sealed");
        assert_eq!(sender.seal.as_ref().unwrap().stats().sealed, 2);
        assert_eq!(
            sender.seal.as_ref().unwrap().stats().envelopes,
            1,
            "one context for the label"
        );

        // The holder, who knows the sender's key, opens both.
        let holder = holder_of(&user, sender_id, &sender_key);
        let opened = holder.open(&Schema("t.M"), &sealed).unwrap();
        assert_eq!(opened.bytes, message());
        assert!(opened.sealed.is_empty());
        assert_eq!(holder.seal.as_ref().unwrap().stats().opened, 2);

        // Another node: both taken out and listed, the rest as it was.
        let (other, _, _) = seal_of(3, Keyring::new());
        let kept = other.open(&Schema("t.M"), &sealed).unwrap();
        let paths: Vec<_> = kept.sealed.iter().map(|k| k.path.clone()).collect();
        assert_eq!(paths, [vec![1], vec![2, 1]]);
        let mut rest = Vec::new();
        prost::encoding::bytes::encode(2, &Vec::new(), &mut rest);
        string(3, "p", &mut rest);
        assert_eq!(kept.bytes, rest);
        assert_eq!(other.seal.as_ref().unwrap().stats().kept_sealed, 2);

        // Moved to another message, or tampered with: refused.
        let moved = holder.open(&Schema("t.Other"), &sealed).unwrap_err();
        assert!(matches!(moved, FieldSealError::Refused { .. }), "{moved}");
        // The last byte of the first envelope (field 1: key, length, then its tag's end).
        let first = envelope::envelope_len("user", 4);
        let at = 1 + prost::encoding::encoded_len_varint(first as u64) + first - 1;
        let mut tampered = sealed.clone();
        tampered[at] ^= 1;
        let err = holder.open(&Schema("t.M"), &tampered).unwrap_err();
        assert!(
            matches!(err, FieldSealError::Refused { field: 1, .. }),
            "{err}"
        );
        assert!(holder.seal.as_ref().unwrap().stats().refused >= 1);
        let stats: SealStats = holder.seal.as_ref().unwrap().stats();
        assert_eq!(stats.opened, 2, "nothing more opened");
    }

    #[test]
    fn no_key_to_seal_to_is_an_error_not_a_redaction() {
        let (sender, _, _) = seal_of(1, Keyring::new());
        let err = sender.seal(&Schema("t.M"), &message()).unwrap_err();
        assert!(
            matches!(&err, FieldSealError::NoKey { field: 1, label, .. } if label == "user"),
            "{err}"
        );
        // Without a labelled field there is nothing to seal.
        let mut plain = Vec::new();
        string(3, "p", &mut plain);
        assert_eq!(sender.seal(&Schema("t.M"), &plain).unwrap(), plain);
        assert!(sender.open(&Schema("t.M"), &[0xff]).is_err(), "malformed");
    }

    /// `inner = { b = "x" }, many = [{ b = "y" }, { b = "z" }], plain = "p"`.
    fn nested() -> Vec<u8> {
        let n = |b: &str| {
            let mut inner = Vec::new();
            string(1, b, &mut inner);
            inner
        };
        let mut out = Vec::new();
        prost::encoding::bytes::encode(4, &n("x"), &mut out);
        prost::encoding::bytes::encode(5, &n("y"), &mut out);
        prost::encoding::bytes::encode(5, &n("z"), &mut out);
        string(3, "p", &mut out);
        out
    }

    #[test]
    fn labelled_message_fields_and_repeated_ones_are_walked() {
        let user = KeyPair::generate();
        let ring = Keyring::new();
        ring.seal_to("user", 1, user.public());
        let (sender, sender_id, sender_key) = seal_of(1, ring);
        let sealed = sender.seal(&Schema("t.M"), &nested()).unwrap();
        for clear in [b"x", b"y", b"z"] {
            assert!(
                !sealed.windows(3).any(|w| w == [0x0a, 0x01, clear[0]]),
                "{} is sealed",
                clear[0] as char
            );
        }
        // `inner`, the `b` inside it, and each element's `b`.
        assert_eq!(sender.seal.as_ref().unwrap().stats().sealed, 4);

        let holder = holder_of(&user, sender_id, &sender_key);
        let opened = holder.open(&Schema("t.M"), &sealed).unwrap();
        assert_eq!(opened.bytes, nested());
        assert!(opened.sealed.is_empty());
        assert_eq!(holder.seal.as_ref().unwrap().stats().opened, 4);

        // A node without a key resolver seals nothing and opens nothing.
        let none = FieldSeal::new(None);
        let kept = none.open(&Schema("t.M"), &sealed).unwrap();
        let paths: Vec<_> = kept.sealed.iter().map(|k| k.path.clone()).collect();
        assert_eq!(paths, [vec![4], vec![5, 1], vec![5, 1]]);
        // Each element of `many` by its index, so that a reader can tell which one it was.
        let occurrences: Vec<_> = kept.sealed.iter().map(|k| k.occurrences.clone()).collect();
        assert_eq!(occurrences, [vec![0], vec![0, 0], vec![1, 0]]);
        assert!(kept.sealed.iter().all(|k| !k.redacted && k.label == "user"));
        // (`inner`'s own field first: it is sealed inside `inner`'s plaintext.)
        assert!(matches!(
            none.seal(&Schema("t.M"), &nested()),
            Err(FieldSealError::NoKey { field: 1, ref message, .. }) if message == "t.N"
        ));
    }

    #[test]
    fn a_redacted_field_is_told_from_a_sealed_one() {
        let mut redacted = Vec::new();
        envelope::redacted("user", 4, &mut redacted);
        let mut message = Vec::new();
        prost::encoding::bytes::encode(1, &redacted, &mut message);
        let (other, _, _) = seal_of(3, Keyring::new());
        let kept = other.open(&Schema("t.M"), &message).unwrap();
        assert_eq!(kept.sealed.len(), 1);
        assert!(kept.sealed.iter().all(|k| k.redacted && k.path == [1]));
        assert!(kept.bytes.is_empty());
    }
}
