//! The envelope a sealed field carries on the wire (its layout is in `proto/runar/v1/README.md`,
//! "Sealed fields"), and the seal and open of its plaintext.
//!
//! One HPKE context per label per message: the first field of a label a message seals sets it
//! up ([`SealCtx::begin`]: one encapsulation, one key schedule), and every field of that label
//! in the message is sealed with the key the context exports, under its own sequence number.
//! Each field keeps its own slot (prost encodes and decodes field by field); the slots of one
//! context share its encapsulated key, and a receiver sets the context up once
//! ([`OpenCtx::new`]) for all of them.

use std::sync::OnceLock;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::auth_hpke::{Shared, Suite};
use super::keys::{KEY_ID_LEN, KEY_LEN, KeyId, KeyPair, PublicKey};
use crate::identity::NodeId;

/// The envelope format's version (1: one HPKE setup per field; 2: per label per message).
const VERSION: u8 = 2;
/// `kind` of an envelope with ciphertext.
const KIND_SEALED: u8 = 1;
/// `kind` of an envelope whose sender held no key for its label: zeros, never opens.
const KIND_REDACTED: u8 = 0;
/// The longest label: longer ones are refused by code generation.
pub const MAX_LABEL_LEN: usize = 64;
/// Length of the per-message id.
pub(crate) const MESSAGE_ID_LEN: usize = 16;
const NODE_ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
const SEQ_LEN: usize = 4;
/// HPKE's `info` for every context.
const INFO: &[u8] = b"runar/seal/v2";
/// The exporter context of the fields' key.
const EXPORT_FIELDS: &[u8] = b"runar/seal/v2 fields";
/// The HPKE contexts of envelopes: `INFO`, and the fields' key exported from each.
static FIELDS: Suite = Suite {
    info: INFO,
    export: EXPORT_FIELDS,
    context: OnceLock::new(),
};
/// The associated data's prefix.
const AAD_PREFIX: &[u8] = b"runar/seal/v2\0";

/// Bytes an envelope adds to its plaintext, besides its label.
const FIXED_LEN: usize =
    3 + KEY_ID_LEN + 4 + MESSAGE_ID_LEN + NODE_ID_LEN + KEY_LEN + KEY_LEN + SEQ_LEN + TAG_LEN;

/// The label as written: at most [`MAX_LABEL_LEN`] bytes (code generation refuses longer ones).
fn label_bytes(label: &str) -> &[u8] {
    let bytes = label.as_bytes();
    bytes.get(..MAX_LABEL_LEN).unwrap_or(bytes)
}

/// The length of the envelope of a `plaintext_len`-byte plaintext under `label`, sealed or
/// redacted alike.
pub(crate) fn envelope_len(label: &str, plaintext_len: usize) -> usize {
    FIXED_LEN
        .saturating_add(label_bytes(label).len())
        .saturating_add(plaintext_len)
}

/// Where a sealed field sits: what the associated data binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site<'a> {
    /// The message's full protobuf name.
    pub(crate) message: &'a str,
    /// The field number.
    pub(crate) field: u32,
    /// The field's label.
    pub(crate) label: &'a str,
}

/// A parsed envelope, borrowing its bytes.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub(crate) sealed: bool,
    pub(crate) label: &'a str,
    pub(crate) key_id: KeyId,
    pub(crate) epoch: u32,
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
    pub(crate) sender: NodeId,
    pub(crate) sender_key: [u8; KEY_LEN],
    /// The HPKE encapsulated key: the same in every envelope of one label in one message.
    pub(crate) enc: [u8; KEY_LEN],
    /// The field's sequence number in its context (0 for the label's first field sealed).
    pub(crate) seq: u32,
    ciphertext: &'a [u8],
}

/// Why an envelope is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("malformed sealed-field envelope: {0}")]
    Malformed(&'static str),
    #[error("sealed field does not open (moved, tampered with, or not sealed to this key)")]
    DoesNotOpen,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], EnvelopeError> {
    if bytes.len() < n {
        return Err(EnvelopeError::Malformed("too short"));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn array<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], EnvelopeError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(bytes, N)?);
    Ok(out)
}

