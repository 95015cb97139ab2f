//! A real OpenLDAP directory (Debian's slapd), one per test, started by
//! `scripts/throwaway-slapd.sh --hold` with the shipped schema (`config/ldap/exchange.ldif`) and
//! demo entries (`config/ldap/demo.ldif`); it stops when dropped (the script's stdin closes).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BASE: &str = "dc=contoso,dc=com";
pub const STAFF: &str = "ou=Staff,dc=contoso,dc=com";
pub const SERVICE_DN: &str = "cn=imapgate,ou=Services,dc=contoso,dc=com";
pub const READER_DN: &str = "cn=reader,ou=Services,dc=contoso,dc=com";
const ADMIN_DN: &str = "cn=admin,dc=contoso,dc=com";
const ADMIN_PASSWORD: &str = "admin-demo-password";

pub struct Slapd {
    pub port: u16,
    pub tls_port: u16,
    /// Where the script keeps the configuration, database and passwords.
    pub dir: PathBuf,
    /// A temporary `dir`, removed after slapd stops.
    _owned: Option<tempfile::TempDir>,
    child: Child,
}

/// True when slapd can be used here; outside CI a missing slapd skips the test (it says so), in
/// CI (`CI` set) it fails it.
pub fn available() -> bool {
    super::installed(&["/usr/sbin/slapd", "ldapmodify"], "slapd ldap-utils")
}

impl Slapd {
    /// A new directory with the demo entries, `entries` (LDIF added online) and `bulk` (an LDIF
    /// file loaded offline with `slapadd -q`).
    pub fn start(entries: &str, bulk: Option<&Path>) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("slapd")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let (port, tls_port) = (super::closed_port(), super::closed_port());
        let path = dir.path().to_path_buf();
        Slapd::run(path, Some(dir), port, tls_port, entries, bulk)
    }

    /// The demo's directory as `scripts/demo.sh --ldap` starts it: in `dir`, on these ports.
    pub fn start_in(dir: &Path, port: u16, tls_port: u16) -> Slapd {
        Slapd::run(dir.to_path_buf(), None, port, tls_port, "", None)
    }

    fn run(
        dir: PathBuf,
        owned: Option<tempfile::TempDir>,
        port: u16,
        tls_port: u16,
        entries: &str,
        bulk: Option<&Path>,
    ) -> Slapd {
        let mut cmd = Command::new(super::repo().join("scripts/throwaway-slapd.sh"));
        cmd.arg(&dir)
            .arg(port.to_string())
            .arg(tls_port.to_string());
        if !entries.is_empty() {
            let file = dir.join("entries.ldif");
            std::fs::write(&file, entries).expect("write entries");
            cmd.arg("--entries").arg(file);
        }
        if let Some(bulk) = bulk {
            cmd.arg("--bulk").arg(bulk);
        }
        let mut child = cmd
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the slapd script");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).expect("read");
        assert_eq!(first.trim(), "ready", "slapd did not start");
        Slapd {
            port,
            tls_port,
            dir,
            _owned: owned,
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The imapgate bind account's password file (written by the script).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("imapgate-password")
    }

    /// The read-only account's password file.
    pub fn reader_password_file(&self) -> PathBuf {
        self.dir.join("reader-password")
    }

    /// `[directory] source = "ldap"` and `[directory.ldap]` for this directory: the Exchange
    /// preset over the shipped schema, StartTLS with the development CA, `MBX01` -> `main`.
    /// `extra` adds lines to `[directory.ldap]`.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "[directory.ldap]\nurls = [{:?}]\nca = {:?}\nbind_dn = {SERVICE_DN:?}\n\
             bind_password_file = {:?}\nbase_dn = {STAFF:?}\n\
             filter = \"(objectClass=imapgateExchangeUser)\"\nnetbios_domain = \"CORP\"\n\
             timeout = \"2s\"\n{extra}\n\n[directory.ldap.servers]\nMBX01 = \"main\"\n\n",
            self.url(),
            super::certs().join("ca.pem"),
            self.password_file(),
        )
    }

    /// Runs `ldapmodify` as the directory's administrator (another admin tool's change).
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ADMIN_DN, ADMIN_PASSWORD, ldif);
    }

    fn ldap_tool(&self, tool: &str, dn: &str, password: &str, input: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", dn, "-w", password])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ldap tool");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The values of `attr` of the entry `dn`, as the server holds them (base64 decoded).
    pub fn values(&self, dn: &str, attr: &str) -> Vec<String> {
        let out = Command::new("ldapsearch")
            .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H", &self.url()])
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-s", "base", "-b", dn])
            .arg("(objectClass=*)")
            .arg(attr)
            .output()
            .expect("run ldapsearch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let plain = format!("{attr}: ");
        let encoded = format!("{attr}:: ");
        text.lines()
            .filter_map(|l| {
                if let Some(v) = l.strip_prefix(&plain) {
                    Some(v.to_string())
                } else {
                    l.strip_prefix(&encoded).map(|v| {
                        use base64::Engine;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .expect("base64 value");
                        String::from_utf8(bytes).expect("utf-8 value")
                    })
                }
            })
            .collect()
    }

    /// Stops slapd (the directory becomes unreachable); [`Slapd::resume`] starts it again.
    pub fn pause(&self) {
        let pid = std::fs::read_to_string(self.dir.join("slapd.pid")).expect("pid file");
        let pid = pid.trim().to_string();
        let _ = Command::new("kill").arg(&pid).status();
        for _ in 0..200 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !alive {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slapd did not stop");
    }

    /// Starts slapd again on the same ports and database.
    pub fn resume(&self) {
        let socket = self.dir.join("ldapi").display().to_string();
        let ldapi = format!("ldapi://{}", socket.replace('/', "%2F"));
        let urls = format!("{}/ {}/ {ldapi}/", self.url(), self.ldaps_url());
        let status = Command::new("/usr/sbin/slapd")
            .arg("-F")
            .arg(self.dir.join("slapd.d"))
            .args(["-h", &urls])
            .status()
            .expect("run slapd");
        assert!(status.success(), "slapd did not start again");
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("slapd did not listen again");
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
