//! Credentials as the client gave them: checked once, then only ever encoded towards a backend.
//!
//! [`Credentials`] is an enum of the kinds of proof a client can give (a password today; a
//! bearer token for OAUTHBEARER/XOAUTH2 next): the login path, the backend and its encoder take
//! the enum, never a password type. [`Secret`] has no `Display`, its `Debug` prints a fixed
//! placeholder in every build, and its bytes are wiped on drop, so no log line at any level can
//! carry it by accident.

use std::fmt;

/// A password or token: bytes that are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// A password nobody knows (32 hex digits from the system's random source), for a login
    /// that must fail at the backend.
    pub fn random() -> Secret {
        let mut bytes = [0u8; 16];
        // Without randomness the time of day still makes a password nobody has.
        if getrandom::getrandom(&mut bytes).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes = now.to_le_bytes();
        }
        Secret(
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        )
    }

    /// The bytes, for encoding towards the backend only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile so the compiler cannot drop the wipe of memory about to be freed.
            // SAFETY: `b` is a valid, aligned, exclusive reference into our own buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Why a user name or password is refused before anything is sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("empty user name")]
    EmptyUser,
    #[error("user name longer than {MAX_USER} bytes")]
    UserTooLong,
    #[error("user name or password is not UTF-8")]
    NotUtf8,
    #[error("user name or password contains NUL, CR or LF")]
    ForbiddenByte,
    #[error("malformed SASL PLAIN message")]
    MalformedPlain,
    #[error("authorization identity differs from the authentication identity")]
    AuthzidMismatch,
    #[error("malformed OAUTHBEARER or XOAUTH2 message")]
    MalformedToken,
}

/// The SASL mechanism that carries a bearer token (OAuth 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMechanism {
    /// RFC 7628.
    OAuthBearer,
    /// The older form most clients still speak.
    XOAuth2,
}

impl TokenMechanism {
    pub fn name(self) -> &'static str {
        match self {
            TokenMechanism::OAuthBearer => "OAUTHBEARER",
            TokenMechanism::XOAuth2 => "XOAUTH2",
        }
    }
}

/// Longest user name accepted: longer ones are no one's, and would only cost memory and logs.
pub const MAX_USER: usize = 256;

/// What a client proves its identity with, checked: user names are UTF-8 without control
/// characters, passwords UTF-8 without NUL, CR or LF. Anything else could split a command line
/// on the backend.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A user name and password (LOGIN, AUTHENTICATE PLAIN and LOGIN).
    Password { user: String, password: Secret },
    /// A bearer token and the user it claims to be for (OAUTHBEARER, XOAUTH2): only the token
    /// proves it, where it is checked (the backend, or the introspection endpoint).
    Token {
        user: String,
        token: Secret,
        mechanism: TokenMechanism,
    },
}

