//! Mutual TLS 1.3 configuration for the transport: ALPN `runar/1`, Ed25519 certificates issued by
//! the network CA (see [`super::admission`]), and verifiers that tie each peer to its [`NodeId`].
//!
//! * Server side: a client certificate is required; it must chain to the network CA. The
//!   client's node id is derived from the certificate's public key after the handshake.
//! * Client side: the server's certificate must chain to the network CA and carry the DNS name
//!   `<id>.runar` where `id` is the node id of its own public key. When dialing a known node we
//!   use that node's `<id>.runar` as the server name and the derived id must equal it; when
//!   dialing an address whose node is unknown we use [`UNKNOWN_SERVER_NAME`], which accepts any
//!   node of the network, and report the id.
//!
//! Session resumption is disabled on both sides so that every handshake verifies certificates.

use std::sync::Arc;

use quinn::Connection;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::{
        Resumption, WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    server::{
        NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::{
    admission::{NODE_NAME_SUFFIX, NetworkKey, node_dns_name},
    error::TransportError,
};
use crate::identity::{NodeId, NodeKeypair};

/// The ALPN protocol id of the Runar transport.
pub(crate) const ALPN: &[u8] = b"runar/1";
/// The server name used when dialing an address without knowing which node is there.
pub(crate) const UNKNOWN_SERVER_NAME: &str = "unknown.runar";

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key:
/// `SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 }, BIT STRING(33) { 0 unused bits, ...` .
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The raw Ed25519 public key of a certificate's subject.
///
/// The certificate is parsed by webpki (the same parser that verifies it), which returns the
/// subject's SubjectPublicKeyInfo, never the issuer's: an X.509 certificate holds only its
/// subject's key. An Ed25519 SPKI is exactly the 12-byte prefix above followed by 32 key bytes;
/// anything else is refused. No step can panic on malformed input.
fn ed25519_public_key(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The node id of a certificate's subject key, if it is an Ed25519 certificate.
pub(crate) fn node_id_of_certificate(cert: &CertificateDer<'_>) -> Option<NodeId> {
    ed25519_public_key(cert).map(|key| NodeId::from_public_key(&key))
}

/// The verified [`NodeId`] of the peer of an established connection, derived from the public key
/// of the certificate it presented in the handshake (which the verifiers checked against the
/// network CA).
pub fn peer_node_id(connection: &Connection) -> Result<NodeId, TransportError> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| TransportError::PeerIdentity("peer presented no certificate".into()))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TransportError::PeerIdentity("peer identity is not a certificate".into()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| TransportError::PeerIdentity("empty certificate chain".into()))?;
    node_id_of_certificate(leaf)
        .ok_or_else(|| TransportError::PeerIdentity("certificate key is not Ed25519".into()))
}

/// The TLS configurations for one node in one network.
pub(crate) struct TlsConfigs {
    pub(crate) client: rustls::ClientConfig,
    pub(crate) server: rustls::ServerConfig,
}

/// Builds both TLS configurations for `node` in `network`. Uses the ring provider explicitly.
pub(crate) fn build(
    node: &NodeKeypair,
    network: &NetworkKey,
) -> Result<TlsConfigs, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());

    let ca = network.ca_certificate()?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(tls)?;
    let roots = Arc::new(roots);

    let leaf = network.issue_node_certificate(node)?;
    let chain = vec![leaf];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node.pkcs8_der().to_vec()));

    let verifier_err = |e: rustls::client::VerifierBuilderError| TransportError::Tls(e.to_string());
    let server_verifier = NodeServerVerifier {
        inner: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(verifier_err)?,
    };
    let client_verifier = NodeClientVerifier {
        inner: WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(verifier_err)?,
    };

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server_verifier))
        .with_client_auth_cert(chain.clone(), key())
        .map_err(tls)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = Resumption::disabled();
    client.enable_early_data = false;

    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(Arc::new(client_verifier))
        .with_single_cert(chain, key())
        .map_err(tls)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    server.max_early_data_size = 0;

    Ok(TlsConfigs { client, server })
}

/// The server name to dial: `<id>.runar` for a known node, [`UNKNOWN_SERVER_NAME`] otherwise.
pub(crate) fn server_name(expected: Option<&NodeId>) -> String {
    match expected {
        Some(id) => node_dns_name(id),
        None => UNKNOWN_SERVER_NAME.to_owned(),
    }
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// Verifies clients: the chain must lead to the network CA and the leaf key must be Ed25519.
#[derive(Debug)]
struct NodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Leaves are issued directly by the network CA: no intermediates.
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        node_id_of_certificate(end_entity).ok_or_else(bad_encoding)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Verifies servers: the chain must lead to the network CA, the leaf must be valid for
/// `<derived-id>.runar`, and the derived id must be the expected one unless the server name is
/// [`UNKNOWN_SERVER_NAME`].
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        let actual = node_id_of_certificate(end_entity).ok_or_else(bad_encoding)?;
        let actual_name =
            ServerName::try_from(node_dns_name(&actual)).map_err(|_| bad_encoding())?;
        // Chain to the network CA, validity, and the name the leaf claims for itself.
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &actual_name,
            ocsp_response,
            now,
        )?;
        let ServerName::DnsName(name) = server_name else {
            return Err(rustls::Error::General(
                "runar server names are DNS names".into(),
            ));
        };
        let name = name.as_ref();
        if name == UNKNOWN_SERVER_NAME {
            return Ok(ServerCertVerified::assertion());
        }
        let expected = name
            .strip_suffix(NODE_NAME_SUFFIX)
            .and_then(|id| id.parse::<NodeId>().ok());
        if expected != Some(actual) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: vec![node_dns_name(&actual)],
                },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
