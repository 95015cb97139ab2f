//! TLS towards clients: TLS 1.2 and 1.3 only, and commands pipelined behind STARTTLS in
//! plaintext are discarded rather than run inside TLS.

mod common;

use std::process::Stdio;

use common::fake::Script;
use common::fixtures::{gate_with_fake, FAKE_USERS};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `openssl s_client` against `port` with `args`; returns what it printed.
async fn s_client(port: u16, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"a LOGOUT\r\n").await;
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("openssl finished")
        .expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let port = gate.tls.expect("tls").port();
    let ok12 = s_client(port, &["-tls1_2"]).await;
    assert!(
        ok12.contains("Protocol  : TLSv1.2") || ok12.contains("TLSv1.2"),
        "{ok12}"
    );
    assert!(ok12.contains("* OK [CAPABILITY"), "{ok12}");
    let ok13 = s_client(port, &["-tls1_3"]).await;
    assert!(
        ok13.contains("TLSv1.3") && ok13.contains("* OK [CAPABILITY"),
        "{ok13}"
    );
    for old in ["-tls1_1", "-tls1"] {
        let out = s_client(port, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        // Connected, then the handshake failed (not an option error).
        assert!(
            out.contains("CONNECTED") && !out.contains("* OK [CAPABILITY"),
            "{old} must fail: {out}"
        );
        assert!(
            !out.contains("Cipher is") || out.contains("Cipher is (NONE)"),
            "{old}: {out}"
        );
    }
    gate.stop().await;
}

#[tokio::test]
async fn starttls_discards_commands_pipelined_behind_it() {
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    // The injected LOGIN rides in the same packet as STARTTLS.
    c.send(b"a STARTTLS\r\nx LOGIN user1 pass1\r\n").await;
    assert_eq!(c.line().await, "a OK Begin TLS negotiation now.");
    let mut c = c.handshake_after_starttls().await;
    let r = c.cmd("b", "NOOP").await;
    assert_eq!(
        r,
        vec!["b OK NOOP completed."],
        "the injected command must not run inside TLS"
    );
    assert!(fake.commands().is_empty(), "{:?}", fake.commands());
    gate.stop().await;
}