impl Credentials {
    /// A user name and password, checked.
    pub fn password(user: &[u8], password: &[u8]) -> Result<Credentials, CredentialError> {
        let user = check_user(user)?;
        if password.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(CredentialError::ForbiddenByte);
        }
        std::str::from_utf8(password).map_err(|_| CredentialError::NotUtf8)?;
        Ok(Credentials::Password {
            user,
            password: Secret::new(password.to_vec()),
        })
    }

    /// Decodes a SASL PLAIN message (RFC 4616): `authzid NUL authcid NUL passwd`. An authorization
    /// identity is accepted only when empty or equal to the authentication identity.
    pub fn from_sasl_plain(message: &[u8]) -> Result<Credentials, CredentialError> {
        let mut parts = message.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(passwd)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CredentialError::MalformedPlain);
        };
        if !authzid.is_empty() && authzid != authcid {
            return Err(CredentialError::AuthzidMismatch);
        }
        Credentials::password(authcid, passwd)
    }

    /// Decodes an OAUTHBEARER message (RFC 7628): `n,a=USER,` then `^Aauth=Bearer TOKEN^A^A`
    /// (other key=value pairs, such as host and port, are ignored). Without `a=` the user is
    /// empty (refused unless the token itself names the user).
    pub fn from_oauthbearer(message: &[u8]) -> Result<Credentials, CredentialError> {
        let bad = CredentialError::MalformedToken;
        let text = std::str::from_utf8(message).map_err(|_| bad)?;
        let (gs2, rest) = text.split_once('\u{1}').ok_or(bad)?;
        let mut fields = gs2.split(',');
        let flag = fields.next().ok_or(bad)?;
        if !(flag == "n" || flag == "y" || flag.starts_with("p=")) {
            return Err(bad);
        }
        let authzid = fields.next().ok_or(bad)?;
        if fields.next() != Some("") || fields.next().is_some() {
            return Err(bad);
        }
        let user = match authzid.strip_prefix("a=") {
            Some(name) => unescape_saslname(name).ok_or(bad)?,
            None if authzid.is_empty() => String::new(),
            None => return Err(bad),
        };
        let token = bearer(rest).ok_or(bad)?;
        Credentials::token(&user, token, TokenMechanism::OAuthBearer)
    }

    /// Decodes an XOAUTH2 message: `user=USER^Aauth=Bearer TOKEN^A^A`.
    pub fn from_xoauth2(message: &[u8]) -> Result<Credentials, CredentialError> {
        let bad = CredentialError::MalformedToken;
        let text = std::str::from_utf8(message).map_err(|_| bad)?;
        let (first, rest) = text.split_once('\u{1}').ok_or(bad)?;
        let user = first.strip_prefix("user=").ok_or(bad)?;
        let token = bearer(rest).ok_or(bad)?;
        Credentials::token(user, token, TokenMechanism::XOAuth2)
    }

    /// A bearer token for `user` (`imapgate test-login --oauth2-token-file`), checked like one
    /// from a client.
    pub fn bearer(
        user: &str,
        token: &[u8],
        mechanism: TokenMechanism,
    ) -> Result<Credentials, CredentialError> {
        let token = std::str::from_utf8(token).map_err(|_| CredentialError::MalformedToken)?;
        let mut fields = String::from("auth=Bearer ");
        fields.push_str(token);
        fields.push_str("\u{1}\u{1}");
        let token = bearer(&fields).ok_or(CredentialError::MalformedToken)?;
        Credentials::token(user, token, mechanism)
    }

    fn token(
        user: &str,
        token: &str,
        mechanism: TokenMechanism,
    ) -> Result<Credentials, CredentialError> {
        let user = if user.is_empty() {
            String::new()
        } else {
            check_user(user.as_bytes())?
        };
        Ok(Credentials::Token {
            user,
            token: Secret::new(token.as_bytes().to_vec()),
            mechanism,
        })
    }

    /// Credentials that cannot log in as `user` anywhere (a random password), for a login that
    /// must fail at the backend the way a wrong password does.
    pub fn decoy(user: String) -> Credentials {
        Credentials::Password {
            user,
            password: Secret::random(),
        }
    }

    /// The user name the client gave.
    pub fn user(&self) -> &str {
        match self {
            Credentials::Password { user, .. } | Credentials::Token { user, .. } => user,
        }
    }

    /// The secret that proves it (a password or a token), for encoding towards a backend only.
    pub fn secret(&self) -> &Secret {
        match self {
            Credentials::Password { password, .. } => password,
            Credentials::Token { token, .. } => token,
        }
    }

    /// The token mechanism, for bearer tokens.
    pub fn token_mechanism(&self) -> Option<TokenMechanism> {
        match self {
            Credentials::Password { .. } => None,
            Credentials::Token { mechanism, .. } => Some(*mechanism),
        }
    }

    /// The same proof for another user name: the mailbox's own login on its backend.
    pub fn for_user(&self, user: &str) -> Credentials {
        match self {
            Credentials::Password { password, .. } => Credentials::Password {
                user: user.to_string(),
                password: password.clone(),
            },
            Credentials::Token {
                token, mechanism, ..
            } => Credentials::Token {
                user: user.to_string(),
                token: token.clone(),
                mechanism: *mechanism,
            },
        }
    }

    /// The SASL message of a token towards a backend (its user and token, nothing else).
    pub fn token_message(&self) -> Option<Vec<u8>> {
        let Credentials::Token {
            user,
            token,
            mechanism,
        } = self
        else {
            return None;
        };
        let mut m = match mechanism {
            TokenMechanism::OAuthBearer => {
                let name = user.replace('=', "=3D").replace(',', "=2C");
                format!("n,a={name},\u{1}auth=Bearer ").into_bytes()
            }
            TokenMechanism::XOAuth2 => format!("user={user}\u{1}auth=Bearer ").into_bytes(),
        };
        m.extend_from_slice(token.expose());
        m.extend_from_slice(b"\x01\x01");
        Some(m)
    }
}

/// The token of an `auth=Bearer TOKEN` field among `^A`-separated fields ending `^A^A`.
fn bearer(fields: &str) -> Option<&str> {
    let body = fields.strip_suffix("\u{1}\u{1}")?;
    let auth = body.split('\u{1}').find_map(|f| f.strip_prefix("auth="))?;
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // RFC 6750's b64token: nothing that could end a line or a field.
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    (!token.is_empty() && token.len() <= 16 * 1024 && token.chars().all(b64token)).then_some(token)
}

