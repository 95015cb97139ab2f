//! The configuration file's parsing and checks.

use super::*;
use std::path::Path;

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let text = r#"
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:143"]
certificate = "certs/gate.pem"
private_key = "/abs/key.pem"
[directory]
mailboxes = "mailboxes.toml"
cache_ttl = "5m"
[backends.main]
address = "127.0.0.1:1993"
"#;
    let c = Config::parse(Path::new("/etc/imapgate/imapgate.toml"), text).unwrap();
    assert_eq!(
        c.imap4.certificate.unwrap(),
        Path::new("/etc/imapgate/certs/gate.pem")
    );
    assert_eq!(c.imap4.private_key.unwrap(), Path::new("/abs/key.pem"));
    assert_eq!(
        c.directory.mailboxes,
        Path::new("/etc/imapgate/mailboxes.toml")
    );
    assert_eq!(c.directory.cache_ttl, Duration::from_secs(300));
    assert_eq!(c.imap4.login_type, LoginType::SecureLogin);
}

#[test]
fn durations_out_of_range_are_refused() {
    let base =
        "[imap4]\nunencrypted_or_tls_bindings=[\"127.0.0.1:1\"]\nlogin_type=\"plain-text-login\"\n";
    let backend = "[backends.b]\naddress=\"h:1\"\n";
    for (extra, key) in [
        (
            "preauthenticated_connection_timeout = \"500000000000years\"\n",
            "preauthenticated",
        ),
        (
            "authenticated_connection_timeout = \"500ms\"\n",
            "authenticated_connection_timeout",
        ),
    ] {
        let text = format!("{base}{extra}{backend}");
        let e = Config::parse(Path::new("/x/g.toml"), &text).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
    let text = format!("{base}{backend}connect_timeout = \"0s\"\n");
    let e = Config::parse(Path::new("/x/g.toml"), &text).unwrap_err();
    assert!(e.to_string().contains("backends.b.connect_timeout"), "{e}");
}

#[test]
fn errors_name_file_line_and_key() {
    let e = Config::parse(Path::new("/x/gate.toml"), "[imap4]\nbogus = 1\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("/x/gate.toml") && s.contains("line 2"), "{s}");
    let e = Config::parse(
        Path::new("/x/gate.toml"),
        "[imap4]\nunencrypted_or_tls_bindings=[\"127.0.0.1:1\"]\nlogin_type=\"plain-text-login\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("backends"), "{e}");
}

#[test]
fn workers_default_to_half_the_cores_and_memory_release_is_on() {
    let r = RuntimeConfig::default();
    assert_eq!((r.workers(1), r.workers(2), r.workers(8)), (1, 1, 4));
    assert!(r.release_memory_after_bursts);
    let set = RuntimeConfig {
        worker_threads: 3,
        ..RuntimeConfig::default()
    };
    assert_eq!(set.workers(2), 3);
}
