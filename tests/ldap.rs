//! The LDAP directory source against a real OpenLDAP (Debian's slapd) loaded with the shipped
//! schema (`config/ldap/exchange.ldif`) and demo entries (`config/ldap/demo.ldif`), in front of a
//! real Dovecot: every identity form, the CLI writing Exchange's protocolSettings values byte for
//! byte, a change made with ldapmodify followed through content synchronization, slapd going
//! away and coming back, filter injection, failover and LDAPS, a bind that may not write,
//! check-config's steps, and 100,000 entries listed with paged results.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{cli, mailbox_set};
use common::dovecot::dovecot;
use common::slapd::{self, Slapd, READER_DN, STAFF};
use common::{GateConfig, TestGate};

const JOHN: &str = "cn=John Smith,ou=Staff,dc=contoso,dc=com";
const JANE: &str = "cn=Jane Doe,ou=Staff,dc=contoso,dc=com";
const DISABLED: &str = "IMAP4§0§1§4§ISO-8859-1§0§1§0§0";
const ENABLED: &str = "IMAP4§1§1§4§ISO-8859-1§0§1§0§0";

/// slapd and Dovecot, or `None` (the test says why and returns) outside CI.
fn servers() -> Option<u16> {
    if !slapd::available() {
        return None;
    }
    dovecot().map(|d| d.port)
}

/// A gate reading `directory`, Dovecot as the backend `main` (the demo entries' server MBX01),
/// with a control socket and metrics. `ldap_extra` adds lines to `[directory.ldap]`,
/// `directory_extra` to `[directory]`.
async fn gate_with(
    directory: &Slapd,
    backend_port: u16,
    ldap_extra: &str,
    directory_extra: &str,
) -> TestGate {
    // Dovecot's own timeouts (a refused name costs its 2 s failure delay).
    let mut config = GateConfig::new(&format!("127.0.0.1:{backend_port}"))
        .main_backend("")
        .extra_directory("source = \"ldap\"")
        .section(&directory.section(ldap_extra))
        .section(
            "[admin]\ncontrol_socket = \"control.sock\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n",
        );
    for line in directory_extra.lines() {
        config = config.extra_directory(line);
    }
    config.start().await
}

async fn gate(directory: &Slapd, backend_port: u16) -> TestGate {
    gate_with(directory, backend_port, "", "").await
}

/// `LOGIN` with both arguments as literals (any byte but CR and LF), from 127.0.0.`source`
/// (Dovecot's failure penalty is per client address, which the gate passes on); the tagged
/// answer.
async fn login_literal(gate: &TestGate, source: u8, user: &[u8], pass: &[u8]) -> String {
    let mut c = common::Client::plain_from([127, 0, 0, source], gate.plain).await;
    c.greeting().await;
    let mut command = format!("a LOGIN {{{}+}}\r\n", user.len()).into_bytes();
    command.extend_from_slice(user);
    command.extend_from_slice(format!(" {{{}+}}\r\n", pass.len()).as_bytes());
    command.extend_from_slice(pass);
    command.extend_from_slice(b"\r\n");
    c.send(&command).await;
    loop {
        let line = c.line().await;
        if line.starts_with("a ") || line.starts_with("* BYE") {
            return line;
        }
    }
}

/// Logs in as each `(name, password)` at once, each from an address of its own (from
/// 127.0.0.`first`): the answers in order. Refused names cost Dovecot's failure delay each.
async fn logins_at_once(gate: &TestGate, first: u8, tries: &[(&str, &str)]) -> Vec<String> {
    let mut answers = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (name, pass)) in tries.iter().enumerate() {
        let (name, pass) = (name.as_bytes().to_vec(), pass.as_bytes().to_vec());
        let (plain, source) = (gate.plain, first + i as u8);
        tasks.spawn(async move {
            let mut c = common::Client::plain_from([127, 0, 0, source], plain).await;
            c.greeting().await;
            let mut command = format!("a LOGIN {{{}+}}\r\n", name.len()).into_bytes();
            command.extend_from_slice(&name);
            command.extend_from_slice(format!(" {{{}+}}\r\n", pass.len()).as_bytes());
            command.extend_from_slice(&pass);
            command.extend_from_slice(b"\r\n");
            c.send(&command).await;
            loop {
                let line = c.line().await;
                if line.starts_with("a ") || line.starts_with("* BYE") {
                    return (i, line);
                }
            }
        });
    }
    answers.resize(tries.len(), String::new());
    while let Some(done) = tasks.join_next().await {
        let (i, line) = done.expect("login task");
        answers[i] = line;
    }
    answers
}

