//! Waiting on conditions with a deadline (never a bare sleep as synchronisation), and the seeded
//! randomness of randomised tests.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

/// Environment variable that fixes the seed of every randomised test.
pub const SEED_ENV: &str = "TIDELOG_TEST_SEED";

/// Pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Calls `condition` until it returns `Some`, at most until `timeout` has passed; panics with
/// `what` (and how long it waited) otherwise.
pub fn poll_until<T>(timeout: Duration, what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Like [`poll_until`], but returns `None` at the deadline instead of panicking.
pub fn try_poll_until<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The seed for a randomised test: `TIDELOG_TEST_SEED` when set, otherwise a fresh one. It is
/// printed either way, so a failing run's output says how to reproduce it.
pub fn test_seed(test_name: &str) -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("{SEED_ENV}={text:?} is not a u64: {error}")),
        Err(_) => rand::random(),
    };
    eprintln!("{test_name}: seed {seed} (reproduce with {SEED_ENV}={seed})");
    seed
}

/// A seeded generator for `test_name`; see [`test_seed`].
pub fn test_rng(test_name: &str) -> StdRng {
    StdRng::seed_from_u64(test_seed(test_name))
}
