//! The cleaner's I/O pace: one token bucket shared by every cleaner thread, filled at
//! `cleaner.io_bytes_per_sec_max` with a burst of about 100 ms worth. Time is passed in, so
//! the arithmetic is tested without sleeping; the waiting is the service's
//! ([`super::Cleaner`] implements `storage::IoThrottle` over this).

use std::time::Duration;

/// The burst: this share of a second's worth of bytes may go at once.
const BURST_SECONDS: f64 = 0.1;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    bytes_per_sec: f64,
    burst: f64,
    /// Bytes that may go now; negative after a request larger than the burst (a debt paid
    /// off before the next one goes).
    tokens: f64,
    /// When `tokens` was last brought up to date (time since an arbitrary origin).
    updated: Duration,
}

impl TokenBucket {
    /// Starts full at `now`. `bytes_per_sec` is at least 1 (the config says so).
    pub(crate) fn new(bytes_per_sec: u64, now: Duration) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1) as f64;
        let burst = (bytes_per_sec * BURST_SECONDS).max(1.0);
        Self {
            bytes_per_sec,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes `bytes` if the bucket allows it at `now`; otherwise how long to wait before it
    /// may. A request larger than the burst goes once the bucket is full and leaves a debt,
    /// so the long-run rate holds whatever the request sizes.
    pub(crate) fn take(&mut self, bytes: u64, now: Duration) -> Result<(), Duration> {
        let elapsed = now.saturating_sub(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        let needed = (bytes as f64).min(self.burst);
        if self.tokens >= needed {
            self.tokens -= bytes as f64;
            return Ok(());
        }
        let wait = (needed - self.tokens) / self.bytes_per_sec;
        // At least a millisecond, so a waiter never spins on a rounding remainder.
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_lets_the_burst_go_then_paces_at_the_rate() {
        // 1 MB/s: a burst of 100 KB.
        let mut bucket = TokenBucket::new(1_000_000, Duration::ZERO);
        assert_eq!(bucket.take(60_000, Duration::ZERO), Ok(()));
        assert_eq!(bucket.take(40_000, Duration::ZERO), Ok(()));
        // Empty: 10 KB more needs 10 ms.
        let wait = bucket.take(10_000, Duration::ZERO).unwrap_err();
        assert!((9..=10).contains(&wait.as_millis()), "{wait:?}");
        assert!(bucket.take(10_000, 9 * MS).is_err());
        assert_eq!(bucket.take(10_000, 11 * MS), Ok(()));
    }

    #[test]
    fn idle_time_fills_the_bucket_only_up_to_the_burst() {
        let mut bucket = TokenBucket::new(1_000_000, Duration::ZERO);
        assert_eq!(bucket.take(100_000, Duration::ZERO), Ok(()));
        // An hour idle still allows only one burst at once.
        let later = Duration::from_secs(3600);
        assert_eq!(bucket.take(100_000, later), Ok(()));
        assert!(bucket.take(1_000, later).is_err());
    }

    #[test]
    fn a_request_larger_than_the_burst_goes_when_full_and_its_debt_holds_the_rate() {
        let mut bucket = TokenBucket::new(1_000_000, Duration::ZERO);
        // 1 MB at once: allowed (the bucket is full), leaving 900 KB of debt.
        assert_eq!(bucket.take(1_000_000, Duration::ZERO), Ok(()));
        // The next 1 KB waits until the debt and itself are paid: about 901 ms.
        let wait = bucket.take(1_000, Duration::ZERO).unwrap_err();
        assert!((900..=902).contains(&wait.as_millis()), "{wait:?}");
        assert!(bucket.take(1_000, 890 * MS).is_err());
        assert_eq!(bucket.take(1_000, 902 * MS), Ok(()));
    }

    #[test]
    fn over_a_long_run_the_bytes_taken_match_the_rate() {
        let mut bucket = TokenBucket::new(2_000_000, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut taken = 0u64;
        // Bounded: ten simulated seconds of 64 KiB requests, waiting as told.
        for _ in 0..100_000 {
            if now >= Duration::from_secs(10) {
                break;
            }
            match bucket.take(65_536, now) {
                Ok(()) => taken += 65_536,
                Err(wait) => now += wait,
            }
        }
        // 10 s at 2 MB/s plus the initial burst, within one request.
        let expected = 20_000_000 + 200_000;
        assert!(
            taken.abs_diff(expected) <= 2 * 65_536,
            "{taken} bytes in 10 s, expected about {expected}"
        );
    }

    #[test]
    fn time_going_backwards_gives_no_tokens_and_no_panic() {
        let mut bucket = TokenBucket::new(1_000, Duration::from_secs(10));
        assert_eq!(bucket.take(100, Duration::from_secs(10)), Ok(()));
        assert!(bucket.take(100, Duration::from_secs(5)).is_err());
    }
}
