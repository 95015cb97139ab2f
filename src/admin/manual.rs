//! The `imapgate(8)` manual page and shell completions, generated from the command-line
//! definition itself (so they cannot drift from it): the top of the page by clap_mangen, then
//! every subcommand with its options, then the files, signals and exit codes.

use std::fmt::Write as _;

/// The manual page (roff) for `cmd`, the `imapgate` command.
pub fn page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!(
            "imapgate {}",
            cmd.get_version().unwrap_or_default()
        ));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut text = String::from(".SH COMMANDS\n");
    for sub in visible(cmd) {
        command(&mut text, sub, "imapgate");
    }
    text.push_str(FIXED);
    out.extend_from_slice(text.as_bytes());
    Ok(out)
}

/// A completion script for `shell` ("bash" or "zsh").
pub fn completions(cmd: &clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = cmd.clone();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "imapgate", &mut out);
    out
}

fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
}

/// One subcommand: its synopsis, what it does, its options; then its own subcommands.
fn command(text: &mut String, cmd: &clap::Command, parent: &str) {
    let path = format!("{parent} {}", cmd.get_name());
    let mut synopsis = path.clone();
    for arg in cmd.get_arguments().filter(|a| a.is_positional()) {
        let _ = write!(synopsis, " {}", value_names(arg));
    }
    if cmd
        .get_arguments()
        .any(|a| !a.is_positional() && !a.is_hide_set())
    {
        synopsis.push_str(" [OPTIONS]");
    }
    if cmd.has_subcommands() {
        synopsis.push_str(" COMMAND");
    }
    let _ = writeln!(text, ".SS \"{}\"", escape(&synopsis).replace('"', "\\(dq"));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(text, "{}", escape(&about.to_string()));
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || arg.is_global_set() {
            continue;
        }
        let mut head = String::new();
        if let Some(short) = arg.get_short() {
            let _ = write!(head, "\\fB\\-{short}\\fR, ");
        }
        if let Some(long) = arg.get_long() {
            let _ = write!(head, "\\fB\\-\\-{}\\fR", escape(long));
        }
        if arg.get_action().takes_values() {
            let space = if head.is_empty() { "" } else { " " };
            let _ = write!(head, "{space}\\fI{}\\fR", escape(&value_names(arg)));
        }
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && !arg.is_positional() {
            let _ = write!(help, " [default: {}]", defaults.join(", "));
        }
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !possible.is_empty() && arg.get_action().takes_values() {
            let _ = write!(help, " [possible values: {}]", possible.join(", "));
        }
        let _ = writeln!(text, ".TP\n{head}\n{}", escape(help.trim()));
    }
    for sub in visible(cmd) {
        command(text, sub, &path);
    }
}

fn value_names(arg: &clap::Arg) -> String {
    match arg.get_value_names() {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        _ => arg.get_id().as_str().to_uppercase(),
    }
}

/// Text for roff: backslashes and hyphens escaped, and no line may start a request.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the command-line definition does not say.
const FIXED: &str = r#".SH FILES
.TP
\fI/etc/imapgate/imapgate.toml\fR
The configuration (\fB\-\-config\fR). Relative paths in it resolve against its directory. Mode 0640, owner root, group imapgate.
.TP
\fI/etc/imapgate/mailboxes.toml\fR
The mailbox directory ([directory] mailboxes): each mailbox's identities, backend and IMAP4 flag; edited by \fBimapgate mailbox set\fR.
.TP
\fI/etc/imapgate/tls/\fR
The certificate and private key the production configuration names (fullchain.pem, privkey.pem; the key readable by the imapgate group only).
.TP
\fI/run/imapgate/control.sock\fR
The control socket ([admin] control_socket) that reload, mailbox, sessions, kick and backends use.
.TP
\fI/var/log/imapgate/\fR
The protocol log and the administrator audit log, when configured.
.TP
\fI/lib/systemd/system/imapgate.service\fR
The systemd unit: \fBsystemctl reload imapgate\fR is the documented restart of the IMAP4 services.
.TP
\fI/usr/share/doc/imapgate/README.md\fR
The full documentation.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload: the configuration, the mailbox directory and the certificate are read again and swapped in only when all are valid; the policy cache is emptied and open sessions of newly disabled mailboxes are closed. A refused reload leaves the gate on its previous configuration.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, let relayed sessions finish for [imap4] shutdown_grace, then close the rest. A second signal ends the grace at once.
.SH "EXIT STATUS"
.TP
\fB0\fR
Success (for \fBcheck\-config\fR: the configuration is valid, warnings aside; for the daemon: a clean shutdown).
.TP
\fB1\fR
Failure: a configuration that cannot be used (the first problem is named with its file and key or line), a refused reload, an unknown identity, a failed login in \fBtest\-login\fR, a gate that cannot be reached.
.TP
\fB2\fR
Wrong usage: an unknown command or option, or a missing argument.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBdovecot\fR(1), \fBhaproxy\fR(1)
"#;
