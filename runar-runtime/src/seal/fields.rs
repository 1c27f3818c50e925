//! Sealing and opening labelled fields by name, for code that knows a message only from its
//! schema (the gRPC gateway): the same envelopes, contexts and counters as a generated
//! message's [`Sealed`](super::Sealed) fields, without their marker types.

use super::envelope::{self, Envelope, MESSAGE_ID_LEN, SealCtx, Sender, Site};
use super::{NodeSeal, count, random_id};
use crate::error::Error;
use crate::log_limit::warn_limited;

/// One message's labelled fields, sealed or opened by name (see `Node::with_sealed_fields`).
///
/// A field's *plaintext* is its protobuf encoding, key and value, as a generated message
/// encodes it (`string name = 2` holding `"Ada"`: `0x12 0x03 A d a`); its *envelope* is what
/// goes in the field's place on the wire, as a `bytes` value of the same number. All the fields
/// sealed through one `SealFields` belong to one message: one envelope (one HPKE context) per
/// label, one message id.
pub struct SealFields<'a> {
    seal: Option<&'a NodeSeal>,
    id: Option<[u8; MESSAGE_ID_LEN]>,
    labels: Vec<(String, Option<SealCtx>)>,
}

/// What [`SealFields::open`] found in an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldOpened {
    /// The field's plaintext (its key and value).
    Open(Vec<u8>),
    /// Sealed to a key (or by a sender) this node does not hold (or know).
    Sealed,
    /// Redacted: its sender held no key for the label.
    Redacted,
}

impl<'a> SealFields<'a> {
    pub(crate) fn new(seal: Option<&'a NodeSeal>) -> Self {
        SealFields {
            seal,
            id: None,
            labels: Vec::new(),
        }
    }

    /// True when this node can seal to `label` (its resolver has a key for it).
    pub fn can_seal(&self, label: &str) -> bool {
        self.seal
            .is_some_and(|s| s.resolver.seal_key(label).is_some())
    }

    /// The envelope sealing `plaintext` (field `field` of message `message`, full protobuf
    /// name, labelled `label`), or `None` when this node has no key to seal to `label` (or no
    /// resolver).
    pub fn seal(
        &mut self,
        message: &str,
        field: u32,
        label: &str,
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        let seal = self.seal?;
        let message_id = *self.id.get_or_insert_with(random_id);
        let sender = Sender {
            node: seal.node,
            key: &seal.key,
            message_id,
        };
        let at = match self.labels.iter().position(|(l, _)| l == label) {
            Some(at) => at,
            None => {
                let ctx = seal.resolver.seal_key(label).and_then(|to| {
                    let dh = super::auth_hpke::dh(&seal.key.x25519_secret(), to.public.as_bytes())?;
                    let ctx = SealCtx::begin(&to.public, to.epoch, &sender, &dh);
                    if ctx.is_some() {
                        count(&seal.counters.envelopes);
                    }
                    ctx
                });
                self.labels.push((label.to_owned(), ctx));
                self.labels.len().saturating_sub(1)
            }
        };
        let ctx = self.labels.get_mut(at).and_then(|(_, ctx)| ctx.as_mut())?;
        let site = Site {
            message,
            field,
            label,
        };
        let mut out = Vec::with_capacity(envelope::envelope_len(label, plaintext.len()));
        if ctx.seal(&site, &sender, plaintext, &mut out) {
            count(&seal.counters.sealed);
            Some(out)
        } else {
            count(&seal.counters.redacted);
            None
        }
    }

    /// Opens `envelope`, the value of field `field` (labelled `label`) of message `message`:
    /// its plaintext, or why it stays closed. An envelope that is malformed, of another label,
    /// moved from another field or message, or tampered with is an `InvalidArgument` error.
    pub fn open(
        &mut self,
        message: &str,
        field: u32,
        label: &str,
        envelope: &[u8],
    ) -> Result<FieldOpened, Error> {
        let site = Site {
            message,
            field,
            label,
        };
        let result = Envelope::parse(envelope).and_then(|parsed| {
            if parsed.label != label {
                return Err(envelope::EnvelopeError::DoesNotOpen);
            }
            if !parsed.sealed {
                return Ok(FieldOpened::Redacted);
            }
            match self.seal {
                Some(seal) => Ok(match seal.open(&site, &parsed)? {
                    Some(plaintext) => FieldOpened::Open(plaintext),
                    None => FieldOpened::Sealed,
                }),
                None => Ok(FieldOpened::Sealed),
            }
        });
        if let Some(seal) = self.seal {
            match &result {
                Ok(FieldOpened::Open(_)) => count(&seal.counters.opened),
                Ok(_) => count(&seal.counters.kept_sealed),
                Err(e) => {
                    count(&seal.counters.refused);
                    warn_limited!(message, field, "sealed field refused: {e}");
                }
            }
        }
        result.map_err(|e| Error::invalid_argument(format!("field {field} of {message}: {e}")))
    }
}
