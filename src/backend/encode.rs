//! How the gate writes a client's credentials into commands for the backend.
//!
//! A command is a list of fragments; between two fragments the backend must send a `+`
//! continuation (a synchronizing literal, or the second step of AUTHENTICATE). Values are written
//! as quoted strings when that is unambiguous, as literals otherwise, so no byte a client chose can
//! end a command line early. Credentials were checked for NUL, CR and LF before they get here.

use base64::Engine;

use crate::credentials::Credentials;

/// What the backend advertised that changes how the login is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginCaps {
    pub auth_plain: bool,
    pub sasl_ir: bool,
    pub literal_plus: bool,
    pub login_disabled: bool,
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
                _ => {}
            }
        }
        c
    }
}

/// Fragments of the login command for `tag`, or `None` when the backend offers no way to log in.
/// Prefers `AUTHENTICATE PLAIN` (with SASL-IR: one round trip, base64 carries any byte), then LOGIN.
pub fn login_command(tag: &str, creds: &Credentials, caps: LoginCaps) -> Option<Vec<Vec<u8>>> {
    if caps.auth_plain {
        let mut message = Vec::with_capacity(creds.user.len() + creds.password.expose().len() + 2);
        message.push(0);
        message.extend_from_slice(creds.user.as_bytes());
        message.push(0);
        message.extend_from_slice(creds.password.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&message);
        message.fill(0);
        return Some(if caps.sasl_ir {
            vec![format!("{tag} AUTHENTICATE PLAIN {encoded}\r\n").into_bytes()]
        } else {
            vec![
                format!("{tag} AUTHENTICATE PLAIN\r\n").into_bytes(),
                format!("{encoded}\r\n").into_bytes(),
            ]
        });
    }
    if caps.login_disabled {
        return None;
    }
    let mut fragments = vec![format!("{tag} LOGIN ").into_bytes()];
    push_astring(&mut fragments, creds.user.as_bytes(), caps.literal_plus);
    fragments.last_mut()?.push(b' ');
    push_astring(&mut fragments, creds.password.expose(), caps.literal_plus);
    fragments.last_mut()?.extend_from_slice(b"\r\n");
    Some(fragments)
}

/// True when `value` can be sent as a quoted string: 7-bit text without `"`, `\` or controls.
pub fn quotable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn push_astring(fragments: &mut Vec<Vec<u8>>, value: &[u8], literal_plus: bool) {
    let Some(current) = fragments.last_mut() else {
        return;
    };
    if quotable(value) {
        current.push(b'"');
        current.extend_from_slice(value);
        current.push(b'"');
    } else if literal_plus {
        current.extend_from_slice(format!("{{{}+}}\r\n", value.len()).as_bytes());
        current.extend_from_slice(value);
    } else {
        current.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
        fragments.push(value.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials::new(user.as_bytes(), pass.as_bytes()).unwrap()
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
        assert_eq!(f.len(), 2);
        let disabled = LoginCaps::from_capabilities(["LOGINDISABLED"]);
        assert!(login_command("g1", &creds("ann", "pw"), disabled).is_none());
    }
}
