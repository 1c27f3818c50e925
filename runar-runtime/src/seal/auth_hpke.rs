//! The part of HPKE (RFC 9180) an envelope uses, written out so its static-static DH is done
//! once and not per message: DHKEM(X25519, HKDF-SHA256) in auth mode, the key schedule of
//! suite (X25519, HKDF-SHA256, ChaCha20-Poly1305) with an empty PSK, and the context's secret
//! export (the only thing an envelope takes from its context).
//!
//! Auth mode mixes two DHs into the shared secret: the ephemeral key with the recipient's, and
//! the sender's static key with the recipient's (RFC 9180 §4.1, `AuthEncap`/`AuthDecap`). The
//! second depends only on the two static keys, so the node computes it once per (sealing key,
//! label key) pair ([`dh`]) and passes it in; the `hpke` crate's `setup_sender` and
//! `setup_receiver` redo it, with a public key recomputed from its secret, on every call. The
//! bytes are the RFC's: the tests check both sides against the `hpke` crate.
//!
//! X25519 is `x25519-dalek` (the `hpke` crate's), HMAC-SHA256 is ring's.

use std::sync::OnceLock;

use curve25519_dalek::MontgomeryPoint;
use ring::hmac;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use super::keys::KEY_LEN;

/// `suite_id` of the KEM: "KEM" || I2OSP(0x0020, 2), DHKEM(X25519, HKDF-SHA256).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
/// `suite_id` of the key schedule: "HPKE" || KEM 0x0020 || KDF 0x0001 (HKDF-SHA256) || AEAD
/// 0x0003 (ChaCha20-Poly1305).
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// `mode_auth`.
const MODE_AUTH: u8 = 0x02;
/// Output length of every expand here (Nsecret = Nh = 32; the export is 32 bytes too).
const OUT_LEN: usize = 32;

/// A DH result of 32 bytes; `None` from [`dh`] when it is all zeros (RFC 9180 §7.1.4: a
/// low-order public key; the sender or recipient must abort).
pub(crate) type Shared = [u8; KEY_LEN];

/// X25519 of `secret` with `public`, refused when all zeros. Also auth mode's static-static
/// DH, computed once per pair of keys: the sender's sealing key with the label's key on the
/// sender's side, the label's key with the sender's key on the recipient's; the same 32 bytes.
///
/// The same function as RFC 7748's ladder (`x25519_dalek`'s `diffie_hellman`), computed
/// through the Edwards form when `public` is on the curve: its variable-base multiplication
/// (constant time in the secret, AVX2 where the CPU has it) costs about a third fewer
/// instructions than the ladder. The u-coordinate of [k]P does not depend on P's sign, and the
/// clamped scalar is used unreduced, so the result is the ladder's; a `public` on the twist
/// takes the ladder.
pub(crate) fn dh(secret: &StaticSecret, public: &[u8; KEY_LEN]) -> Option<Shared> {
    let point = MontgomeryPoint(*public);
    let scalar = secret.to_bytes();
    let shared = match point.to_edwards(0) {
        Some(edwards) => edwards.mul_clamped(scalar).to_montgomery(),
        None => point.mul_clamped(scalar),
    };
    // RFC 9180 §7.1.4: refuse an all-zero result (a low-order `public`); the bytes are
    // folded without a branch, only the answer (zero or not) is revealed.
    let any = std::hint::black_box(shared.0.iter().fold(0u8, |acc, b| acc | b));
    (any != 0).then_some(shared.0)
}

/// `LabeledExtract(salt, label, ikm)` with `suite`, `ikm` given in parts.
fn labeled_extract(salt: &[u8], suite: &[u8], label: &[u8], ikm: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"HPKE-v1");
    ctx.update(suite);
    ctx.update(label);
    for part in ikm {
        ctx.update(part);
    }
    ctx.sign()
}

/// `LabeledExpand(prk, label, info, 32)` with `suite`, `info` given in parts. One HKDF-Expand
/// block: T(1) = HMAC(prk, labeled_info || 0x01), exactly 32 bytes.
fn labeled_expand(prk: &[u8], suite: &[u8], label: &[u8], info: &[&[u8]]) -> [u8; OUT_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&(OUT_LEN as u16).to_be_bytes());
    ctx.update(b"HPKE-v1");
    ctx.update(suite);
    ctx.update(label);
    for part in info {
        ctx.update(part);
    }
    ctx.update(&[1]);
    let mut out = [0u8; OUT_LEN];
    for (o, b) in out.iter_mut().zip(ctx.sign().as_ref()) {
        *o = *b;
    }
    out
}