/// The sum of a metric's series whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn every_identity_form_logs_in_and_the_cache_spares_the_directory() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let gate = gate(&directory, port).await;
    // alias, mail, another proxy address (any case of its smtp: prefix), UPN, DOMAIN\account,
    // the account itself (the backend login).
    for name in [
        "jsmith",
        "john.smith@example.com",
        "js@example.net",
        "JS@Example.NET",
        "jsmith@corp.example.com",
        "CORP\\user1",
        "corp\\USER1",
        "user1",
    ] {
        let answer = common::login(&gate, &name.replace('\\', "\\\\"), "pass1").await;
        assert!(answer.starts_with("a OK"), "{name}: {answer}");
    }
    // IMAP4 disabled in protocolSettings (Jane), enabled explicitly (Ana).
    let jane = common::login(&gate, "jane.doe@example.com", "pass2").await;
    assert!(jane.starts_with("a NO [CONTACTADMIN]"), "{jane}");
    let ana = common::login(&gate, "alima", "pass3").await;
    assert!(ana.starts_with("a OK"), "{ana}");
    // Names the directory does not have, or another domain: refused like a wrong password.
    let names = ["nobody@example.com", "OTHER\\user1", "John Smith"];
    let tries: Vec<(&str, &str)> = names.iter().map(|n| (*n, "pass1")).collect();
    for (name, answer) in names.iter().zip(logins_at_once(&gate, 10, &tries).await) {
        assert!(
            answer.starts_with("a NO [AUTHENTICATIONFAILED]"),
            "{name}: {answer}"
        );
    }
    // Warm: the same names again make no LDAP lookup.
    let metrics = gate.metrics.expect("metrics");
    let before = metric(
        &common::scrape(metrics).await,
        "imapgate_directory_lookups_total",
    );
    for name in ["jsmith", "JSMITH", "john.smith@example.com", "alima"] {
        let pass = if name == "alima" { "pass3" } else { "pass1" };
        assert!(common::login(&gate, name, pass).await.starts_with("a OK"));
    }
    let text = common::scrape(metrics).await;
    // One per distinct name (case does not make another): 6 of John's, Jane, Ana, and the two
    // unknown names that can match (another domain is refused without a search).
    assert_eq!(before, 10.0, "lookups counted\n{text}");
    assert_eq!(
        metric(&text, "imapgate_directory_lookups_total"),
        before,
        "{text}"
    );
    assert!(
        metric(&text, "imapgate_directory_lookup_seconds_count") >= before,
        "{text}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn mailbox_set_writes_exchanges_values_and_closes_the_session() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let gate = gate(&directory, port).await;
    let config = gate.config_path.clone();
    let mut john = gate.logged_in("jsmith", "pass1").await;

    // The seed's procedure: disable, by display name.
    let (ok, out, err) = mailbox_set(&config, "John Smith", false, &[]).await;
    assert!(ok, "{out}{err}");
    // One IMAP4 value added, HTTP's untouched.
    assert_eq!(
        sorted(directory.values(JOHN, "protocolSettings")),
        vec!["HTTP§1§1§§§§§§".to_string(), DISABLED.to_string()]
    );
    assert!(
        john.closed_within(Duration::from_secs(2)).await,
        "session closed"
    );
    let refused = common::login(&gate, "jsmith", "pass1").await;
    assert!(refused.starts_with("a NO [CONTACTADMIN]"), "{refused}");
    let (ok, out, _) = cli(&config, &["mailbox", "get", "--identity", "jsmith"]).await;
    assert!(ok && out.trim_end().ends_with("IMAP4: Disabled"), "{out}");
    // By GUID, in its usual text form.
    let (ok, out, _) = cli(
        &config,
        &[
            "mailbox",
            "get",
            "--identity",
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        ],
    )
    .await;
    assert!(
        ok && out.contains("John Smith") && out.trim_end().ends_with("IMAP4: Disabled"),
        "{out}"
    );

    // Enable: the first field flips back, the rest stays.
    let (ok, out, err) = mailbox_set(&config, "CORP\\user1", true, &[]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        sorted(directory.values(JOHN, "protocolSettings")),
        vec!["HTTP§1§1§§§§§§".to_string(), ENABLED.to_string()]
    );
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a OK"));

    // Jane's disabled value flips in place; POP3's stays.
    let (ok, out, err) = mailbox_set(&config, "jdoe", true, &[]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(
        sorted(directory.values(JANE, "protocolSettings")),
        vec![
            ENABLED.to_string(),
            "POP3§1§1§4§ISO-8859-1§0§§§".to_string()
        ]
    );
    // Setting what is already set changes nothing.
    let (ok, out, err) = mailbox_set(&config, "jdoe", true, &[]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(directory.values(JANE, "protocolSettings").len(), 2);
    // The LDAP directory does not create mailboxes.
    let (ok, out, err) = mailbox_set(&config, "new.person@example.com", false, &["--create"]).await;
    assert!(!ok && err.contains("does not create"), "{out}{err}");
    gate.stop().await;
}

#[tokio::test]
async fn a_bind_that_may_not_write_gets_a_clear_error() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let extra = format!(
        "bind_dn = {READER_DN:?}\nbind_password_file = {:?}",
        directory.reader_password_file()
    );
    let section = directory
        .section("")
        .replace(&format!("bind_dn = {:?}", slapd::SERVICE_DN), "")
        .replace(
            &format!("bind_password_file = {:?}", directory.password_file()),
            &extra,
        );
    let gate = GateConfig::new(&format!("127.0.0.1:{port}"))
        .main_backend("")
        .extra_directory("source = \"ldap\"")
        .section(&section)
        .section("[admin]\ncontrol_socket = \"control.sock\"\n\n")
        .start()
        .await;
    let (ok, out, err) = mailbox_set(&gate.config_path, "jsmith", false, &[]).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("insufficientAccessRights")
            && err.contains(READER_DN)
            && err.contains("protocolSettings"),
        "{err}"
    );
    assert_eq!(
        directory.values(JOHN, "protocolSettings"),
        vec!["HTTP§1§1§§§§§§".to_string()]
    );
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a OK"));
    gate.stop().await;
}

