//! A self-signed certificate for `localhost`, shared by the raw-quinn and tonic+TLS setups.

pub struct SelfSigned {
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn localhost() -> SelfSigned {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    SelfSigned {
        cert_der: ck.cert.der().clone(),
        key_der: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}
