//! The commands the gate writes as a client, encoded by imap-codec: the login on a user's
//! behalf (LOGIN or AUTHENTICATE PLAIN), ID, and the argument-less ones.
//!
//! A command is a list of fragments; between two fragments the server must send a `+`
//! continuation (a synchronizing literal, or the second step of AUTHENTICATE). Values are written
//! as quoted strings when that is unambiguous, as literals otherwise, so no byte a client chose can
//! end a command line early. Credentials were checked for NUL, CR and LF before they get here.

use std::borrow::Cow;

use imap_codec::encode::{Encoded, Encoder, Fragment};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, IString, Literal, LiteralMode, NString, Quoted, Tag};
use imap_codec::imap_types::secret::Secret;
use imap_codec::{AuthenticateDataCodec, CommandCodec};

use crate::credentials::{Credentials, TokenMechanism};
pub use crate::wire::quotable;

/// What the server advertised that changes how the login is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginCaps {
    pub auth_plain: bool,
    pub sasl_ir: bool,
    pub literal_plus: bool,
    pub login_disabled: bool,
    pub oauthbearer: bool,
    pub xoauth2: bool,
}

impl LoginCaps {
    pub fn from_capabilities<'a>(caps: impl IntoIterator<Item = &'a str>) -> LoginCaps {
        let mut c = LoginCaps::default();
        for cap in caps {
            match cap.to_ascii_uppercase().as_str() {
                "AUTH=PLAIN" => c.auth_plain = true,
                "SASL-IR" => c.sasl_ir = true,
                "LITERAL+" => c.literal_plus = true,
                "LOGINDISABLED" => c.login_disabled = true,
                "AUTH=OAUTHBEARER" => c.oauthbearer = true,
                "AUTH=XOAUTH2" => c.xoauth2 = true,
                _ => {}
            }
        }
        c
    }
}

/// The gate's fragments from imap-codec's: a new fragment starts with the data of each
/// synchronizing literal (the server's `+` comes before it); everything else joins the current
/// one.
fn fragments(encoded: Encoded) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for fragment in encoded {
        match fragment {
            Fragment::Literal {
                data,
                mode: LiteralMode::Sync,
            } => out.push(data),
            Fragment::Line { data } | Fragment::Literal { data, .. } => {
                if let Some(current) = out.last_mut() {
                    current.extend_from_slice(&data);
                }
            }
        }
    }
    out
}

fn encode(tag: Tag<'_>, body: CommandBody<'_>) -> Option<Vec<Vec<u8>>> {
    let command = Command::new(tag, body).ok()?;
    Some(fragments(CommandCodec::default().encode(&command)))
}

/// A string argument: quoted when that is unambiguous, a literal otherwise (non-synchronizing
/// when the server offers LITERAL+).
fn astring(value: &[u8], literal_plus: bool) -> Option<AString<'_>> {
    if quotable(value) {
        let text = std::str::from_utf8(value).ok()?;
        return Some(AString::String(IString::Quoted(
            Quoted::try_from(text).ok()?,
        )));
    }
    let literal = Literal::try_from(value).ok()?;
    let literal = if literal_plus {
        literal.into_non_sync()
    } else {
        literal
    };
    Some(AString::String(IString::Literal(literal)))
}

/// Fragments of the login command for `tag`, or `None` when the server offers no way to log in.
/// Prefers `AUTHENTICATE PLAIN` (with SASL-IR: one round trip, base64 carries any byte), then LOGIN.
pub fn login_command(tag: &str, creds: &Credentials, caps: LoginCaps) -> Option<Vec<Vec<u8>>> {
    let tag = Tag::try_from(tag).ok()?;
    let (user, password) = match creds {
        Credentials::Password { user, password } => (user, password),
        Credentials::Token { mechanism, .. } => {
            let (offered, mechanism) = match mechanism {
                TokenMechanism::OAuthBearer => (caps.oauthbearer, AuthMechanism::OAuthBearer),
                TokenMechanism::XOAuth2 => (caps.xoauth2, AuthMechanism::XOAuth2),
            };
            if !offered {
                return None;
            }
            let mut message = creds.token_message()?;
            let fragments = authenticate(tag, mechanism, &message, caps.sasl_ir);
            message.fill(0);
            return fragments;
        }
    };
    if caps.auth_plain {
        let mut message = Vec::with_capacity(user.len() + password.expose().len() + 2);
        message.push(0);
        message.extend_from_slice(user.as_bytes());
        message.push(0);
        message.extend_from_slice(password.expose());
        let fragments = if caps.sasl_ir {
            let body = CommandBody::Authenticate {
                mechanism: AuthMechanism::Plain,
                initial_response: Some(Secret::new(Cow::Borrowed(message.as_slice()))),
            };
            encode(tag, body)
        } else {
            let body = CommandBody::Authenticate {
                mechanism: AuthMechanism::Plain,
                initial_response: None,
            };
            let response =
                AuthenticateData::Continue(Secret::new(Cow::Borrowed(message.as_slice())));
            let mut first = encode(tag, body)?;
            first.push(AuthenticateDataCodec::default().encode(&response).dump());
            Some(first)
        };
        message.fill(0);
        return fragments;
    }
    if caps.login_disabled {
        return None;
    }
    let body = CommandBody::Login {
        username: astring(user.as_bytes(), caps.literal_plus)?,
        password: Secret::new(astring(password.expose(), caps.literal_plus)?),
    };
    encode(tag, body)
}

