//! Which connections are served: at most `limits.connections_max` at once and at most
//! `limits.connections_per_address_max` from one source IP. A connection past either cap is
//! still accepted, told why in an error frame and closed, so it never waits unseen in the
//! kernel's backlog; refusals are logged at WARN at most once a second, with a count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shortest time between two WARN lines about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The caps, shared by the accept loop and the connections' guards.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_address_max: usize,
    connections_max: usize,
    refusals: RefusalLog,
}

/// Held by a served connection; gives its slot and its address's count back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    _slot: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Broker { max: usize },
    Address { max: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Broker { max } => write!(f, "the broker serves at most {max} connections"),
            Refusal::Address { max } => write!(f, "the broker serves at most {max} connections per address"),
        }
    }
}

impl Admission {
    pub(crate) fn new(connections_max: usize, per_address_max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(connections_max)),
            per_address: Arc::default(),
            per_address_max,
            connections_max,
            refusals: RefusalLog::default(),
        }
    }

    /// Admits a connection from `address`, or says why not (and logs it, rate-limited).
    pub(crate) fn admit(&self, address: IpAddr) -> Result<Admitted, Refusal> {
        let result = self.try_admit(address);
        if let Err(refusal) = result {
            self.refusals.record(refusal);
        }
        result
    }

    fn try_admit(&self, address: IpAddr) -> Result<Admitted, Refusal> {
        let mut counts = lock(&self.per_address);
        let count = counts.entry(address).or_insert(0);
        if *count >= self.per_address_max {
            return Err(Refusal::Address {
                max: self.per_address_max,
            });
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Broker {
                max: self.connections_max,
            })?;
        *count += 1;
        Ok(Admitted {
            _slot: slot,
            address,
            per_address: self.per_address.clone(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.per_address);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters updated without panicking code in between: a poisoned lock still holds
    // consistent numbers.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a WARN at most once per `REFUSAL_LOG_INTERVAL`, passing it how many were skipped.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedWarn {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedWarn {
    pub(crate) fn warn(&self, log: impl FnOnce(u64)) {
        let mut state = lock(&self.state);
        let (last, suppressed) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        log(*suppressed);
        *last = Some(now);
        *suppressed = 0;
    }
}

type RefusalLog = RateLimitedWarn;

impl RefusalLog {
    fn record(&self, refusal: Refusal) {
        self.warn(|suppressed| {
            tracing::warn!(reason = %refusal, refused_since_last_warning = suppressed, "connection refused");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_caps_hold_and_slots_come_back_when_connections_end() {
        let admission = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let a = admission.admit(one).unwrap();
        let _b = admission.admit(one).unwrap();
        assert_eq!(admission.admit(one).unwrap_err(), Refusal::Address { max: 2 });
        let _c = admission.admit(two).unwrap();
        assert_eq!(admission.admit(two).unwrap_err(), Refusal::Broker { max: 3 });
        drop(a);
        let _d = admission.admit(two).unwrap();
        assert_eq!(admission.admit(one).unwrap_err(), Refusal::Broker { max: 3 });
    }
}
