//! The commands the dialogue answers itself before login, and the answer to a login.

use std::time::Instant;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};

use super::{
    token_credentials, Answer, Dialogue, Mechanism, Record, Sasl, State, LOGIN_PASSWORD_PROMPT,
    LOGIN_USER_PROMPT,
};
use crate::credentials::{CredentialError, Credentials, TokenMechanism};
use crate::session::input;

impl Dialogue {
    /// Answers one command.
    pub(super) fn command(&mut self, command: Command<'static>, consumed: usize) {
        let (name, parameters) = describe(&command);
        self.current = Some((
            Record {
                command: name,
                parameters,
                user: self.user.clone(),
                request: consumed,
                reply: 0,
                started: Instant::now(),
                outcome: "",
            },
            self.queued,
        ));
        let tag = command.tag.inner().to_string();
        match command.body {
            CommandBody::Capability => {
                self.bad_commands = 0;
                let reply = format!(
                    "* CAPABILITY {}\r\n{tag} OK CAPABILITY completed.\r\n",
                    self.capabilities()
                );
                self.queue(reply.as_bytes());
            }
            CommandBody::Noop => {
                self.bad_commands = 0;
                self.queue(format!("{tag} OK NOOP completed.\r\n").as_bytes());
            }
            CommandBody::Logout => {
                self.queue(
                    format!("* BYE Logging out.\r\n{tag} OK LOGOUT completed.\r\n").as_bytes(),
                );
                self.finish_record();
                self.state = State::Closing;
                return;
            }
            CommandBody::StartTLS => {
                self.bad_commands = 0;
                if self.settings.starttls && !self.tls {
                    self.queue(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes());
                    // Plaintext pipelined behind STARTTLS is never run inside TLS.
                    self.discarded_before_tls = self.buf.len();
                    self.buf.clear();
                    self.literal_until = None;
                    self.finish_record();
                    self.state = State::StartTls;
                    return;
                }
                self.queue(format!("{tag} BAD STARTTLS is not available here.\r\n").as_bytes());
            }
            CommandBody::Id { parameters } => {
                self.bad_commands = 0;
                self.client_id = input::id_parameters(parameters.unwrap_or_default());
                let reply = format!(
                    "* ID (\"name\" \"imapgate\" \"version\" \"{}\")\r\n{tag} OK ID completed.\r\n",
                    env!("CARGO_PKG_VERSION")
                );
                self.queue(reply.as_bytes());
            }
            CommandBody::Login { username, password } => {
                self.bad_commands = 0;
                if !self.login_allowed() {
                    return self.privacy_required(&tag);
                }
                let credentials =
                    Credentials::password(username.as_ref(), password.declassify().as_ref());
                return self.start_login(tag, Mechanism::Login, credentials);
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.bad_commands = 0;
                let token = match mechanism {
                    AuthMechanism::OAuthBearer => Some(TokenMechanism::OAuthBearer),
                    AuthMechanism::XOAuth2 => Some(TokenMechanism::XOAuth2),
                    _ => None,
                }
                .filter(|m| self.settings.token_mechanisms.contains(m));
                let known = matches!(mechanism, AuthMechanism::Plain | AuthMechanism::Login)
                    || token.is_some();
                if !known {
                    self.queue(
                        format!("{tag} NO [CANNOT] Unsupported authentication mechanism.\r\n")
                            .as_bytes(),
                    );
                } else if !self.authenticate_allowed() {
                    return self.privacy_required(&tag);
                } else {
                    let ir = initial_response.map(|ir| ir.declassify().to_vec());
                    if let Some(mechanism) = token {
                        match ir {
                            Some(message) => {
                                let credentials = token_credentials(mechanism, &message);
                                return self.start_login(
                                    tag,
                                    Mechanism::Token(mechanism),
                                    credentials,
                                );
                            }
                            None => {
                                self.queue(b"+ \r\n");
                                self.sasl = Some(Sasl::Token { tag, mechanism });
                                return;
                            }
                        }
                    }
                    match (mechanism, ir) {
                        (AuthMechanism::Plain, Some(ir)) => {
                            let credentials = Credentials::from_sasl_plain(&ir);
                            return self.start_login(tag, Mechanism::Authenticate, credentials);
                        }
                        (AuthMechanism::Plain, None) => {
                            self.queue(b"+ \r\n");
                            self.sasl = Some(Sasl::Plain { tag });
                        }
                        // LOGIN: the initial response (SASL-IR) is the user name.
                        (_, Some(user)) => {
                            self.queue(LOGIN_PASSWORD_PROMPT);
                            self.sasl = Some(Sasl::LoginPassword { tag, user });
                        }
                        (_, None) => {
                            self.queue(LOGIN_USER_PROMPT);
                            self.sasl = Some(Sasl::LoginUser { tag });
                        }
                    }
                    return;
                }
            }
            _ => {
                self.bad(format!("{tag} BAD Command is not valid before login.\r\n").as_bytes());
                return;
            }
        }
        self.finish_record();
    }

    pub(super) fn start_login(
        &mut self,
        tag: String,
        mechanism: Mechanism,
        credentials: Result<Credentials, CredentialError>,
    ) {
        if let Ok(c) = &credentials {
            self.user = c.user().to_string();
            if let Some((record, _)) = self.current.as_mut() {
                record.user = self.user.clone();
            }
        }
        self.login = Some((tag, mechanism, credentials));
        self.state = State::LoggingIn;
    }

    /// The login's answer.
    pub fn answer(&mut self, answer: Answer) {
        let Some((tag, mechanism, _)) = self.login.take() else {
            return;
        };
        self.state = State::Open;
        if let Some((record, _)) = self.current.as_mut() {
            record.outcome = answer.outcome();
        }
        match answer {
            Answer::LoggedIn { prelude, ok_text } => {
                self.queue(&prelude);
                self.queue(format!("{tag} OK {ok_text}\r\n").as_bytes());
                self.finish_record();
                self.state = State::LoggedIn;
            }
            Answer::AuthFailed => match mechanism {
                Mechanism::Token(m) => self.token_refused(tag, m),
                _ => self.refused(&tag, mechanism.failed()),
            },
            Answer::Disabled { message } => {
                self.queue(format!("{tag} NO [CONTACTADMIN] {message}\r\n").as_bytes());
                self.finish_record();
            }
            Answer::Limit => {
                self.queue(
                    format!("{tag} NO [LIMIT] Too many connections for this mailbox.\r\n")
                        .as_bytes(),
                );
                self.finish_record();
            }
            Answer::Unavailable => {
                self.queue(
                    format!(
                        "{tag} NO [UNAVAILABLE] The mailbox server is not available; try again later.\r\n"
                    )
                    .as_bytes(),
                );
                self.finish_record();
            }
        }
    }

    fn privacy_required(&mut self, tag: &str) {
        self.queue(
            format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first.\r\n")
                .as_bytes(),
        );
        if let Some((record, _)) = self.current.as_mut() {
            record.outcome = "privacy_required";
        }
        self.finish_record();
    }
}

/// A command's name and its protocol log parameters: never a password or SASL message.
fn describe(command: &Command<'_>) -> (&'static str, String) {
    let parameters = match &command.body {
        CommandBody::Login { username, .. } => {
            format!("{} *****", String::from_utf8_lossy(username.as_ref()))
        }
        CommandBody::Authenticate { mechanism, .. } => mechanism.to_string(),
        _ => String::new(),
    };
    (command.body.name(), parameters)
}
