//! Listeners on IPv4 and IPv6, and the client-facing certificate swapped by a reload.

mod common;

use std::net::SocketAddr;

use common::fake::Script;
use common::fixtures::{files_with_fake, gate_with_settings, FAKE_USERS};
use common::{last, Client};
use imapgate::Gate;

#[tokio::test]
async fn ipv4_and_ipv6_listeners_both_serve() {
    let (_fake, _dir, path) = files_with_fake(Script::default(), FAKE_USERS, |config| {
        config
            .imap4("unencrypted_or_tls_bindings = [\"127.0.0.1:0\", \"[::1]:0\"]")
            .imap4("ssl_bindings = [\"127.0.0.1:0\", \"[::1]:0\"]")
    })
    .await;
    let gate = Gate::bind(&path).await.expect("bind");
    let (plain, tls) = (gate.plain_addrs(), gate.tls_addrs());
    assert_eq!(plain.len(), 2);
    assert!(
        plain[0].is_ipv4() && plain[1].is_ipv6() && tls[1].is_ipv6(),
        "{plain:?} {tls:?}"
    );
    let handle = gate.handle();
    let run = tokio::spawn(gate.run());
    for addr in plain {
        let mut c = Client::plain(addr).await;
        c.greeting().await;
        assert!(
            last(&c.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"),
            "{addr}"
        );
    }
    for addr in tls {
        let mut c = Client::tls(addr).await;
        c.greeting().await;
    }
    handle.shutdown();
    run.await.expect("run");
}

/// A new CA and a `localhost` certificate it signs: (ca, cert, key).
fn new_identity(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    identity_for(dir, "localhost")
}

/// A new CA and a certificate for `name` it signs: (ca, cert, key).
fn identity_for(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = &dir.join(name);
    std::fs::create_dir_all(dir).expect("dir");
    let (ca, ca_key) = (dir.join("other-ca.pem"), dir.join("other-ca.key"));
    let (cert, key, csr, ext) = (
        dir.join("other.pem"),
        dir.join("other.key"),
        dir.join("other.csr"),
        dir.join("ext"),
    );
    let p = |p: &std::path::Path| p.to_string_lossy().into_owned();
    common::self_signed(&ca, &ca_key, "/CN=other test CA", &[]);
    common::openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("ext");
    common::openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    (ca, cert, key)
}

async fn handshake_ok(addr: SocketAddr) -> bool {
    handshake_with(addr, common::dev_connector()).await
}

async fn handshake_with(addr: SocketAddr, connector: tokio_rustls::TlsConnector) -> bool {
    handshake_as(addr, connector, "localhost").await
}

async fn handshake_as(addr: SocketAddr, connector: tokio_rustls::TlsConnector, name: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    connector.connect(name, tcp).await.is_ok()
}

/// A client trusting only the certificate in `pem`.
fn trusting(pem: &std::path::Path) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pem).expect("pem"))
        .expect("root");
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("gate.pem"), dir.path().join("gate.key"));
    std::fs::copy(common::certs().join("localhost.pem"), &cert).expect("copy");
    std::fs::copy(common::dev_key(), &key).expect("copy");
    let (_fake, gate) = gate_with_settings(&[
        format!("certificate = {cert:?}"),
        format!("private_key = {key:?}"),
    ])
    .await;
    let tls = gate.tls.expect("tls");
    assert!(handshake_ok(tls).await);
    // A broken certificate file: reload refused, the old certificate keeps serving.
    std::fs::write(&cert, "not a certificate").expect("w");
    let e = gate.handle.reload().await.expect_err("refused").to_string();
    assert!(e.contains("gate.pem"), "{e}");
    assert!(handshake_ok(tls).await);
    // A certificate from another CA, so the dev CA no longer verifies it: in force after reload.
    let (other_ca, other_cert, other_key) = new_identity(dir.path());
    std::fs::copy(&other_cert, &cert).expect("copy");
    std::fs::copy(other_key, &key).expect("copy");
    assert!(handshake_ok(tls).await, "nothing changes before the reload");
    gate.handle.reload().await.expect("reload");
    assert!(!handshake_ok(tls).await, "the old certificate is gone");
    assert!(
        handshake_with(tls, trusting(&other_ca)).await,
        "the new certificate is presented"
    );
    gate.stop().await;
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = identity_for(dir.path(), "imap.example.org");
    let (_fake, gate) = gate_with_settings(&[format!(
        "sni_certificates = [{{ name = \"IMAP.example.org\", certificate = {cert:?}, private_key = {key:?} }}]"
    )])
    .await;
    let tls = gate.tls.expect("tls");
    assert!(
        handshake_as(tls, trusting(&ca), "imap.example.org").await,
        "the SNI certificate"
    );
    assert!(!handshake_as(tls, common::dev_connector(), "imap.example.org").await);
    assert!(
        handshake_ok(tls).await,
        "other names get the default certificate"
    );
    gate.stop().await;
}

