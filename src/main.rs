//! The `imapgate` command: run the daemon, check a configuration, administer mailboxes and
//! sessions of a running gate.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use imapgate::admin::{self, cli, cli::Format};
use imapgate::config::{Config, LogFormat};

#[cfg(feature = "alloc-mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "alloc-jemalloc", not(feature = "alloc-mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The crate's version and the git revision it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("IMAPGATE_GIT_REV"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "imapgate",
    version = VERSION,
    about = "IMAP4 front end enforcing per-mailbox IMAP access",
    long_about = "imapgate is an IMAP4 front end: it answers clients before login, has each user's backend \
IMAP server verify the credentials, lets the session through only when the mailbox's ImapEnabled flag \
allows IMAP4, and then relays bytes. Without a command it runs the daemon in the foreground."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/imapgate/imapgate.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration, mailbox directory and certificates; exit 1 when anything is wrong.
    /// Safe while the gate runs: listener ports are not bound unless --bind.
    CheckConfig {
        /// Also bind every listener's port (fails while a gate holds them).
        #[arg(long)]
        bind: bool,
    },
    /// Ask the running gate to reload (like SIGHUP) and wait for the answer.
    Reload,
    /// Show or change a mailbox's IMAP4 access (like Get-CASMailbox / Set-CASMailbox).
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// List the open sessions of the running gate.
    Sessions {
        /// Output: a table for people, or JSON for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Every gate of the fleet's sessions ([fleet]), each with its gate's node name.
        #[arg(long)]
        fleet: bool,
    },
    /// Each backend address and its state (up, or down since a failed connect or greeting).
    Backends {
        /// Output: a table for people, or JSON for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Close the open sessions of a mailbox.
    Kick {
        /// Display name, alias, email, UPN, DOMAIN\account, GUID or backend login of the mailbox.
        #[arg(long)]
        identity: String,
        /// On every gate of the fleet ([fleet]), not only this one.
        #[arg(long)]
        fleet: bool,
    },
    /// Log in through the gate like a client, step by step with latencies (Test-ImapConnectivity).
    TestLogin(TestLoginArgs),
    /// Manage the admin center's administrators ([admin_web] users_file).
    #[command(subcommand)]
    AdminUser(AdminUserCommand),
    /// Show the administrator audit log ([admin] audit_log): every change, who made it, the outcome.
    Audit {
        /// Only the changes of this mailbox (any identity form).
        #[arg(long)]
        identity: Option<String>,
        /// Output: lines for people, or JSON for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print a shell completion script to standard output (the package installs both).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the imapgate(8) manual page (roff) to standard output.
    #[command(hide = true)]
    ManPage,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
}

#[derive(Subcommand)]
enum AdminUserCommand {
    /// Add an administrator; the password is stored as an Argon2id hash.
    Add {
        /// The sign-in name (letters, digits, . _ - @).
        name: String,
        /// recipient-management changes mailboxes and closes sessions; view-only sees everything
        /// and changes nothing.
        #[arg(long, value_enum)]
        role: admin::users::Role,
        /// Read the password from this file (first line); without it, prompt twice.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Remove an administrator (their admin center sessions end at their next request).
    Remove {
        /// The administrator's sign-in name.
        name: String,
    },
    /// List the administrators and their roles.
    List {
        /// Output: a table for people, or JSON for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(clap::Args)]
struct TestLoginArgs {
    /// The login name to use.
    #[arg(long)]
    identity: String,
    /// Read the password from this file (first line); without it, prompt on the terminal.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Sign in with the OAuth 2.0 bearer token on this file's first line instead of a password
    /// (AUTHENTICATE OAUTHBEARER, or --mechanism xoauth2).
    #[arg(long, conflicts_with = "password_file")]
    oauth2_token_file: Option<PathBuf>,
    /// The token's SASL mechanism.
    #[arg(
        long,
        value_enum,
        default_value = "oauthbearer",
        requires = "oauth2_token_file"
    )]
    mechanism: admin::probe::TokenMechanismArg,
    /// Use the implicit-TLS listener instead of STARTTLS.
    #[arg(long)]
    tls: bool,
    /// Connect here instead of the first configured listener.
    #[arg(long)]
    address: Option<std::net::SocketAddr>,
    /// Name the gate's certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// CA certificates to trust instead of the system roots.
    #[arg(long, conflicts_with = "trust_any_certificate")]
    ca: Option<PathBuf>,
    /// Do not verify the gate's certificate (Test-ImapConnectivity -TrustAnySSLCertificate).
    #[arg(long)]
    trust_any_certificate: bool,
}

#[derive(Subcommand)]
enum MailboxCommand {
    /// Turn IMAP4 on or off for one mailbox, then reload the running gate.
    Set {
        /// Display name, alias, email, UPN, DOMAIN\account or GUID.
        #[arg(long)]
        identity: String,
        /// true to enable IMAP4 for the mailbox, false to disable it (Set-CASMailbox -ImapEnabled).
        #[arg(long, action = clap::ArgAction::Set)]
        imap_enabled: bool,
        /// Create the mailbox when no entry matches (identity must be an email or an alias).
        #[arg(long)]
        create: bool,
        /// Only edit the file; put it in force later with `imapgate reload`.
        #[arg(long)]
        no_reload: bool,
    },
    /// Show one mailbox (ending with `IMAP4: Enabled|Disabled`) or a table of all.
    Get {
        /// Show this mailbox only (any identity form); without it, all mailboxes.
        #[arg(long)]
        identity: Option<String>,
        /// Only mailboxes with this setting, e.g. `imap-enabled=false`.
        #[arg(long, value_parser = parse_filter)]
        filter: Option<bool>,
        /// Output: a table (or a block for one mailbox) for people, or JSON for scripts.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn parse_filter(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "imap-enabled=true" | "imapenabled=true" => Ok(true),
        "imap-enabled=false" | "imapenabled=false" => Ok(false),
        _ => Err("expected imap-enabled=true or imap-enabled=false".into()),
    }
}

fn main() -> ExitCode {
    // With both providers compiled in, rustls needs to be told which one to use.
    #[cfg(feature = "tls-aws-lc-rs")]
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        return run_daemon(&cli.config);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Commands that need no loaded configuration.
    match command {
        Command::CheckConfig { bind } => {
            return exit(runtime.block_on(admin::check::run(&cli.config, bind)));
        }
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
            };
            return print(&admin::manual::completions(&Cli::command(), shell));
        }
        Command::ManPage => {
            return match admin::manual::page(&Cli::command()) {
                Ok(page) => print(&page),
                Err(e) => {
                    eprintln!("cannot render the manual page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::CheckConfig { .. } | Command::Completions { .. } | Command::ManPage => Ok(0),
            Command::TestLogin(a) => {
                let options = admin::probe::Options {
                    identity: a.identity,
                    password_file: a.password_file,
                    token_file: a.oauth2_token_file,
                    mechanism: a.mechanism.into(),
                    implicit_tls: a.tls,
                    address: a.address,
                    server_name: a.server_name,
                    ca: a.ca,
                    trust_any_certificate: a.trust_any_certificate,
                };
                admin::probe::test_login(&config, options).await
            }
            Command::Reload => cli::reload(&config).await,
            Command::AdminUser(AdminUserCommand::Add {
                name,
                role,
                password_file,
            }) => admin::accounts::add(&config, &name, role, password_file.as_deref()),
            Command::AdminUser(AdminUserCommand::Remove { name }) => {
                admin::accounts::remove(&config, &name)
            }
            Command::AdminUser(AdminUserCommand::List { format }) => {
                admin::accounts::list(&config, format)
            }
            Command::Audit { identity, format } => {
                admin::accounts::show(&config, identity.as_deref(), format).await
            }
            Command::Sessions { format, fleet } => cli::sessions(&config, format, fleet).await,
            Command::Kick { identity, fleet } => cli::kick(&config, &identity, fleet).await,
            Command::Backends { format } => cli::backends(&config, format).await,
            Command::Mailbox(MailboxCommand::Set {
                identity,
                imap_enabled,
                create,
                no_reload,
            }) => cli::mailbox_set(&config, &identity, imap_enabled, create, no_reload).await,
            Command::Mailbox(MailboxCommand::Get {
                identity,
                filter,
                format,
            }) => cli::mailbox_get(&config, identity.as_deref(), filter, format).await,
        }
    });
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn print(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn exit(code: i32) -> ExitCode {
    if code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_daemon(config_path: &std::path::Path) -> ExitCode {
    // The [log] and [runtime] sections come before the runtime, so the configuration is read
    // first; the gate reads it again (with everything it names) when it starts.
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config.log);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = config.runtime.workers(cores);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all();
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(imapgate::server::run_daemon(config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: text or JSON, level from `RUST_LOG` or `[log] level`. Under systemd (the
/// journal adds its own), without timestamps; colours only on a terminal.
fn init_logging(log: &imapgate::config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journal)
        .with_env_filter(filter);
    match (log.format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}
