//! Credentials as the client gave them: checked once, then only ever encoded towards a backend.
//!
//! [`Password`] has no `Display`, and its `Debug` prints a fixed placeholder in every build, so no
//! log line at any level can carry it by accident.

use std::fmt;

/// A password (or any secret): bytes that are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(bytes)
    }

    /// A password nobody knows (32 hex digits from the system's random source), for a login
    /// that must fail at the backend.
    pub fn random() -> Password {
        let mut bytes = [0u8; 16];
        // Without randomness the time of day still makes a password nobody has.
        if getrandom::getrandom(&mut bytes).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes = now.to_le_bytes();
        }
        Password(
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

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Drop for Password {
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

/// A checked pair: the user name is UTF-8 without control characters, the password UTF-8 without
/// NUL, CR or LF. Anything else could split a command line on the backend.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Password,
}

impl Credentials {
    pub fn new(user: &[u8], password: &[u8]) -> Result<Credentials, CredentialError> {
        if user.is_empty() {
            return Err(CredentialError::EmptyUser);
        }
        if user.len() > MAX_USER {
            return Err(CredentialError::UserTooLong);
        }
        if user
            .iter()
            .chain(password)
            .any(|b| matches!(b, 0 | b'\r' | b'\n'))
        {
            return Err(CredentialError::ForbiddenByte);
        }
        let user = std::str::from_utf8(user).map_err(|_| CredentialError::NotUtf8)?;
        std::str::from_utf8(password).map_err(|_| CredentialError::NotUtf8)?;
        if user.chars().any(char::is_control) {
            return Err(CredentialError::ForbiddenByte);
        }
        Ok(Credentials {
            user: user.to_string(),
            password: Password::new(password.to_vec()),
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
        Credentials::new(authcid, passwd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new(b"ann", "s3cr\u{e9}t".as_bytes()).unwrap();
        let shown = format!("{c:?} {:?}", c.password);
        assert!(!shown.contains("s3cr"), "{shown}");
    }

    #[test]
    fn sasl_plain_is_split_and_checked() {
        let c = Credentials::from_sasl_plain(b"\0ann\0pw").unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("ann", &b"pw"[..]));
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
}
