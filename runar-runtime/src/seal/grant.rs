//! Key grants: a label's key pair of one epoch wrapped to a user profile's public key, so that
//! whoever holds the profile's private key can open the label (`Keyring::add_profile`).
//!
//! # Format (version 1)
//!
//! `0x01 | u8 label_len | label | u32_be epoch | u8 profile_len | profile id | enc (32) |
//! ciphertext (32 + 16)`. The ciphertext is HPKE (RFC 9180) base mode, DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, `info = "runar/seal/v1/grant"`, sealing the
//! label key's 32 secret bytes to the profile's public key; the associated data is every byte
//! before `enc`, so a grant cannot be moved to another label, epoch or profile.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};

use super::envelope::MAX_LABEL_LEN;
use super::keys::{KEY_LEN, Kem, KeyError, KeyPair, PublicKey};

const VERSION: u8 = 1;
const INFO: &[u8] = b"runar/seal/v1/grant";
const TAG_LEN: usize = 16;
/// The longest profile id a grant carries, in bytes.
pub const MAX_PROFILE_ID_LEN: usize = 255;

/// A label's key pair of one epoch, wrapped to one user profile's public key: the profile's
/// holder [`open`](Self::open)s it and holds the label (`Keyring::hold`). Made by
/// `Keyring::add_profile` and `Keyring::remove_profile`; [`to_bytes`](Self::to_bytes) is what
/// is handed to the profile's holder. The format is in the module's source documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyGrant {
    label: String,
    epoch: u32,
    profile: String,
    enc: [u8; KEY_LEN],
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for KeyGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGrant")
            .field("label", &self.label)
            .field("epoch", &self.epoch)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

fn header(label: &str, epoch: u32, profile: &str) -> Result<Vec<u8>, KeyError> {
    let label_len = u8::try_from(label.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_LABEL_LEN)
        .ok_or(KeyError::TooLong("label"))?;
    let profile_len = u8::try_from(profile.len()).map_err(|_| KeyError::TooLong("profile id"))?;
    let mut out = Vec::with_capacity(7 + label.len() + profile.len() + KEY_LEN * 2 + TAG_LEN);
    out.push(VERSION);
    out.push(label_len);
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(profile_len);
    out.extend_from_slice(profile.as_bytes());
    Ok(out)
}

impl KeyGrant {
    /// Wraps `pair` (`label`'s key of `epoch`) to `to`, the public key of profile `profile`.
    pub fn wrap(
        label: &str,
        epoch: u32,
        profile: &str,
        pair: &KeyPair,
        to: &PublicKey,
    ) -> Result<Self, KeyError> {
        let aad = header(label, epoch, profile)?;
        let recipient = to.to_hpke().ok_or(KeyError::InvalidKey)?;
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &recipient,
            INFO,
            &pair.secret_bytes(),
            &aad,
            &mut rng,
        )
        .map_err(|_| KeyError::InvalidKey)?;
        let mut enc_bytes = [0u8; KEY_LEN];
        enc_bytes.copy_from_slice(&enc.to_bytes());
        Ok(KeyGrant {
            label: label.to_owned(),
            epoch,
            profile: profile.to_owned(),
            enc: enc_bytes,
            ciphertext,
        })
    }

    /// The label key pair, opened with the profile's key pair; `GrantDoesNotOpen` when it is
    /// not the profile's, or the grant was altered.
    pub fn open(&self, profile: &KeyPair) -> Result<KeyPair, KeyError> {
        let aad = header(&self.label, self.epoch, &self.profile)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&self.enc)
            .map_err(|_| KeyError::GrantDoesNotOpen)?;
        let secret = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            profile.hpke_secret(),
            &enc,
            INFO,
            &self.ciphertext,
            &aad,
        )
        .map_err(|_| KeyError::GrantDoesNotOpen)?;
        let secret: [u8; KEY_LEN] = secret
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::GrantDoesNotOpen)?;
        KeyPair::from_secret_bytes(&secret)
    }

    /// The label the grant is for.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The label key's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The profile the grant is wrapped to.
    pub fn profile_id(&self) -> &str {
        &self.profile
    }

    /// The grant's bytes (format in the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        // The label and profile lengths were checked when the grant was made or parsed.
        let mut out = header(&self.label, self.epoch, &self.profile).unwrap_or_default();
        out.extend_from_slice(&self.enc);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses a grant's bytes; every length is checked.
    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self, KeyError> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], KeyError> {
            if b.len() < n {
                return Err(KeyError::MalformedGrant);
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        let b = &mut bytes;
        if take(b, 1)? != [VERSION] {
            return Err(KeyError::MalformedGrant);
        }
        let label_len = take(b, 1)?.first().copied().unwrap_or(0);
        let label = std::str::from_utf8(take(b, usize::from(label_len))?)
            .map_err(|_| KeyError::MalformedGrant)?
            .to_owned();
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(take(b, 4)?);
        let profile_len = take(b, 1)?.first().copied().unwrap_or(0);
        let profile = std::str::from_utf8(take(b, usize::from(profile_len))?)
            .map_err(|_| KeyError::MalformedGrant)?
            .to_owned();
        let mut enc = [0u8; KEY_LEN];
        enc.copy_from_slice(take(b, KEY_LEN)?);
        if b.len() != KEY_LEN + TAG_LEN || label.len() > MAX_LABEL_LEN {
            return Err(KeyError::MalformedGrant);
        }
        Ok(KeyGrant {
            label,
            epoch: u32::from_be_bytes(epoch),
            profile,
            enc,
            ciphertext: b.to_vec(),
        })
    }
}