#[tokio::test]
async fn a_change_made_with_ldapmodify_is_followed_within_two_seconds() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    // The cache keeps answers 5 minutes: only the change can end this one sooner.
    let gate = gate(&directory, port).await;
    let mut john = gate.logged_in("john.smith@example.com", "pass1").await;
    // The synchronization search starts with the gate; give it its refresh stage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    directory.modify(&format!(
        "dn: {JOHN}\nchangetype: modify\nadd: protocolSettings\nprotocolSettings: {DISABLED}\n"
    ));
    let started = Instant::now();
    assert!(
        john.closed_within(Duration::from_secs(2)).await,
        "the session of a mailbox disabled elsewhere is closed within 2 s"
    );
    eprintln!("closed {:?} after ldapmodify", started.elapsed());
    let refused = common::login(&gate, "jsmith", "pass1").await;
    assert!(refused.starts_with("a NO [CONTACTADMIN]"), "{refused}");
    // And back: enabled elsewhere, in force without a reload or a TTL.
    directory.modify(&format!(
        "dn: {JOHN}\nchangetype: modify\ndelete: protocolSettings\nprotocolSettings: {DISABLED}\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = common::login(&gate, "jsmith", "pass1").await;
        if answer.starts_with("a OK") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.stop().await;
}

#[tokio::test]
async fn an_unreachable_directory_serves_cached_names_and_fails_closed() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let gate = gate_with(&directory, port, "follow_changes = false", "").await;
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a OK"));
    directory.pause();
    // Cached: still answered.
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a OK"));
    // Not cached: unavailable, never a yes, whether enabled (Ana) or disabled (Jane).
    for (name, pass) in [("alima", "pass3"), ("jdoe", "pass2")] {
        let answer = common::login(&gate, name, pass).await;
        assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{name}: {answer}");
    }
    let text = common::scrape(gate.metrics.expect("metrics")).await;
    assert!(
        metric(&text, "imapgate_directory_lookups_total{outcome=\"error\"}") >= 2.0,
        "{text}"
    );
    directory.resume();
    // Back: reconnects (the URL's back-off is short) and answers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = common::login(&gate, "alima", "pass3").await;
        if answer.starts_with("a OK") {
            break;
        }
        assert!(
            answer.starts_with("a NO [UNAVAILABLE]") && Instant::now() < deadline,
            "after slapd came back: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let jane = common::login(&gate, "jdoe", "pass2").await;
    assert!(jane.starts_with("a NO [CONTACTADMIN]"), "{jane}");
    gate.stop().await;
}

/// Names full of filter syntax are values, never filters: each of these would match John
/// Smith (and log in with his password) if it reached the filter unescaped.
#[tokio::test]
async fn login_names_cannot_inject_into_the_ldap_filter() {
    let Some(port) = servers() else { return };
    // An entry whose alias is filter syntax, on Dovecot's user "tricky". (A backslash in a
    // name makes it a DOMAIN\account, as with the file directory.)
    let odd = "dn: cn=Odd Name,ou=Staff,dc=contoso,dc=com\nobjectClass: inetOrgPerson\n\
               objectClass: imapgateExchangeUser\ncn: Odd Name\nsn: Name\n\
               mailNickname: a*b(c)\nsAMAccountName: tricky\n";
    let directory = Slapd::start(odd, None);
    assert_eq!(
        directory.values("cn=Odd Name,ou=Staff,dc=contoso,dc=com", "mailNickname"),
        vec!["a*b(c)".to_string()]
    );
    // No refused characters: `*` reaches the directory too.
    let gate = gate_with(&directory, port, "", "refused_login_characters = \"\"").await;
    let names = [
        "jsmit*",
        "*smith",
        "j*h",
        "jsmith)(cn=*",
        "*)(mailNickname=jsmith",
        "\\6asmith",
        "jsmith\\00",
        "CORP\\user*",
    ];
    let tries: Vec<(&str, &str)> = names.iter().map(|n| (*n, "pass1")).collect();
    for (name, answer) in names.iter().zip(logins_at_once(&gate, 20, &tries).await) {
        assert!(
            answer.starts_with("a NO [AUTHENTICATIONFAILED]"),
            "{name}: {answer}"
        );
    }
    // A NUL in a name is refused before any directory sees it.
    let answer = login_literal(&gate, 40, b"jsmith\0", b"pass1").await;
    assert!(!answer.starts_with("a OK"), "{answer}");
    // The name that really has those characters finds its own entry.
    let answer = login_literal(&gate, 41, b"a*b(c)", b"p\"a\\ss {3}").await;
    assert!(answer.starts_with("a OK"), "{answer}");
    gate.stop().await;
}

#[tokio::test]
async fn urls_fail_over_in_order_and_ldaps_works() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let dead = format!("ldap://127.0.0.1:{}", common::closed_port());
    let section = directory.section("").replace(
        &format!("urls = [{:?}]", directory.url()),
        &format!("urls = [{dead:?}, {:?}]", directory.ldaps_url()),
    );
    assert!(section.contains(&dead), "{section}");
    let gate = GateConfig::new(&format!("127.0.0.1:{port}"))
        .main_backend("")
        .extra_directory("source = \"ldap\"")
        .section(&section)
        .start()
        .await;
    let answer = common::login(&gate, "jsmith", "pass1").await;
    assert!(answer.starts_with("a OK"), "{answer}");
    let (ok, out, err) = cli(&gate.config_path, &["check-config"]).await;
    assert!(
        ok && out.contains("bound as cn=imapgate") && out.contains("mailboxes found"),
        "{out}{err}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn check_config_names_the_ldap_step_that_failed() {
    if !slapd::available() {
        return;
    }
    let directory = Slapd::start("", None);
    let write = |section: &str| {
        GateConfig::new("127.0.0.1:1")
            .extra_directory("source = \"ldap\"")
            .section(section)
            .write()
    };
    // Good.
    let (_d, good) = write(&directory.section(""));
    let (ok, out, err) = cli(&good, &["check-config"]).await;
    assert!(ok && out.contains("bound as"), "{out}{err}");
    // Wrong password.
    let bad = directory.dir.join("wrong-password");
    std::fs::write(&bad, "not-the-password\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let section = directory.section("").replace(
        &format!("{:?}", directory.password_file()),
        &format!("{bad:?}"),
    );
    let (_d, config) = write(&section);
    let (ok, out, err) = cli(&config, &["check-config"]).await;
    assert!(
        !ok && err.contains("bind as cn=imapgate") && err.contains("invalidCredentials"),
        "{out}{err}"
    );
    // Nothing listening.
    let dead = format!("ldap://127.0.0.1:{}", common::closed_port());
    let section = directory.section("").replace(&directory.url(), &dead);
    let (_d, config) = write(&section);
    let (ok, out, err) = cli(&config, &["check-config"]).await;
    assert!(
        !ok && err.contains(&dead) && err.contains("connect and StartTLS"),
        "{out}{err}"
    );
    // A base that does not exist.
    let section = directory
        .section("")
        .replace(STAFF, "ou=Nobody,dc=contoso,dc=com");
    let (_d, config) = write(&section);
    let (ok, out, err) = cli(&config, &["check-config"]).await;
    assert!(
        !ok && err.contains("ou=Nobody") && err.contains("noSuchObject"),
        "{out}{err}"
    );
}

#[tokio::test]
async fn a_hundred_thousand_entries_list_with_paged_results() {
    if !slapd::available() {
        return;
    }
    let bulk = tempfile::NamedTempFile::new().expect("tempfile");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(bulk.as_file());
        for i in 0..100_000u32 {
            let setting = if i % 10 == 0 {
                DISABLED
            } else {
                "HTTP§1§1§§§§§§"
            };
            write!(
                out,
                "dn: cn=Bulk User {i:06},{STAFF}\nobjectClass: inetOrgPerson\n\
                 objectClass: imapgateExchangeUser\ncn: Bulk User {i:06}\nsn: User\n\
                 displayName: Bulk User {i:06}\nmail: bulk{i:06}@example.org\n\
                 mailNickname: bulk{i:06}\nsAMAccountName: bulk{i:06}\n\
                 protocolSettings: {setting}\n\n"
            )
            .expect("write");
        }
        out.flush().expect("flush");
    }
    let started = Instant::now();
    let directory = Slapd::start("", Some(bulk.path()));
    eprintln!("100,000 entries loaded in {:?}", started.elapsed());
    let (_d, config) = GateConfig::new("127.0.0.1:1")
        .extra_directory("source = \"ldap\"")
        .section(&directory.section(""))
        .write();
    let started = Instant::now();
    let (ok, out, err) = cli(
        &config,
        &["mailbox", "get", "--filter", "imap-enabled=false"],
    )
    .await;
    eprintln!("10,001 of 100,003 listed in {:?}", started.elapsed());
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("False")).collect();
    // Every tenth bulk entry, and Jane Doe.
    assert_eq!(rows.len(), 10_001, "{}", &out[..out.len().min(2000)]);
    assert!(rows.iter().any(|r| r.contains("Jane Doe")));
    assert!(!out.contains("Bulk User 000001"), "an enabled one listed");
    // All of them.
    let started = Instant::now();
    let (ok, out, err) = cli(&config, &["mailbox", "get"]).await;
    eprintln!("100,003 listed in {:?}", started.elapsed());
    assert!(ok, "{err}");
    let rows = out
        .lines()
        .filter(|l| l.ends_with("True") || l.ends_with("False"));
    assert_eq!(rows.count(), 100_003);
}

