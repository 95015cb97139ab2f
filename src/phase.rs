//! Where the gate is in its life. Every task that must react to a shutdown (accept loops,
//! sessions before login, the control socket, the metrics endpoint) follows one watch of it.

/// The gate's phase; sessions and servers watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Shutdown asked: listeners closed, sessions before login say `* BYE`, relays go on.
    Draining,
    /// Grace period over: relayed sessions are closed.
    Closing,
}
