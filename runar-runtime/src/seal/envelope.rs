//! The envelope a sealed field carries on the wire (its layout is in `proto/runar/v1/README.md`,
//! "Sealed fields"), and the HPKE seal and open of its plaintext.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};

use super::keys::{KEY_ID_LEN, KEY_LEN, Kem, KeyId, KeyPair, PublicKey};
use crate::identity::NodeId;

/// The envelope format's version.
const VERSION: u8 = 1;
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
/// HPKE's `info` for every envelope.
const INFO: &[u8] = b"runar/seal/v1";
/// The associated data's prefix.
const AAD_PREFIX: &[u8] = b"runar/seal/v1\0";

/// Bytes an envelope adds to its plaintext, besides its label.
const FIXED_LEN: usize =
    3 + KEY_ID_LEN + 4 + MESSAGE_ID_LEN + NODE_ID_LEN + KEY_LEN + KEY_LEN + TAG_LEN;

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
    enc: &'a [u8],
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
        let enc = take(b, KEY_LEN)?;
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
            ciphertext: b,
        })
    }

    /// Opens the envelope with `key` (the label's key pair of its key id and epoch), sealed by
    /// `sender_key` (the key the resolver knows for its sender), at `site`.
    pub(crate) fn open(
        &self,
        site: &Site<'_>,
        key: &KeyPair,
        sender_key: &PublicKey,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let sender = sender_key.to_hpke().ok_or(EnvelopeError::DoesNotOpen)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(self.enc)
            .map_err(|_| EnvelopeError::DoesNotOpen)?;
        let aad = aad(
            site,
            &self.key_id,
            self.epoch,
            &self.message_id,
            &self.sender,
        );
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Auth(sender),
            key.hpke_secret(),
            &enc,
            INFO,
            self.ciphertext,
            &aad,
        )
        .map_err(|_| EnvelopeError::DoesNotOpen)
    }
}

/// The associated data binding an envelope to its place (see the README).
fn aad(
    site: &Site<'_>,
    key_id: &KeyId,
    epoch: u32,
    message_id: &[u8; MESSAGE_ID_LEN],
    sender: &NodeId,
) -> Vec<u8> {
    let message = site.message.as_bytes();
    let message = message.get(..usize::from(u16::MAX)).unwrap_or(message);
    let label = label_bytes(site.label);
    let mut aad =
        Vec::with_capacity(AAD_PREFIX.len() + 2 + message.len() + 4 + 1 + label.len() + 44);
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
    aad
}

/// The sender's side of a seal.
pub(crate) struct Sender<'a> {
    pub(crate) node: NodeId,
    pub(crate) key: &'a KeyPair,
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
}

/// Writes the envelope sealing `plaintext` at `site` to `to` (a label key of `epoch`), from
/// `sender`, into `out`. On an HPKE failure (a bad recipient key) writes a redacted envelope.
/// Writes exactly [`envelope_len`] bytes either way.
pub(crate) fn seal(
    site: &Site<'_>,
    to: &PublicKey,
    epoch: u32,
    sender: &Sender<'_>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let key_id = to.key_id();
    let sealed = to.to_hpke().and_then(|recipient| {
        let aad = aad(site, &key_id, epoch, &sender.message_id, &sender.node);
        let sender_pair = (
            sender.key.hpke_secret().clone(),
            sender.key.public().to_hpke()?,
        );
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &OpModeS::Auth(sender_pair),
            &recipient,
            INFO,
            plaintext,
            &aad,
            &mut rng,
        )
        .ok()
    });
    match sealed {
        Some((enc, ciphertext)) => {
            let label = label_bytes(site.label);
            out.reserve(envelope_len(site.label, plaintext.len()));
            out.extend_from_slice(&[
                VERSION,
                KIND_SEALED,
                u8::try_from(label.len()).unwrap_or(u8::MAX),
            ]);
            out.extend_from_slice(label);
            out.extend_from_slice(key_id.as_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&sender.message_id);
            out.extend_from_slice(sender.node.as_bytes());
            out.extend_from_slice(sender.key.public().as_bytes());
            out.extend_from_slice(&enc.to_bytes());
            out.extend_from_slice(&ciphertext);
            true
        }
        None => {
            redacted(site.label, plaintext.len(), out);
            false
        }
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