/// The LDAP demo as shipped: `config/imapgate.ldap.toml` byte for byte (the certificates beside
/// it as in the repository) over the throwaway slapd that `scripts/demo.sh --ldap` starts, in
/// the same directory and on the same ports.
#[tokio::test]
async fn the_shipped_ldap_demo_configuration_reads_the_demo_directory() {
    if !slapd::available() {
        return;
    }
    if std::net::TcpStream::connect("127.0.0.1:21389").is_ok() {
        assert!(
            std::env::var_os("CI").is_none(),
            "port 21389 is taken: the LDAP demo's port must be free in CI"
        );
        eprintln!("SKIP: port 21389 is taken (is scripts/demo.sh --ldap running?)");
        return;
    }
    let _directory = Slapd::start_in(
        std::path::Path::new("/tmp/imapgate-demo/ldap"),
        21389,
        21636,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("config")).expect("mkdir");
    std::fs::create_dir_all(d.join("certs")).expect("mkdir");
    let repo = common::repo();
    std::fs::copy(
        repo.join("config/imapgate.ldap.toml"),
        d.join("config/imapgate.ldap.toml"),
    )
    .expect("copy");
    for pem in ["localhost.pem", "ca.pem"] {
        std::fs::copy(common::certs().join(pem), d.join("certs").join(pem)).expect("copy");
    }
    std::fs::copy(common::dev_key(), d.join("certs/localhost.key")).expect("key");
    let config = d.join("config/imapgate.ldap.toml");
    let (ok, out, err) = cli(&config, &["check-config"]).await;
    assert!(
        ok && out.contains("bound as cn=imapgate") && out.contains("mailboxes found"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(&config, &["mailbox", "get"]).await;
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("Jane Doe") && r.ends_with("False")),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("John Smith") && r.contains("mail1") && r.ends_with("True")),
        "{out}"
    );
}