/// `AUTHENTICATE mechanism` with `message`: as the initial response (SASL-IR) or after the `+`.
fn authenticate(
    tag: Tag<'_>,
    mechanism: AuthMechanism<'static>,
    message: &[u8],
    sasl_ir: bool,
) -> Option<Vec<Vec<u8>>> {
    if sasl_ir {
        let body = CommandBody::Authenticate {
            mechanism,
            initial_response: Some(Secret::new(Cow::Borrowed(message))),
        };
        return encode(tag, body);
    }
    let body = CommandBody::Authenticate {
        mechanism,
        initial_response: None,
    };
    let response = AuthenticateData::Continue(Secret::new(Cow::Borrowed(message)));
    let mut first = encode(tag, body)?;
    first.push(AuthenticateDataCodec::default().encode(&response).dump());
    Some(first)
}

/// One command line without arguments (`CAPABILITY`, `STARTTLS`, `LOGOUT`, `NOOP`).
pub fn simple(tag: &str, name: &str) -> Vec<u8> {
    let body = match name {
        "STARTTLS" => Some(CommandBody::StartTLS),
        "LOGOUT" => Some(CommandBody::Logout),
        "NOOP" => Some(CommandBody::Noop),
        "CAPABILITY" => Some(CommandBody::Capability),
        _ => None,
    };
    let encoded = Tag::try_from(tag)
        .ok()
        .zip(body)
        .and_then(|(tag, body)| encode(tag, body));
    match encoded {
        Some(fragments) => fragments.concat(),
        // Not one of the above, or not a tag: what is asked for, as written.
        None => format!("{tag} {name}\r\n").into_bytes(),
    }
}

/// `SELECT mailbox` (for `imapgate test-login`).
pub fn select(tag: &str, mailbox: &str) -> Option<Vec<u8>> {
    let body = CommandBody::select(mailbox).ok()?;
    encode(Tag::try_from(tag).ok()?, body).map(|f| f.concat())
}

/// `ID (...)` with the quotable pairs among `params` (RFC 2971: at most 30).
pub fn id(tag: &str, params: &[(String, String)]) -> Option<Vec<u8>> {
    fn quoted(s: &str) -> Option<IString<'_>> {
        Quoted::try_from(s).ok().map(IString::Quoted)
    }
    let parameters: Vec<(IString<'_>, NString<'_>)> = params
        .iter()
        .filter(|(k, v)| quotable(k.as_bytes()) && quotable(v.as_bytes()))
        .take(30)
        .filter_map(|(k, v)| Some((quoted(k)?, NString(Some(quoted(v)?)))))
        .collect();
    let body = CommandBody::Id {
        parameters: Some(parameters),
    };
    encode(Tag::try_from(tag).ok()?, body).map(|f| f.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials::password(user.as_bytes(), pass.as_bytes()).unwrap()
    }

    #[test]
    fn plain_ascii_is_quoted() {
        let caps = LoginCaps::default();
        let f = login_command("g1", &creds("ann", "pw 1"), caps).unwrap();
        assert_eq!(f, vec![b"g1 LOGIN \"ann\" \"pw 1\"\r\n".to_vec()]);
    }

    #[test]
    fn quotes_backslashes_and_utf8_become_literals() {
        let caps = LoginCaps::default();
        let f = login_command("g1", &creds("ann", "p\"w\u{e9}"), caps).unwrap();
        assert_eq!(
            f,
            vec![
                b"g1 LOGIN \"ann\" {5}\r\n".to_vec(),
                "p\"w\u{e9}\r\n".as_bytes().to_vec()
            ]
        );
        let plus = LoginCaps {
            literal_plus: true,
            ..LoginCaps::default()
        };
        let f = login_command("g1", &creds("a\\b", "x"), plus).unwrap();
        assert_eq!(f, vec![b"g1 LOGIN {3+}\r\na\\b \"x\"\r\n".to_vec()]);
    }

    #[test]
    fn auth_plain_preferred_with_sasl_ir() {
        let caps = LoginCaps::from_capabilities(["IMAP4rev1", "auth=plain", "SASL-IR"]);
        let f = login_command("g1", &creds("ann", "pw"), caps).unwrap();
        assert_eq!(f, vec![b"g1 AUTHENTICATE PLAIN AGFubgBwdw==\r\n".to_vec()]);
        let no_ir = LoginCaps::from_capabilities(["AUTH=PLAIN"]);
        let f = login_command("g1", &creds("ann", "pw"), no_ir).unwrap();
        assert_eq!(
            f,
            vec![
                b"g1 AUTHENTICATE PLAIN\r\n".to_vec(),
                b"AGFubgBwdw==\r\n".to_vec()
            ]
        );
        let disabled = LoginCaps::from_capabilities(["LOGINDISABLED"]);
        assert!(login_command("g1", &creds("ann", "pw"), disabled).is_none());
    }

    #[test]
    fn other_commands() {
        assert_eq!(simple("ig1", "CAPABILITY"), b"ig1 CAPABILITY\r\n");
        assert_eq!(simple("ig2", "STARTTLS"), b"ig2 STARTTLS\r\n");
        assert_eq!(select("t4", "INBOX").unwrap(), b"t4 SELECT INBOX\r\n");
        let params = [
            ("name".to_string(), "Thunderbird".to_string()),
            ("bad\"key".to_string(), "x".to_string()),
            ("x-originating-ip".to_string(), "192.0.2.1".to_string()),
        ];
        assert_eq!(
            id("ig3", &params).unwrap(),
            b"ig3 ID (\"name\" \"Thunderbird\" \"x-originating-ip\" \"192.0.2.1\")\r\n"
        );
    }
}
