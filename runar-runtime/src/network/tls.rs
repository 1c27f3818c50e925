//! Mutual TLS 1.3 configuration for the transport: Ed25519 certificates issued by each network's
//! CA (see [`super::admission`]), verifiers that tie each peer to its [`NodeId`], and one ALPN
//! protocol per network.
//!
//! * Networks: a node may be in several networks behind one endpoint. A client names the
//!   network it dials by ALPN, `runar/1/<network-id>` (bare `runar/1` means the server's default
//!   network). The server presents its certificate of that network, so a client of another
//!   network fails to verify it and aborts. The server's client verifier accepts leaves of any
//!   of its networks' CAs (TLS has no per-ALPN client verifier); right after the handshake,
//!   [`network_of`] checks that the client's leaf was issued by the CA of the network its ALPN
//!   named, and the transport closes the connection otherwise, before any byte of the protocol.
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

/// The ALPN protocol id of the Runar transport; alone, it names the server's default network.
pub(crate) const ALPN: &[u8] = b"runar/1";

/// The ALPN protocol id of `network`: `runar/1/<network-id>`.
pub(crate) fn alpn_of(network: &NetworkKey) -> Vec<u8> {
    let mut alpn = ALPN.to_vec();
    alpn.push(b'/');
    alpn.extend_from_slice(network.network_id().as_bytes());
    alpn
}
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

/// The TLS configurations for one node in its networks (the first is the default).
pub(crate) struct TlsConfigs {
    /// One client configuration per network, in the order given.
    pub(crate) clients: Vec<rustls::ClientConfig>,
    /// The server configuration, serving every network.
    pub(crate) server: rustls::ServerConfig,
    /// Per network: its ALPN id and the verifier of its own CA (see [`network_of`]).
    pub(crate) networks: Vec<NetworkTls>,
}

/// What the server side knows of one of its networks after a handshake.
#[derive(Debug)]
pub(crate) struct NetworkTls {
    alpn: Vec<u8>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Builds the TLS configurations for `node` in `networks` (not empty; the first is the
/// default). Uses the ring provider explicitly.
pub(crate) fn build(
    node: &NodeKeypair,
    networks: &[NetworkKey],
) -> Result<TlsConfigs, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let verifier_err = |e: rustls::client::VerifierBuilderError| TransportError::Tls(e.to_string());
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node.pkcs8_der().to_vec()));
    if networks.is_empty() {
        return Err(TransportError::InvalidConfig("no network to serve".into()));
    }

    let mut all_roots = RootCertStore::empty();
    let mut clients = Vec::with_capacity(networks.len());
    let mut per_network = Vec::with_capacity(networks.len());
    let mut certs = Vec::with_capacity(networks.len());
    for network in networks {
        let ca = network.ca_certificate()?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).map_err(tls)?;
        all_roots.add(ca).map_err(tls)?;
        let roots = Arc::new(roots);

        let leaf = network.issue_node_certificate(node)?;
        let chain = vec![leaf];
        let alpn = alpn_of(network);

        let server_verifier = NodeServerVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
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
        client.alpn_protocols = vec![alpn.clone()];
        client.resumption = Resumption::disabled();
        client.enable_early_data = false;
        clients.push(client);

        let signing = provider.key_provider.load_private_key(key()).map_err(tls)?;
        certs.push((
            alpn.clone(),
            Arc::new(rustls::sign::CertifiedKey::new(chain, signing)),
        ));
        per_network.push(NetworkTls {
            alpn,
            verifier: WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(verifier_err)?,
        });
    }

    let client_verifier = NodeClientVerifier {
        inner: WebPkiClientVerifier::builder_with_provider(Arc::new(all_roots), provider.clone())
            .build()
            .map_err(verifier_err)?,
    };
    let mut alpns: Vec<Vec<u8>> = certs.iter().map(|(alpn, _)| alpn.clone()).collect();
    alpns.push(ALPN.to_vec());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(Arc::new(client_verifier))
        .with_cert_resolver(Arc::new(CertsByAlpn { certs }));
    server.alpn_protocols = alpns;
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    server.max_early_data_size = 0;

    Ok(TlsConfigs {
        clients,
        server,
        networks: per_network,
    })
}

/// The server's certificate for the network the client names by ALPN.
#[derive(Debug)]
struct CertsByAlpn {
    /// (ALPN, certificate) per network, the default first.
    certs: Vec<(Vec<u8>, Arc<rustls::sign::CertifiedKey>)>,
}

impl rustls::server::ResolvesServerCert for CertsByAlpn {
    fn resolve(
        &self,
        client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let index = network_index(&self.certs, |(alpn, _)| alpn, client_hello.alpn()?)?;
        self.certs.get(index).map(|(_, cert)| cert.clone())
    }
}

/// The index of the first network a client offers among `networks`; bare [`ALPN`] is the
/// default network (index 0).
fn network_index<'a, T>(
    networks: &[T],
    alpn_of: impl Fn(&T) -> &Vec<u8>,
    mut offered: impl Iterator<Item = &'a [u8]>,
) -> Option<usize> {
    offered.find_map(|protocol| {
        if protocol == ALPN {
            return (!networks.is_empty()).then_some(0);
        }
        networks
            .iter()
            .position(|n| alpn_of(n).as_slice() == protocol)
    })
}

/// The network (its index in the networks the server was built with) of an accepted
/// connection: the one its ALPN names, provided the client's leaf was issued by that network's
/// CA. Anything else is refused: a client holding only another of this node's networks' keys
/// is never admitted to this one.
pub(crate) fn network_of(
    connection: &Connection,
    networks: &[NetworkTls],
) -> Result<usize, TransportError> {
    let refused = |why: &str| TransportError::PeerIdentity(why.to_owned());
    let protocol = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .ok_or_else(|| refused("no network named (ALPN)"))?;
    let index = network_index(networks, |n| &n.alpn, std::iter::once(protocol.as_slice()))
        .ok_or_else(|| refused("not a network of this node"))?;
    let identity = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| refused("peer presented no certificate"))?;
    let leaf = identity
        .first()
        .ok_or_else(|| refused("empty certificate chain"))?;
    let network = networks
        .get(index)
        .ok_or_else(|| refused("not a network of this node"))?;
    network
        .verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map_err(|_| refused("certificate not issued for the network it asked for"))?;
    Ok(index)
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
        // No hints: they would name every network of this node to whoever connects.
        &[]
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
