//! HTTPS for the STS emulator: a throw-away certificate authority and a server certificate for
//! `127.0.0.1` and `localhost` signed by it, made at start, served with rustls (ring provider).
//!
//! A CA and a leaf rather than one self-signed leaf: webpki (rustls' verifier, which the agent
//! uses) refuses an end-entity certificate as its own trust anchor, while every client accepts
//! a CA certificate in its roots. Only the CA's PEM is handed out: it is what a client adds to
//! its roots (`[sts] ca_file`, `REQUESTS_CA_BUNDLE`, the SDK's `ca` option).

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The names the server certificate is valid for.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A TLS acceptor and the PEM of the CA certificate that signed its certificate.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) ca_pem: String,
}

/// Makes a fresh CA and server certificate and the acceptor serving it.
///
/// # Errors
///
/// Key generation, certificate signing or rustls configuration failed (reported as
/// `io::ErrorKind::Other` with the cause in the message).
pub(crate) fn make() -> io::Result<Tls> {
    let fail = |what: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{what}: {e}"));
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA parameters", &e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ecs-metadata-emulator STS test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail("CA", &e))?;

    let names: Vec<String> = SERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(|e| fail("server parameters", &e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ecs-metadata-emulator STS");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| fail("server key", &e))?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| fail("server certificate", &e))?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| fail("TLS certificate", &e))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca.pem(),
    })
}