/// DHKEM's `ExtractAndExpand(dh_eph || dh_static, enc || pkR || pkS)`: the KEM's shared secret.
fn extract_and_expand(
    dh_eph: &Shared,
    dh_static: &Shared,
    enc: &[u8; KEY_LEN],
    recipient: &[u8; KEY_LEN],
    sender: &[u8; KEY_LEN],
) -> [u8; OUT_LEN] {
    let prk = labeled_extract(b"", KEM_SUITE, b"eae_prk", &[dh_eph, dh_static]);
    labeled_expand(
        prk.as_ref(),
        KEM_SUITE,
        b"shared_secret",
        &[enc, recipient, sender],
    )
}

/// The key schedule's context for `info` (auth mode, empty PSK id): `mode || psk_id_hash ||
/// info_hash`. It depends on `info` only, which is a constant per use, so it is computed once.
fn schedule_context(info: &'static [u8], cell: &OnceLock<[u8; 65]>) -> [u8; 65] {
    *cell.get_or_init(|| {
        let psk_id_hash = labeled_extract(b"", HPKE_SUITE, b"psk_id_hash", &[]);
        let info_hash = labeled_extract(b"", HPKE_SUITE, b"info_hash", &[info]);
        let mut out = [0u8; 65];
        out[0] = MODE_AUTH;
        for (o, b) in out[1..]
            .iter_mut()
            .zip(psk_id_hash.as_ref().iter().chain(info_hash.as_ref().iter()))
        {
            *o = *b;
        }
        out
    })
}

/// A context's `Export(exporter_context, 32)`, from the KEM's shared secret.
fn export(
    shared_secret: &[u8; OUT_LEN],
    context: &[u8; 65],
    exporter_context: &[u8],
) -> [u8; OUT_LEN] {
    // secret = LabeledExtract(shared_secret, "secret", psk = "")
    let secret = labeled_extract(shared_secret, HPKE_SUITE, b"secret", &[]);
    let exporter_secret = labeled_expand(secret.as_ref(), HPKE_SUITE, b"exp", &[context]);
    labeled_expand(&exporter_secret, HPKE_SUITE, b"sec", &[exporter_context])
}

/// The parameters of one kind of context: its `info` and its exporter context.
pub(crate) struct Suite {
    /// HPKE's `info`.
    pub(crate) info: &'static [u8],
    /// The exporter context of the one secret taken from each context.
    pub(crate) export: &'static [u8],
    /// The key schedule's context of `info`, once computed.
    pub(crate) context: OnceLock<[u8; 65]>,
}

impl Suite {
    /// The sender's side (`SetupAuthS` then `Export`): a fresh ephemeral key from `random`
    /// (32 secret bytes), the DH of it with `recipient`, and `static_dh` (the DH of the
    /// sender's key `sender` with `recipient`, see [`dh`]). The encapsulated key and
    /// the exported secret; `None` on an all-zero DH.
    pub(crate) fn seal(
        &self,
        random: [u8; KEY_LEN],
        recipient: &[u8; KEY_LEN],
        sender: &[u8; KEY_LEN],
        static_dh: &Shared,
    ) -> Option<([u8; KEY_LEN], [u8; OUT_LEN])> {
        let ephemeral = StaticSecret::from(random);
        let enc = XPublic::from(&ephemeral).to_bytes();
        let dh_eph = dh(&ephemeral, recipient)?;
        let shared = extract_and_expand(&dh_eph, static_dh, &enc, recipient, sender);
        let context = schedule_context(self.info, &self.context);
        Some((enc, export(&shared, &context, self.export)))
    }

