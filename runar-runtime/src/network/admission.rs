//! Network admission: only holders of the network key can join.
//!
//! # Scheme
//!
//! 1. `PRK = HKDF-Extract(salt = "runar/network/v1", ikm = secret)` (HKDF-SHA256).
//! 2. The **network CA key** is the Ed25519 key whose seed is
//!    `HKDF-Expand(PRK, "runar/network/v1/ca-key", 32)`. The **network id** is the first 16 bytes
//!    of `HKDF-Expand(PRK, "runar/network/v1/network-id", 32)` in base32 (26 characters): public,
//!    safe to broadcast; it is a one-way function of the secret and says nothing of the CA key.
//! 3. The **CA certificate** is self-signed with fixed contents (serial 1, validity 1975-01-01 to
//!    4096-01-01, subject `CN=runar network <network-id>`). Ed25519 signatures are
//!    deterministic, so every key holder computes byte-identical CA certificates.
//! 4. Each node's **leaf certificate** holds its own [`NodeKeypair`] public key, subject alt name
//!    `<node-id>.runar`, and is signed by the CA key, which only key holders can do. No
//!    certificate or key other than the node's own keypair is ever stored.
//! 5. Both ends of every connection present their leaf and verify the peer's against the CA
//!    (mutual TLS 1.3); a peer's [`NodeId`] is always recomputed from its verified leaf's key.
//!
//! 6. A **network-held label's key** (sealed fields, `crate::seal`) of `label` and `epoch` is the
//!    X25519 key pair whose secret is `HKDF-Expand(PRK, info, 32)` with
//!    `info = "runar/network/v1/label" || u8(len(label)) || label || u32_be(epoch)`
//!    ([`NetworkKey::label_key`]): every member derives it, no key is distributed, and a node of
//!    another network (another secret) cannot.
//!
//! The secret should be high-entropy (see [`NetworkKey::generate_secret`]): the network id is
//! broadcast, and a guessable secret could be found from it by trial.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SerialNumber, date_time_ymd,
};
use ring::{hkdf, rand::SecureRandom as _};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::error::TransportError;
use crate::identity::{NodeId, NodeKeypair, write_base32};

const HKDF_SALT: &[u8] = b"runar/network/v1";
const CA_KEY_INFO: &[u8] = b"runar/network/v1/ca-key";
const NETWORK_ID_INFO: &[u8] = b"runar/network/v1/network-id";
const LABEL_INFO: &[u8] = b"runar/network/v1/label";
/// DNS suffix of the names in node certificates: `<node-id>.runar`.
pub(crate) const NODE_NAME_SUFFIX: &str = ".runar";

/// The fixed DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The shared secret of a Runar network. Nodes with the same key admit each other; others fail
/// the TLS handshake. See the [module documentation](self) for the scheme.
///
/// `Debug` shows only the public network id.
#[derive(Clone)]
pub struct NetworkKey {
    /// HKDF's PRK of the secret: network-held label keys are expanded from it.
    prk: hkdf::Prk,
    ca_seed: [u8; 32],
    network_id: [u8; 16],
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkKey(id = {})", self.network_id())
    }
}

