//! The Login service without sockets: a configuration and a mailboxes file on disk, and a
//! stand-in for the backends that checks passwords from a table and records what it was sent.

use std::sync::Mutex;

use super::*;
use crate::config::Config;
use crate::limits::LocalSessions;
use crate::stream::Stream;

const CONFIG: &str = r#"
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:0"]
login_type = "plain-text-login"
max_connections_per_user = 1
auth_penalty_initial = "0s"
[directory]
mailboxes = "mailboxes.toml"
[backends.main]
address = "127.0.0.1:1"
"#;

const MAILBOXES: &str = r#"
[[mailbox]]
name = "John Smith"
alias = "jsmith"
email = "john.smith@example.com"
login = "user1"

[[mailbox]]
name = "Jane Doe"
email = "jane@example.com"
login = "user2"
imap_enabled = false

[[mailbox]]
alias = "broken"
"#;

/// Checks `userN` / `passN`; `broken` answers the login `BAD`.
#[derive(Default)]
struct Stand {
    seen: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Backends for Stand {
    async fn login(
        &self,
        _state: &State,
        backend: &str,
        creds: &Credentials,
        _client: &ClientInfo,
    ) -> Result<LoginResult, BackendError> {
        assert_eq!(backend, "main");
        let (user, password) = (
            creds.user().to_string(),
            String::from_utf8_lossy(creds.secret().expose()).into_owned(),
        );
        self.seen
            .lock()
            .unwrap()
            .push((user.clone(), password.clone()));
        if user == "broken" {
            return Err(BackendError::Refused("ig1 BAD what?".into()));
        }
        let right = user.strip_prefix("user").map(|n| format!("pass{n}"));
        if right.as_deref() != Some(password.as_str()) {
            return Ok(LoginResult::Rejected);
        }
        Ok(LoginResult::LoggedIn(BackendSession {
            stream: Stream::Detached,
            pending: Vec::new(),
            prelude: Vec::new(),
            ok_text: "[CAPABILITY IMAP4rev1] Logged in".into(),
        }))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    login: Login,
    stand: Arc<Stand>,
    registry: Arc<Registry>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imapgate.toml");
    std::fs::write(&path, CONFIG).unwrap();
    std::fs::write(dir.path().join("mailboxes.toml"), MAILBOXES).unwrap();
    let state = State::from_config(
        Config::load(&path).unwrap(),
        crate::metrics::DirectoryStats::default(),
    )
    .unwrap();
    let stand = Arc::new(Stand::default());
    let registry = Arc::new(Registry::default());
    let login = Login::new(
        Arc::new(ArcSwap::from_pointee(state)),
        stand.clone(),
        Arc::new(LocalSessions::default()),
        Arc::new(Connections::default()),
        registry.clone(),
        Arc::new(Metrics::default()),
    );
    Fixture {
        _dir: dir,
        login,
        stand,
        registry,
    }
}

fn client() -> Client {
    Client {
        id: 7,
        peer: "192.0.2.1:1234".parse().unwrap(),
        local: "127.0.0.1:143".parse().unwrap(),
        listener: "imap",
        id_parameters: Vec::new(),
        log: None,
    }
}

async fn attempt(f: &Fixture, user: &str, password: &str) -> Outcome {
    let creds = Credentials::password(user.as_bytes(), password.as_bytes());
    f.login.login(creds, &client()).await
}

fn failures(f: &Fixture) -> u32 {
    f.login.penalty().failures("192.0.2.1".parse().unwrap())
}

#[tokio::test]
async fn any_name_of_a_mailbox_logs_in_as_its_own_login_and_is_counted() {
    let f = fixture();
    let Outcome::LoggedIn(first) = attempt(&f, "JOHN.SMITH@example.com", "pass1").await else {
        panic!("not logged in");
    };
    assert_eq!(f.stand.seen.lock().unwrap()[0].0, "user1");
    let sessions = f.registry.list_infos();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].mailbox_key.as_str(), sessions[0].user.as_str()),
        ("main/user1", "JOHN.SMITH@example.com")
    );
    // max_connections_per_user = 1: another spelling of the same mailbox is over it.
    assert_eq!(
        attempt(&f, "jsmith", "pass1").await.name(),
        Refusal::Limit.name()
    );
    drop(first);
    assert!(f.registry.is_empty());
    assert!(matches!(
        attempt(&f, "jsmith", "pass1").await,
        Outcome::LoggedIn(_)
    ));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_names_fail_alike_and_count() {
    let f = fixture();
    assert_eq!(attempt(&f, "jsmith", "wrong").await.name(), "auth_failed");
    assert_eq!(failures(&f), 1);
    // user3 is a backend account the directory does not know: a decoy login, never its password.
    assert_eq!(attempt(&f, "user3", "pass3").await.name(), "auth_failed");
    assert_eq!(
        attempt(&f, "user1*master", "pass1").await.name(),
        "auth_failed"
    );
    assert_eq!(failures(&f), 3);
    let seen = f.stand.seen.lock().unwrap().clone();
    assert_eq!(seen[1].0, "user3");
    assert_eq!(seen[2].0, "user1_master");
    for (_, password) in &seen[1..] {
        assert!(
            password.len() == 32 && !password.starts_with("pass"),
            "{password}"
        );
    }
    // Unusable credentials never reach the backend, and count too.
    let bad = f
        .login
        .login(Credentials::password(b"", b"x"), &client())
        .await;
    assert_eq!(bad.name(), "auth_failed");
    assert_eq!(f.stand.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_disabled_mailbox_is_told_only_with_the_right_password() {
    let f = fixture();
    assert_eq!(
        attempt(&f, "jane@example.com", "wrong").await.name(),
        "auth_failed"
    );
    match attempt(&f, "jane@example.com", "pass2").await {
        Outcome::Refused(Refusal::Disabled { message }) => {
            assert_eq!(message, "IMAP4 access is disabled for this mailbox.")
        }
        other => panic!("{}", other.name()),
    }
    assert!(
        f.registry.is_empty(),
        "the refused session is not left registered"
    );
}

#[tokio::test]
async fn a_backend_that_does_not_understand_the_login_is_unavailable_without_penalty() {
    let f = fixture();
    assert_eq!(attempt(&f, "broken", "x").await.name(), "unavailable");
    assert_eq!(failures(&f), 0, "not the client's fault");
}
