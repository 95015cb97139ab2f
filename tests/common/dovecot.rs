//! A real Dovecot backend for interop, started once per test binary by
//! `scripts/throwaway-dovecot.sh --hold`; it stops when the test binary exits (its stdin closes).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub struct Dovecot {
    pub port: u16,
    pub tls_port: u16,
    /// Takes only connections that start with a PROXY protocol header.
    pub haproxy_port: u16,
    pub dir: tempfile::TempDir,
    _child: Mutex<Child>,
}

fn free_port() -> u16 {
    super::closed_port()
}

static DOVECOT: OnceLock<Option<Dovecot>> = OnceLock::new();

/// The shared Dovecot, or `None` when Dovecot is not installed outside CI (the test then says
/// so and returns). In CI (`CI` set) a missing Dovecot fails the test.
pub fn dovecot() -> Option<&'static Dovecot> {
    DOVECOT
        .get_or_init(|| {
            if !super::installed(&["dovecot"], "dovecot-imapd") {
                return None;
            }
            Some(start(&[]))
        })
        .as_ref()
}

/// A new throwaway Dovecot with these extra environment variables for the script
/// (`OAUTH_INTROSPECTION_URL`, say); it stops when the test binary exits.
pub fn start(env: &[(&str, String)]) -> Dovecot {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, tls_port, haproxy_port) = (free_port(), free_port(), free_port());
    let mut child = Command::new(super::repo().join("scripts/throwaway-dovecot.sh"))
        .arg(dir.path())
        .arg(port.to_string())
        .arg(tls_port.to_string())
        .arg("--hold")
        .env("HAPROXY_PORT", haproxy_port.to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dovecot script");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("read");
    assert_eq!(first.trim(), "ready", "dovecot did not start");
    Dovecot {
        port,
        tls_port,
        haproxy_port,
        dir,
        _child: Mutex::new(child),
    }
}
