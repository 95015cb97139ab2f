//! TLS on both sides: the certificate the gate presents to clients (STARTTLS and implicit TLS) and
//! the verified client configuration it uses towards TLS backends.
//!
//! The server side is rebuilt on every reload and installed with the rest of the reloadable state,
//! so a renewed certificate takes effect for new connections on SIGHUP, and a broken one is refused
//! while the old one stays in use. rustls does not implement renegotiation, and only TLS 1.2 and
//! 1.3 are enabled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::SniCertificate;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore, ServerConfig,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate {cert} and key {key} do not make a usable TLS identity: {message}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("no usable trust anchors: {0}")]
    Roots(String),
    #[error("TLS provider: {0}")]
    Provider(String),
}

/// The process's cryptography (ring, or aws-lc-rs when the binary installed it) with the
/// AES-128-GCM suites ordered before AES-256-GCM and ChaCha20, as in Mozilla's recommended
/// configurations and in the ClientHello of Firefox, Thunderbird and Chrome. The suites are the
/// provider's; only their order changes. As a client (TLS backends, LDAP, OAuth introspection) the gate
/// offers them in this order; as a server it follows the client's order (rustls' default: a
/// client without AES instructions asks for ChaCha20 first). AES-128 takes fewer rounds per block,
/// and TLS 1.3's AES-128 suite hashes with SHA-256, which processors with SHA extensions run in
/// hardware where AES-256's suite hashes with SHA-384 in software: a resumed TLS 1.3 handshake
/// spent 6.6% of the gate's CPU in SHA-512 blocks with AES-256, 1.1% in SHA-256 with AES-128
/// (perf, bench/RESULTS.md).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::CryptoProvider::get_default()
        .map(|p| (**p).clone())
        .unwrap_or_else(rustls::crypto::ring::default_provider);
    // A stable sort: the AES-128-GCM suites first, the others in the provider's order (each
    // version picks from its own suites, so their mixing in one list does not matter).
    use rustls::CipherSuite as S;
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    // Parses the key and checks it belongs to the certificate.
    let certified =
        CertifiedKey::from_der(chain, private, &provider).map_err(|e| TlsError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

/// The default certificate, and others chosen by the SNI name the client sends.
#[derive(Debug)]
struct BySni {
    default: Arc<CertifiedKey>,
    names: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|n| self.names.get(&n.to_ascii_lowercase()));
        Some(by_name.unwrap_or(&self.default).clone())
    }
}

/// Loads the gate's certificate chain and key (and any SNI certificates) into an acceptor.
pub fn acceptor(cert: &Path, key: &Path, sni: &[SniCertificate]) -> Result<TlsAcceptor, TlsError> {
    let mut names = HashMap::new();
    for s in sni {
        names.insert(
            s.name.to_ascii_lowercase(),
            certified_key(&s.certificate, &s.private_key)?,
        );
    }
    let resolver = BySni {
        default: certified_key(cert, key)?,
        names,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Provider(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.ticketer = ticketer()?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Session tickets for resumption, one ticketer for the life of the process (a reload's new
/// acceptor keeps resuming the sessions of the old one). A ticket is the session's state sealed
/// with a key only the gate holds (ChaCha20-Poly1305, rotated every 6 hours), so any number of
/// clients can resume: rustls' default, a server-side cache of 256 sessions, forgot most of
/// them as soon as a few hundred clients came and went, and those clients paid a full handshake
/// (a signature and the certificate chain) again.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, TlsError> {
    static TICKETER: std::sync::OnceLock<Arc<dyn rustls::server::ProducesTickets>> =
        std::sync::OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let made =
        rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Provider(e.to_string()))?;
    Ok(TICKETER.get_or_init(|| made).clone())
}

/// A verifying connector for a backend: trusts `ca` when given, the system's roots otherwise.
pub fn connector(ca: Option<&Path>) -> Result<TlsConnector, TlsError> {
    client_config(ca).map(TlsConnector::from)
}

/// The client side's TLS settings (a backend, the LDAP directory): trusts `ca` when given, the
/// system's roots otherwise; TLS 1.2 and 1.3.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for(ca, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// [`client_config`] speaking only `versions` (the load generator's TLS 1.2 comparisons).
pub fn client_config_for(
    ca: Option<&Path>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A single unparsable system certificate should not disable the others.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::Roots(format!(
                    "no system CA certificates could be loaded ({} errors); set `ca`",
                    found.errors.len()
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Provider(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connector that accepts any certificate (the handshake's signatures are still checked).
pub fn trust_any_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
