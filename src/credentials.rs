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
}

/// Longest user name accepted: longer ones are no one's, and would only cost memory and logs.
pub const MAX_USER: usize = 256;

/// What a client proves its identity with, checked: user names are UTF-8 without control
/// characters, passwords UTF-8 without NUL, CR or LF. Anything else could split a command line
/// on the backend.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A user name and password (LOGIN, AUTHENTICATE PLAIN).
    Password { user: String, password: Secret },
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
            Credentials::Password { user, .. } => user,
        }
    }

    /// The secret that proves it (a password), for encoding towards a backend only.
    pub fn secret(&self) -> &Secret {
        match self {
            Credentials::Password { password, .. } => password,
        }
    }

    /// The same proof for another user name: the mailbox's own login on its backend.
    pub fn for_user(&self, user: &str) -> Credentials {
        match self {
            Credentials::Password { password, .. } => Credentials::Password {
                user: user.to_string(),
                password: password.clone(),
            },
        }
    }
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
        match c {
            Credentials::Password { user, password } => (user, password.expose()),
        }
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
