//! Listeners on IPv4 and IPv6, and the client-facing certificate swapped by a reload.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::fake::{FakeBackend, Script};
use common::{last, Client, GateConfig};
use imapgate::Gate;

#[tokio::test]
async fn ipv4_and_ipv6_listeners_both_serve() {
    let fake = FakeBackend::start(Script::default()).await;
    let config = GateConfig::new(&fake.address())
        .imap4("unencrypted_or_tls_bindings = [\"127.0.0.1:0\", \"[::1]:0\"]")
        .imap4("ssl_bindings = [\"127.0.0.1:0\", \"[::1]:0\"]");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("imapgate.toml");
    std::fs::write(&path, config.render()).expect("w");
    std::fs::write(dir.path().join("mailboxes.toml"), "").expect("w");
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

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("other.pem"), dir.join("other.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl req");
    (cert, key)
}

async fn handshake_ok(addr: SocketAddr) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    common::dev_connector().connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("gate.pem"), dir.path().join("gate.key"));
    std::fs::copy(common::certs().join("localhost.pem"), &cert).expect("copy");
    std::fs::copy(common::certs().join("localhost.key"), &key).expect("copy");
    let gate = GateConfig::new(&fake.address())
        .imap4(&format!("certificate = {cert:?}"))
        .imap4(&format!("private_key = {key:?}"))
        .start()
        .await;
    let tls = gate.tls.expect("tls");
    assert!(handshake_ok(tls).await);
    // A broken certificate file: reload refused, the old certificate keeps serving.
    std::fs::write(&cert, "not a certificate").expect("w");
    let e = gate.handle.reload().expect_err("refused").to_string();
    assert!(e.contains("gate.pem"), "{e}");
    assert!(handshake_ok(tls).await);
    // A new certificate (self-signed, so the dev CA no longer verifies it): in force after reload.
    let (other_cert, other_key) = self_signed(dir.path());
    std::fs::copy(other_cert, &cert).expect("copy");
    std::fs::copy(other_key, &key).expect("copy");
    gate.handle.reload().expect("reload");
    assert!(!handshake_ok(tls).await, "the new certificate is presented");
    gate.stop().await;
}
