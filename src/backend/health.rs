//! The state of each address of a backend with several (`address = ["mbx1:143", "mbx2:143"]`):
//! up, or down since a failed connect or greeting. Logins try the addresses that are up first,
//! in the configured order, then those that are down (a login never fails without trying); an
//! address that is down comes back when a health check (connect and greeting, every
//! `health_check_interval`) or a login succeeds on it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Clone)]
struct AddressState {
    up: bool,
    /// When the address last went up or down.
    since: SystemTime,
    /// Failed connects or greetings since the gate loaded this backend.
    failures: u64,
    last_error: Option<String>,
}

/// What `imapgate backends` shows of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AddressView {
    pub backend: String,
    pub address: String,
    pub up: bool,
    /// Unix time of the last change of state.
    pub since: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

pub struct Health {
    addresses: Vec<String>,
    states: Mutex<Vec<AddressState>>,
}

impl Health {
    pub fn new(addresses: Vec<String>) -> Health {
        let now = SystemTime::now();
        let states = addresses
            .iter()
            .map(|_| AddressState {
                up: true,
                since: now,
                failures: 0,
                last_error: None,
            })
            .collect();
        Health {
            addresses,
            states: Mutex::new(states),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AddressState>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn address(&self, i: usize) -> &str {
        self.addresses.get(i).map(String::as_str).unwrap_or("")
    }

    /// How many addresses the backend has.
    pub fn count(&self) -> usize {
        self.addresses.len()
    }

    /// The order a login tries the addresses in: those up, then those down, each in the
    /// configured order.
    pub fn order(&self) -> Vec<usize> {
        let states = self.lock();
        let (up, down): (Vec<usize>, Vec<usize>) = (0..states.len()).partition(|&i| states[i].up);
        up.into_iter().chain(down).collect()
    }

    /// The addresses marked down.
    pub fn down(&self) -> Vec<usize> {
        let states = self.lock();
        (0..states.len()).filter(|&i| !states[i].up).collect()
    }

    /// A connect or greeting failed at address `i`; true when it was up until now.
    pub fn mark_down(&self, i: usize, why: &str) -> bool {
        let mut states = self.lock();
        let Some(s) = states.get_mut(i) else {
            return false;
        };
        s.failures += 1;
        s.last_error = Some(why.to_string());
        let was_up = std::mem::replace(&mut s.up, false);
        if was_up {
            s.since = SystemTime::now();
        }
        was_up
    }

    /// Address `i` answered; true when it was down until now.
    pub fn mark_up(&self, i: usize) -> bool {
        let mut states = self.lock();
        let Some(s) = states.get_mut(i) else {
            return false;
        };
        let was_down = !std::mem::replace(&mut s.up, true);
        if was_down {
            s.since = SystemTime::now();
        }
        was_down
    }

    pub fn views(&self, backend: &str) -> Vec<AddressView> {
        let states = self.lock();
        self.addresses
            .iter()
            .zip(states.iter())
            .map(|(address, s)| AddressView {
                backend: backend.to_string(),
                address: address.clone(),
                up: s.up,
                since: s
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                failures: s.failures,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_down_are_tried_last_and_come_back() {
        let h = Health::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        assert_eq!(h.order(), [0, 1, 2]);
        assert!(h.mark_down(0, "refused"));
        assert!(!h.mark_down(0, "refused again"));
        assert_eq!(h.order(), [1, 2, 0]);
        assert_eq!(h.down(), [0]);
        let v = &h.views("main")[0];
        assert_eq!(
            (v.up, v.failures, v.last_error.as_deref()),
            (false, 2, Some("refused again"))
        );
        assert!(h.mark_up(0));
        assert!(!h.mark_up(0));
        assert_eq!(h.order(), [0, 1, 2]);
    }
}