impl<'a> Envelope<'a> {
    /// Parses `bytes`; every length is checked.
    pub(crate) fn parse(mut bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let b = &mut bytes;
        let [version, kind, label_len] = array::<3>(b)?;
        if version != VERSION {
            return Err(EnvelopeError::Malformed("unknown version"));
        }
        let sealed = match kind {
            KIND_SEALED => true,
            KIND_REDACTED => false,
            _ => return Err(EnvelopeError::Malformed("unknown kind")),
        };
        let label = std::str::from_utf8(take(b, usize::from(label_len))?)
            .map_err(|_| EnvelopeError::Malformed("label not UTF-8"))?;
        let key_id = KeyId(array(b)?);
        let epoch = u32::from_be_bytes(array(b)?);
        let message_id = array(b)?;
        let sender = NodeId::from_bytes(array(b)?);
        let sender_key = array(b)?;
        let enc = array(b)?;
        let seq = u32::from_be_bytes(array(b)?);
        if b.len() < TAG_LEN {
            return Err(EnvelopeError::Malformed("too short"));
        }
        Ok(Envelope {
            sealed,
            label,
            key_id,
            epoch,
            message_id,
            sender,
            sender_key,
            enc,
            seq,
            ciphertext: b,
        })
    }

    /// Opens the envelope with `ctx` (its context: see [`OpenCtx::new`]) at `site`.
    pub(crate) fn open(&self, site: &Site<'_>, ctx: &OpenCtx) -> Result<Vec<u8>, EnvelopeError> {
        let aad = aad(
            site,
            &self.key_id,
            self.epoch,
            &self.message_id,
            &self.sender,
            self.seq,
        );
        let mut buf = self.ciphertext.to_vec();
        let len = ctx
            .key
            .open_in_place(nonce(self.seq), Aad::from(aad), &mut buf)
            .map_err(|_| EnvelopeError::DoesNotOpen)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The nonce of sequence number `seq` (each context has a key of its own).
fn nonce(seq: u32) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[8..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// The fields' AEAD key, from the secret an HPKE context exports.
fn fields_key(secret: &[u8; 32]) -> Option<LessSafeKey> {
    let key = UnboundKey::new(&CHACHA20_POLY1305, secret).ok()?;
    Some(LessSafeKey::new(key))
}

/// A receiver's context of one label in one message: set up once, opens each of its fields.
pub(crate) struct OpenCtx {
    key: LessSafeKey,
}

impl OpenCtx {
    /// Sets up the context of `envelope` with `key` (the label's key pair of its key id and
    /// epoch), sealed by `sender_key` (the key the resolver knows for its sender): one HPKE
    /// auth-mode decapsulation and key schedule. `static_dh` is the DH of `key` with
    /// `sender_key` (`auth_hpke::dh`), which the caller keeps for the pair.
    pub(crate) fn new(
        envelope: &Envelope<'_>,
        key: &KeyPair,
        sender_key: &PublicKey,
        static_dh: &Shared,
    ) -> Result<Self, EnvelopeError> {
        let secret = FIELDS
            .open(
                &envelope.enc,
                &key.x25519_secret(),
                key.public().as_bytes(),
                sender_key.as_bytes(),
                static_dh,
            )
            .ok_or(EnvelopeError::DoesNotOpen)?;
        let key = fields_key(&secret).ok_or(EnvelopeError::DoesNotOpen)?;
        Ok(OpenCtx { key })
    }
}

/// The associated data binding an envelope to its place (see the README).
fn aad(
    site: &Site<'_>,
    key_id: &KeyId,
    epoch: u32,
    message_id: &[u8; MESSAGE_ID_LEN],
    sender: &NodeId,
    seq: u32,
) -> Vec<u8> {
    let message = site.message.as_bytes();
    let message = message.get(..usize::from(u16::MAX)).unwrap_or(message);
    let label = label_bytes(site.label);
    let mut aad =
        Vec::with_capacity(AAD_PREFIX.len() + 2 + message.len() + 4 + 1 + label.len() + 48);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(
        &u16::try_from(message.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    aad.extend_from_slice(message);
    aad.extend_from_slice(&site.field.to_be_bytes());
    aad.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(label);
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(sender.as_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad
}

/// The sender's side of a seal.
pub(crate) struct Sender<'a> {
    pub(crate) node: NodeId,
    pub(crate) key: &'a KeyPair,
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
}

/// A sender's context of one label in one message: set up for its first field, seals them all.
pub(crate) struct SealCtx {
    key_id: KeyId,
    epoch: u32,
    enc: [u8; KEY_LEN],
    key: LessSafeKey,
    /// The next field's sequence number.
    next: u32,
}

impl SealCtx {
    /// Sets up a context to `to` (a label key of `epoch`) from `sender`: one HPKE auth-mode
    /// encapsulation and key schedule. `static_dh` is the DH of the sender's key with `to`
    /// (`auth_hpke::dh`), which the caller keeps for the pair. `None` on a failure (a bad
    /// recipient key, no randomness).
    pub(crate) fn begin(
        to: &PublicKey,
        epoch: u32,
        sender: &Sender<'_>,
        static_dh: &Shared,
    ) -> Option<Self> {
        let mut ephemeral = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut ephemeral).ok()?;
        let (enc, secret) = FIELDS.seal(
            ephemeral,
            to.as_bytes(),
            sender.key.public().as_bytes(),
            static_dh,
        )?;
        let key = fields_key(&secret)?;
        Some(SealCtx {
            key_id: to.key_id(),
            epoch,
            enc,
            key,
            next: 0,
        })
    }

    /// Writes the envelope sealing `plaintext` at `site` from `sender` into `out`, the
    /// context's next field. On a failure (a context that sealed 2^32 fields) writes a
    /// redacted envelope and answers false. Writes exactly [`envelope_len`] bytes either way.
    pub(crate) fn seal(
        &mut self,
        site: &Site<'_>,
        sender: &Sender<'_>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let seq = self.next;
        let Some(next) = seq.checked_add(1) else {
            redacted(site.label, plaintext.len(), out);
            return false;
        };
        let aad = aad(
            site,
            &self.key_id,
            self.epoch,
            &sender.message_id,
            &sender.node,
            seq,
        );
        let label = label_bytes(site.label);
        let start = out.len();
        out.reserve(envelope_len(site.label, plaintext.len()));
        out.extend_from_slice(&[
            VERSION,
            KIND_SEALED,
            u8::try_from(label.len()).unwrap_or(u8::MAX),
        ]);
        out.extend_from_slice(label);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&sender.message_id);
        out.extend_from_slice(sender.node.as_bytes());
        out.extend_from_slice(sender.key.public().as_bytes());
        out.extend_from_slice(&self.enc);
        out.extend_from_slice(&seq.to_be_bytes());
        let body = out.len();
        out.extend_from_slice(plaintext);
        let tag = out.get_mut(body..).and_then(|in_out| {
            self.key
                .seal_in_place_separate_tag(nonce(seq), Aad::from(aad), in_out)
                .ok()
        });
        let Some(tag) = tag else {
            out.truncate(start);
            redacted(site.label, plaintext.len(), out);
            return false;
        };
        out.extend_from_slice(tag.as_ref());
        self.next = next;
        true
    }
}

/// Writes a redacted envelope for a `plaintext_len`-byte plaintext under `label`: the header
/// and zeros, [`envelope_len`] bytes.
pub(crate) fn redacted(label: &str, plaintext_len: usize, out: &mut Vec<u8>) {
    let label_b = label_bytes(label);
    let len = envelope_len(label, plaintext_len);
    out.reserve(len);
    out.extend_from_slice(&[
        VERSION,
        KIND_REDACTED,
        u8::try_from(label_b.len()).unwrap_or(u8::MAX),
    ]);
    out.extend_from_slice(label_b);
    let rest = len.saturating_sub(3 + label_b.len());
    out.resize(out.len().saturating_add(rest), 0);
}