/// The seed's graphical procedure over LDAP: the admin center lists and searches the directory
/// on the server, and its Save writes protocolSettings and closes the session.
#[tokio::test]
async fn the_admin_center_reads_and_writes_the_ldap_directory() {
    let Some(port) = servers() else { return };
    let directory = Slapd::start("", None);
    let gate = GateConfig::new(&format!("127.0.0.1:{port}"))
        .main_backend("")
        .extra_directory("source = \"ldap\"")
        .section(&directory.section(""))
        .admin_center()
        .start()
        .await;
    imapgate::admin::users::add(
        &gate.dir.path().join("admins.toml"),
        "alice",
        imapgate::admin::users::Role::RecipientManagement,
        b"alice-password",
    )
    .expect("add alice");
    let mut john = gate.logged_in("jsmith", "pass1").await;
    let mut b = common::https::Browser::new(gate.admin_web.expect("admin center"));
    b.signed_in("alice", "alice-password").await;
    let list = b.get("/mailboxes").await;
    assert!(
        list.body.contains("Jane Doe") && list.body.contains("Ana Lima"),
        "{}",
        list.body
    );
    let found = b.get("/mailboxes?search=Smi").await;
    assert!(
        found.body.contains("1 mailbox(es) matching") && !found.body.contains("Jane Doe"),
        "{}",
        found.body
    );
    let features = b
        .get("/mailboxes/edit?identity=jsmith&section=features")
        .await;
    assert!(
        features.body.contains("IMAP4: Enabled"),
        "{}",
        features.body
    );
    let csrf = features.csrf();
    let saved = b
        .post(
            "/mailboxes/features",
            &[
                ("csrf", &csrf),
                ("identity", "jsmith"),
                ("imap4", "disabled"),
            ],
        )
        .await;
    assert!(saved.status < 400, "{}", saved.body);
    assert_eq!(
        sorted(directory.values(JOHN, "protocolSettings")),
        vec!["HTTP§1§1§§§§§§".to_string(), DISABLED.to_string()]
    );
    assert!(john.closed_within(Duration::from_secs(2)).await);
    let check = b
        .get("/mailboxes/edit?identity=jsmith&section=features")
        .await;
    assert!(check.body.contains("IMAP4: Disabled"), "{}", check.body);
    gate.stop().await;
}
