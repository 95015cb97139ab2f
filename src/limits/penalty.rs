//! The failed-login penalty per client address (Dovecot's "auth penalty": 2 s doubling to 15 s).

use std::net::IpAddr;
use std::time::Duration;

/// Failed logins per client address, forgotten after 15 minutes without a failure; the delay
/// before the next login from there doubles per failure from `initial` up to `max` (Dovecot's
/// "auth penalty": 2 s doubling to 15 s).
pub struct Penalty {
    failures: moka::sync::Cache<IpAddr, u32>,
}

impl Default for Penalty {
    fn default() -> Self {
        Penalty {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(15 * 60))
                .build(),
        }
    }
}

impl Penalty {
    /// The delay owed before the next login from `ip`.
    pub fn delay(&self, ip: IpAddr, initial: Duration, max: Duration) -> Duration {
        Self::delay_for(self.failures.get(&ip).unwrap_or(0), initial, max)
    }

    /// The delay owed after `failures` failed logins.
    pub fn delay_for(failures: u32, initial: Duration, max: Duration) -> Duration {
        if failures == 0 || initial.is_zero() {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        initial.saturating_mul(factor).min(max)
    }

    /// Failed logins counted for `ip` (forgotten after 15 minutes without one).
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.failures.get(&ip).unwrap_or(0)
    }

    pub fn failed(&self, ip: IpAddr) {
        self.failures
            .entry(ip)
            .and_upsert_with(|n| n.map_or(1, |e| e.into_value().saturating_add(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_doubles_up_to_the_cap() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (i, m) = (Duration::from_secs(2), Duration::from_secs(15));
        assert_eq!(p.delay(ip, i, m), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..5 {
            p.failed(ip);
            seen.push(p.delay(ip, i, m).as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 15, 15]);
    }
}
