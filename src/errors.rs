//! Who is to blame for an error: the client, the backend, or the gate itself (as pingora tags
//! its errors). Every error that ends a login or a session says which, in its log line and in
//! the `imapgate_errors_total{blame,stage}` metric, so an operator can tell a misbehaving
//! client from a sick backend from a bug or a misconfiguration of the gate.

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The client sent something wrong, went away, or was too slow.
    Client,
    /// The backend refused, failed, stalled or answered something unexpected.
    Backend,
    /// The gate's own configuration or state (a missing TLS setup, a directory it cannot read).
    Gate,
}

impl Blame {
    /// The label value used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Backend => "backend",
            Blame::Gate => "gate",
        }
    }
}

impl std::fmt::Display for Blame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows who caused it.
pub trait Blamed {
    fn blame(&self) -> Blame;
}