    /// The recipient's side (`SetupAuthR` then `Export`): the DH of `secret` (the recipient's,
    /// whose public key is `recipient`) with `enc`, and `static_dh` (the DH of `secret` with
    /// the sender's key `sender`). The exported secret; `None` on an all-zero DH.
    pub(crate) fn open(
        &self,
        enc: &[u8; KEY_LEN],
        secret: &StaticSecret,
        recipient: &[u8; KEY_LEN],
        sender: &[u8; KEY_LEN],
        static_dh: &Shared,
    ) -> Option<[u8; OUT_LEN]> {
        let dh_eph = dh(secret, enc)?;
        let shared = extract_and_expand(&dh_eph, static_dh, enc, recipient, sender);
        let context = schedule_context(self.info, &self.context);
        Some(export(&shared, &context, self.export))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hpke::aead::ChaCha20Poly1305;
    use hpke::kdf::HkdfSha256;
    use hpke::{Deserializable, OpModeR, OpModeS, Serializable};

    use super::*;
    use crate::seal::keys::{Kem, KeyPair};

    fn suite() -> Suite {
        Suite {
            info: b"runar/test/info",
            export: b"runar/test/export",
            context: OnceLock::new(),
        }
    }

    fn random() -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out).unwrap();
        out
    }

    /// What the `hpke` crate's auth-mode sender exports, this side opens, and the reverse.
    #[test]
    fn both_sides_match_the_hpke_crate() {
        let suite = suite();
        for _ in 0..8 {
            let (sender, recipient) = (KeyPair::generate(), KeyPair::generate());
            let (s_pub, r_pub) = (*sender.public().as_bytes(), *recipient.public().as_bytes());
            let static_dh = dh(&sender.x25519_secret(), &r_pub).unwrap();
            assert_eq!(Some(static_dh), dh(&recipient.x25519_secret(), &s_pub));

            // The crate seals, this side opens.
            let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
            let (enc, ctx) = hpke::setup_sender::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
                &OpModeS::Auth((
                    sender.hpke_secret().clone(),
                    sender.public().to_hpke().unwrap(),
                )),
                &recipient.public().to_hpke().unwrap(),
                suite.info,
                &mut rng,
            )
            .unwrap();
            let mut theirs = [0u8; OUT_LEN];
            ctx.export(suite.export, &mut theirs).unwrap();
            let mut enc_bytes = [0u8; KEY_LEN];
            enc.write_exact(&mut enc_bytes);
            let enc = enc_bytes;
            let ours = suite
                .open(&enc, &recipient.x25519_secret(), &r_pub, &s_pub, &static_dh)
                .unwrap();
            assert_eq!(ours, theirs);

            // This side seals, the crate opens.
            let (enc, ours) = suite.seal(random(), &r_pub, &s_pub, &static_dh).unwrap();
            let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Auth(sender.public().to_hpke().unwrap()),
                recipient.hpke_secret(),
                &<Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap(),
                suite.info,
            )
            .unwrap();
            let mut theirs = [0u8; OUT_LEN];
            ctx.export(suite.export, &mut theirs).unwrap();
            assert_eq!(ours, theirs);

            // Another sender's static DH gives another secret.
            let other = dh(&KeyPair::generate().x25519_secret(), &r_pub).unwrap();
            assert_ne!(
                suite.open(&enc, &recipient.x25519_secret(), &r_pub, &s_pub, &other),
                Some(ours)
            );
        }
    }

    /// The Edwards-form DH is the ladder's, on the curve, on the twist and at low-order points.
    #[test]
    fn dh_is_the_ladders() {
        let secret = KeyPair::generate().x25519_secret();
        let ladder = |public: [u8; KEY_LEN]| {
            let shared = secret.diffie_hellman(&XPublic::from(public));
            shared.was_contributory().then(|| *shared.as_bytes())
        };
        let mut inputs: Vec<[u8; KEY_LEN]> = (0..64)
            .map(|_| *KeyPair::generate().public().as_bytes())
            .collect();
        // Random strings: about half are on the twist; one with the top bit set.
        inputs.extend((0..64).map(|_| random()));
        inputs.push([0xff; KEY_LEN]);
        // Low-order points: 0, 1, and p - 1 (on the twist).
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        let mut minus_one = [0xff; KEY_LEN];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        inputs.extend([[0u8; KEY_LEN], one, minus_one]);
        for public in inputs {
            assert_eq!(dh(&secret, &public), ladder(public), "{public:02x?}");
        }
    }

    /// A low-order public key (here the all-zero point) gives an all-zero DH: refused.
    #[test]
    fn an_all_zero_dh_is_refused() {
        let key = KeyPair::generate();
        assert_eq!(dh(&key.x25519_secret(), &[0u8; KEY_LEN]), None);
        let suite = suite();
        let shared = [7u8; KEY_LEN];
        assert!(
            suite
                .seal(random(), &[0u8; KEY_LEN], key.public().as_bytes(), &shared)
                .is_none()
        );
        assert!(
            suite
                .open(
                    &[0u8; KEY_LEN],
                    &key.x25519_secret(),
                    key.public().as_bytes(),
                    key.public().as_bytes(),
                    &shared
                )
                .is_none()
        );
    }
}