impl NetworkKey {
    /// The network key derived from a shared secret of any length (use a high-entropy one).
    pub fn from_secret(secret: impl AsRef<[u8]>) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret.as_ref());
        let ca_seed = expand(&prk, CA_KEY_INFO);
        let id_bytes = expand(&prk, NETWORK_ID_INFO);
        let mut network_id = [0u8; 16];
        for (o, b) in network_id.iter_mut().zip(id_bytes) {
            *o = b;
        }
        NetworkKey {
            prk,
            ca_seed,
            network_id,
        }
    }

    /// The key pair of `label` (a sealed-field label held by this network) for `epoch`, the
    /// same for every holder of this key and for no one else (module documentation, step 6).
    /// Labels longer than [`MAX_LABEL_LEN`](crate::seal::MAX_LABEL_LEN) bytes are cut there,
    /// as envelopes cut them.
    ///
    /// ```
    /// use runar_runtime::NetworkKey;
    /// use runar_runtime::seal::{KeyResolver, Keyring};
    /// let ops = NetworkKey::from_secret("a high-entropy secret");
    /// let ring = Keyring::new();
    /// ring.hold("ops", 1, &ops.label_key("ops", 1));
    /// assert_eq!(ring.seal_key("ops").unwrap().public, ops.label_key("ops", 1).public());
    /// ```
    pub fn label_key(&self, label: &str, epoch: u32) -> crate::seal::KeyPair {
        let label = label.as_bytes();
        let label = label.get(..crate::seal::MAX_LABEL_LEN).unwrap_or(label);
        let len = [u8::try_from(label.len()).unwrap_or(u8::MAX)];
        let epoch = epoch.to_be_bytes();
        let mut seed = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit, so neither step can fail.
        let _ = self
            .prk
            .expand(&[LABEL_INFO, &len, label, &epoch], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut seed));
        crate::seal::KeyPair::derive(&seed)
    }

    /// The network key for a 32-byte secret; the same as [`NetworkKey::from_secret`].
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self::from_secret(secret)
    }

    /// The network key for the secret held in the file at `path` (as `runar keygen` writes
    /// it): the file's content without surrounding whitespace, taken as
    /// [`from_secret`](Self::from_secret) takes it. Fails with `NotFound` or `PermissionDenied`
    /// when the file cannot be read and `InvalidArgument` when it holds no secret.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        let content = std::fs::read(path).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => crate::Code::NotFound,
                std::io::ErrorKind::PermissionDenied => crate::Code::PermissionDenied,
                _ => crate::Code::Unavailable,
            };
            crate::Error::new(
                code,
                format!("cannot read the key file {}: {e}", path.display()),
            )
        })?;
        let secret = content.trim_ascii();
        if secret.is_empty() {
            return Err(crate::Error::invalid_argument(format!(
                "the key file {} is empty",
                path.display()
            )));
        }
        Ok(Self::from_secret(secret))
    }

    /// 32 random bytes, suitable as a new network's secret.
    pub fn generate_secret() -> crate::Result<[u8; 32]> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| crate::Error::internal("no randomness available"))?;
        Ok(secret)
    }

    /// The public network id: 26 lowercase base32 characters, a one-way function of the secret.
    pub fn network_id(&self) -> String {
        let mut s = String::with_capacity(26);
        // Writing to a String cannot fail.
        let _ = write_base32(&self.network_id, &mut s);
        s
    }

    /// The network's CA certificate (DER). Identical for every holder of the key.
    pub(crate) fn ca_certificate(&self) -> Result<CertificateDer<'static>, TransportError> {
        let (params, key) = self.ca()?;
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(cert.der().clone())
    }

    #[cfg(test)]
    pub(crate) fn ca_seed_for_tests(&self) -> [u8; 32] {
        self.ca_seed
    }

    /// The CA's certificate parameters and key pair.
    fn ca(&self) -> Result<(CertificateParams, KeyPair), TransportError> {
        let mut pkcs8 = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + 32);
        pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(&self.ca_seed);
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &PKCS_ED25519,
        )
        .map_err(tls_err)?;

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&[1]));
        params.not_before = date_time_ymd(1975, 1, 1);
        params.not_after = date_time_ymd(4096, 1, 1);
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("runar network {}", self.network_id()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok((params, key))
    }

    /// A leaf certificate for `node`, signed by the network CA.
    pub(crate) fn issue_node_certificate(
        &self,
        node: &NodeKeypair,
    ) -> Result<CertificateDer<'static>, TransportError> {
        let (ca_params, ca_key) = self.ca()?;
        let issuer = Issuer::new(ca_params, ca_key);
        let node_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(node.pkcs8_der()),
            &PKCS_ED25519,
        )
        .map_err(tls_err)?;
        let node_id = node.node_id();
        let mut params = CertificateParams::new(vec![node_dns_name(&node_id)]).map_err(tls_err)?;
        params.not_before = date_time_ymd(1975, 1, 1);
        params.not_after = date_time_ymd(4096, 1, 1);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id.to_string());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&node_key, &issuer).map_err(tls_err)?;
        Ok(cert.der().clone())
    }
}

/// The DNS name in a node's certificate: `<node-id>.runar`.
pub(crate) fn node_dns_name(id: &NodeId) -> String {
    format!("{id}{NODE_NAME_SUFFIX}")
}

fn expand(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so neither step can fail.
    let _ = prk
        .expand(&[info], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out));
    out
}

fn tls_err(e: rcgen::Error) -> TransportError {
    TransportError::Tls(e.to_string())
}
