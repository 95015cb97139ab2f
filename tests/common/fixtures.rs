//! Fixtures: the mailbox files (directories) the tests share, and gates in front of a scriptable
//! fake backend in one call, so a test opens with what it needs and goes on with what it checks.
//!
//! Names outside a gate's directory are refused (`unknown_names = "refuse"`), so every name a
//! test logs in with successfully is in the directory it starts with. The fake backend's users
//! are `user1`/`pass1`, `user2`/`pass2`, `user3`/`pass3`, `utf8`/`pässwörd✓` and
//! `tricky`/`p"a\ss {3}` (see [`Script::default`]).

use std::path::PathBuf;

use super::fake::{FakeBackend, Script};
use super::{GateConfig, TestGate};

/// The fake backend's users as mailboxes of their own (backend login = alias), all enabled: the
/// directory of [`GateConfig::new`].
pub const FAKE_USERS: &str = r#"# The fake backend's users.
[[mailbox]]
alias = "user1"

[[mailbox]]
alias = "user2"

[[mailbox]]
alias = "user3"

[[mailbox]]
alias = "utf8"

[[mailbox]]
alias = "tricky"
"#;

/// John Smith, enabled, under every identity form (`jsmith`, `john.smith@example.com`,
/// `CORP\jsmith`, and his backend login `user1`), and Jane Doe (`jane@example.com`, backend
/// login `user2`), disabled. Nobody else: `user3`, `utf8` and `tricky` exist on the fake backend
/// but not here.
pub const JOHN_AND_JANE: &str = r#"
[defaults]
imap_enabled = true

[[mailbox]]
name = "John Smith"
alias = "jsmith"
email = "john.smith@example.com"
domain_account = "CORP\\jsmith"
login = "user1"

[[mailbox]]
name = "Jane Doe"
email = "jane@example.com"
login = "user2"
imap_enabled = false
"#;

/// The Contoso directory the administration tests edit: two mailboxes named John Smith (an
/// ambiguous name; `jsmith`/`john.smith@example.com` is user1, `john.smith2@example.com` is
/// user3) and Jane Doe (`jane@example.com`, user2), all enabled. Its comments must survive every
/// edit, and tests replace its exact text (`imap_enabled = true   # flipped`, the line numbers of
/// Jane Doe's entry), so change it only together with them.
pub const CONTOSO: &str = r#"# Contoso directory: keep this comment
[defaults]
imap_enabled = true

[[mailbox]]
name = "John Smith"   # the boss
email = "john.smith@example.com"
alias = "jsmith"
login = "user1"
imap_enabled = true   # flipped by the tests

[[mailbox]]
name = "John Smith"
email = "john.smith2@example.com"
login = "user3"

[[mailbox]]
name = "Jane Doe"
email = "jane@example.com"
login = "user2"
"#;

/// A directory of one mailbox, John Smith (`john@example.com`, backend login user1), enabled or
/// not, with an operator's comment: what the daemon tests reload.
pub fn john_alone(enabled: bool) -> String {
    format!("# operators' comment\n[[mailbox]]\nname = \"John Smith\"\nemail = \"john@example.com\"\nlogin = \"user1\"\nimap_enabled = {enabled}\n")
}

/// The demo directory of the Dovecot interop tests, whose gate has the backends `starttls` (the
/// default), `imaps` and `plain`: John Smith (user1, enabled or not), Jane Doe (user2, disabled),
/// user3 (also `EXAMPLE\user3`) behind `imaps`, and utf8 behind `plain`.
pub fn dovecot_demo(user1_enabled: bool) -> String {
    format!(
        r#"
# Demo directory for the interop tests.
[defaults]
imap_enabled = true
backend = "starttls"

[[mailbox]]
name = "John Smith"
alias = "jsmith"
email = "john.smith@example.com"
login = "user1"
imap_enabled = {user1_enabled}

[[mailbox]]
name = "Jane Doe"
email = "jane.doe@example.com"
login = "user2"
imap_enabled = false

[[mailbox]]
alias = "user3"
domain_account = "EXAMPLE\\user3"
login = "user3"
backend = "imaps"

[[mailbox]]
alias = "utf8"
backend = "plain"
"#
    )
}

/// A fake backend playing `script`, and a gate started in front of it (the default
/// configuration) with `mailboxes` as its directory.
pub async fn gate_with_fake(script: Script, mailboxes: &str) -> (FakeBackend, TestGate) {
    gate_with_fake_configured(script, mailboxes, |config| config).await
}

/// [`gate_with_fake`], with the configuration adjusted by `configure` (`[imap4]` lines, sections)
/// before the gate starts.
pub async fn gate_with_fake_configured(
    script: Script,
    mailboxes: &str,
    configure: impl FnOnce(GateConfig) -> GateConfig,
) -> (FakeBackend, TestGate) {
    let fake = FakeBackend::start(script).await;
    let gate = gate_for(&fake, mailboxes, configure).await;
    (fake, gate)
}

/// A default fake backend, and a gate in front of it with the fake's users and these `[imap4]`
/// settings (each `key = value` replaces the default's line for `key`).
pub async fn gate_with_settings(imap4: &[impl AsRef<str>]) -> (FakeBackend, TestGate) {
    gate_with_fake_configured(Script::default(), FAKE_USERS, |config| {
        imap4
            .iter()
            .fold(config, |config, line| config.imap4(line.as_ref()))
    })
    .await
}

/// Another gate in front of a running fake backend.
pub async fn gate_for(
    fake: &FakeBackend,
    mailboxes: &str,
    configure: impl FnOnce(GateConfig) -> GateConfig,
) -> TestGate {
    configure(GateConfig::new(&fake.address()).mailboxes(mailboxes))
        .start()
        .await
}

/// A fake backend playing `script`, and the files of a gate in front of it, written for the
/// `imapgate` binary (which the test starts): (fake, directory, configuration path).
pub async fn files_with_fake(
    script: Script,
    mailboxes: &str,
    configure: impl FnOnce(GateConfig) -> GateConfig,
) -> (FakeBackend, tempfile::TempDir, PathBuf) {
    let fake = FakeBackend::start(script).await;
    let (dir, config) = configure(GateConfig::new(&fake.address()).mailboxes(mailboxes)).write();
    (fake, dir, config)
}
