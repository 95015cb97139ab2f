//! Memory freed after a burst goes back to the system. A reconnect storm (every client at once
//! after a restart or a failover) allocates handshake and login state for thousands of
//! connections together; once they have logged in or gone, the allocator keeps those pages as
//! free heap unless asked to return them, and the gate's RSS would stay at the storm's peak.

use std::time::Duration;

/// Watches the gate's connection churn, pass by pass, and says when a burst has settled.
#[derive(Debug, Default)]
pub struct BurstWatch {
    /// Churn at the previous pass and at the last release.
    last: u64,
    released_at: u64,
}

/// A burst: at least this many connections came or went since the last release...
const BURST: u64 = 256;
/// ...and it has settled: fewer than this many in the last pass, per second of the pass.
const SETTLED_PER_SECOND: u64 = 32;

impl BurstWatch {
    /// One pass `every` after the last, with the gate's churn counter now: whether to release.
    pub fn settled(&mut self, churn: u64, every: Duration) -> bool {
        let in_pass = churn.saturating_sub(self.last);
        self.last = churn;
        let quiet = in_pass <= (SETTLED_PER_SECOND * every.as_millis() as u64 / 1000).max(1);
        if quiet && churn.saturating_sub(self.released_at) >= BURST {
            self.released_at = churn;
            return true;
        }
        false
    }
}

/// Hands the allocator's free pages back to the system (glibc's `malloc_trim`); elsewhere it
/// does nothing. It walks the heap, so call it off the runtime's threads.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganizes the allocator's own free lists; it takes the
    // allocator's locks like any allocation does.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_released_once_it_has_settled() {
        let mut w = BurstWatch::default();
        let pass = Duration::from_secs(1);
        assert!(!w.settled(10, pass), "no burst yet");
        assert!(!w.settled(3_000, pass), "still coming");
        assert!(w.settled(3_010, pass), "settled after a burst");
        assert!(!w.settled(3_020, pass), "released already");
        assert!(!w.settled(3_200, pass), "a small burst is not one");
        assert!(!w.settled(9_000, pass));
        assert!(w.settled(9_000, pass));
    }

    #[test]
    fn short_passes_scale_the_quiet_rate() {
        let mut w = BurstWatch::default();
        assert!(!w.settled(1_000, Duration::from_millis(100)));
        assert!(
            !w.settled(1_010, Duration::from_millis(100)),
            "10 in 100 ms is still busy"
        );
        assert!(w.settled(1_012, Duration::from_millis(100)));
    }
}