/// The negotiated suite of a TLS 1.3 handshake with the gate by a client offering `first` before
/// the provider's other suites.
async fn suite_chosen_for(
    addr: SocketAddr,
    first: tokio_rustls::rustls::CipherSuite,
) -> tokio_rustls::rustls::CipherSuite {
    use tokio_rustls::rustls;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != first);
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(common::dev_roots())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref()
        .1
        .negotiated_cipher_suite()
        .expect("suite")
        .suite()
}

/// As a server the gate takes the client's preferred suite (a client without AES instructions
/// asks for ChaCha20 first); its own AES-128-first order is what it offers as a client.
#[tokio::test]
async fn the_gate_follows_the_clients_cipher_suite_order() {
    use tokio_rustls::rustls::CipherSuite as S;
    let (_fake, gate) = gate_with_settings(&[] as &[&str]).await;
    let addr = gate.tls.expect("tls listener");
    for first in [
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_CHACHA20_POLY1305_SHA256,
        S::TLS13_AES_128_GCM_SHA256,
    ] {
        assert_eq!(suite_chosen_for(addr, first).await, first);
    }
    gate.stop().await;
}

/// Connects with `connector`, reads the greeting (which also takes in the session tickets sent
/// after the handshake) and says whether the handshake resumed an earlier session.
async fn resumed(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> bool {
    use tokio::io::AsyncReadExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    let mut greeting = [0u8; 64];
    let n = tls.read(&mut greeting).await.expect("greeting");
    assert!(greeting[..n].starts_with(b"* OK"));
    tls.get_ref().1.handshake_kind() == Some(tokio_rustls::rustls::HandshakeKind::Resumed)
}

/// Any number of clients can resume their TLS session (tickets, not a server-side cache of a few
/// hundred), and a reload, which builds a new acceptor, does not forget them.
#[tokio::test]
async fn tls_sessions_resume_after_many_other_clients_and_across_a_reload() {
    let (_fake, gate) = gate_with_settings(&[] as &[&str]).await;
    let addr = gate.tls.expect("tls listener");
    let returning = common::dev_connector();
    assert!(
        !resumed(addr, &returning).await,
        "a first visit is a full handshake"
    );
    // 300 other clients, each with its own session store.
    for _ in 0..300 {
        assert!(!resumed(addr, &common::dev_connector()).await);
    }
    assert!(resumed(addr, &returning).await, "resumed after 300 others");
    let tls12 = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        tokio_rustls::rustls::ClientConfig::builder_with_protocol_versions(&[
            &tokio_rustls::rustls::version::TLS12,
        ])
        .with_root_certificates(common::dev_roots())
        .with_no_client_auth(),
    ));
    assert!(!resumed(addr, &tls12).await);
    assert!(resumed(addr, &tls12).await, "TLS 1.2 resumes too");
    gate.handle.reload().await.expect("reload");
    assert!(resumed(addr, &returning).await, "resumed across a reload");
    gate.stop().await;
}