/// RFC 5801's saslname: `=2C` is a comma, `=3D` an equals sign, any other `=` is an error.
fn unescape_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "2C" | "2c" => ',',
            "3D" | "3d" => '=',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn check_user(user: &[u8]) -> Result<String, CredentialError> {
    if user.is_empty() {
        return Err(CredentialError::EmptyUser);
    }
    if user.len() > MAX_USER {
        return Err(CredentialError::UserTooLong);
    }
    if user.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(CredentialError::ForbiddenByte);
    }
    let user = std::str::from_utf8(user).map_err(|_| CredentialError::NotUtf8)?;
    if user.chars().any(char::is_control) {
        return Err(CredentialError::ForbiddenByte);
    }
    Ok(user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(c: &Credentials) -> (&str, &[u8]) {
        (c.user(), c.secret().expose())
    }

    #[test]
    fn bearer_tokens_are_read_and_written() {
        let c = Credentials::from_oauthbearer(
            b"n,a=ann@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer vF9dft4qmT\x01\x01",
        )
        .unwrap();
        assert_eq!(parts(&c), ("ann@example.com", &b"vF9dft4qmT"[..]));
        assert_eq!(c.token_mechanism(), Some(TokenMechanism::OAuthBearer));
        let back = c.for_user("a,b=c").token_message().unwrap();
        assert_eq!(back, b"n,a=a=2Cb=3Dc,\x01auth=Bearer vF9dft4qmT\x01\x01");
        let round = Credentials::from_oauthbearer(&back).unwrap();
        assert_eq!(round.user(), "a,b=c");
        // No authzid: no user.
        let c = Credentials::from_oauthbearer(b"n,,\x01auth=Bearer abc\x01\x01").unwrap();
        assert_eq!(c.user(), "");
        let x = Credentials::from_xoauth2(b"user=bob\x01auth=Bearer ya29.a0-b_c~d+e/f==\x01\x01")
            .unwrap();
        assert_eq!(parts(&x), ("bob", &b"ya29.a0-b_c~d+e/f=="[..]));
        assert_eq!(
            x.token_message().unwrap(),
            b"user=bob\x01auth=Bearer ya29.a0-b_c~d+e/f==\x01\x01"
        );
        assert!(format!("{x:?}").contains("redacted"));
        for bad in [
            &b"n,a=ann,\x01auth=Bearer \x01\x01"[..],
            b"n,a=ann,\x01auth=Basic abc\x01\x01",
            b"n,a=ann,\x01auth=Bearer a\r\nb\x01\x01",
            b"n,a=ann,\x01auth=Bearer abc\x01",
            b"q,a=ann,\x01auth=Bearer abc\x01\x01",
            b"n,a=a=ZZ,\x01auth=Bearer abc\x01\x01",
            b"n,a=ann\x01auth=Bearer abc\x01\x01",
        ] {
            assert_eq!(
                Credentials::from_oauthbearer(bad).unwrap_err(),
                CredentialError::MalformedToken,
                "{bad:?}"
            );
        }
        assert!(Credentials::from_xoauth2(b"usr=bob\x01auth=Bearer abc\x01\x01").is_err());
        assert!(Credentials::from_xoauth2(b"user=b\rob\x01auth=Bearer abc\x01\x01").is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::password(b"ann", "s3cr\u{e9}t".as_bytes()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
    }

    #[test]
    fn sasl_plain_is_split_and_checked() {
        let c = Credentials::from_sasl_plain(b"\0ann\0pw").unwrap();
        assert_eq!(parts(&c), ("ann", &b"pw"[..]));
        assert!(Credentials::from_sasl_plain(b"ann\0ann\0pw").is_ok());
        assert_eq!(
            Credentials::from_sasl_plain(b"bob\0ann\0pw").unwrap_err(),
            CredentialError::AuthzidMismatch
        );
        assert_eq!(
            Credentials::from_sasl_plain(b"ann\0pw").unwrap_err(),
            CredentialError::MalformedPlain
        );
        assert_eq!(
            Credentials::from_sasl_plain(b"\0ann\0p\r\nw").unwrap_err(),
            CredentialError::ForbiddenByte
        );
        assert_eq!(
            Credentials::from_sasl_plain(b"\0ann\0p\0w").unwrap_err(),
            CredentialError::ForbiddenByte
        );
        assert_eq!(
            Credentials::from_sasl_plain(b"\0ann\0\xff").unwrap_err(),
            CredentialError::NotUtf8
        );
    }

    #[test]
    fn the_proof_goes_with_another_name_and_decoys_are_random() {
        let c = Credentials::password(b"ANN@example.com", b"pw").unwrap();
        assert_eq!(parts(&c.for_user("ann")), ("ann", &b"pw"[..]));
        let (a, b) = (
            Credentials::decoy("x".into()),
            Credentials::decoy("x".into()),
        );
        assert_ne!(parts(&a).1, parts(&b).1);
        assert_eq!(parts(&a).1.len(), 32);
    }
}
