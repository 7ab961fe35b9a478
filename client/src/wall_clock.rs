//! The wall clock in milliseconds since the epoch, read cheaply enough for a timestamp per
//! record at millions of records per second.
//!
//! A record's default timestamp is the wall-clock millisecond of its own `send`. Reading
//! `CLOCK_REALTIME` per record (the vDSO's fenced counter read and its conversions) was the
//! largest single cost of `send` at 100-byte records. Here each thread reads the real clock
//! once per millisecond at most: the read opens a window that ends before the next
//! millisecond begins, and inside it the CPU's time-stamp counter (an unfenced read, through
//! `quanta`) only has to show that the window has not run out. So the answer is the
//! millisecond the real clock would have given, not an approximation of it:
//!
//! * the counter is read before the real clock, so the elapsed time it measures from the
//!   window's start never undercounts the time since the real read;
//! * the window is cut short by [`WINDOW_MARGIN_NS`], far more than any error of `quanta`'s
//!   calibration (counter against the monotonic clock) or of NTP's slewing of the wall clock
//!   (at most 500 ppm, 0.5 µs a millisecond) can add up to within one millisecond;
//! * a counter that reads lower than the window's start (a thread moved to another core)
//!   closes the window instead of being trusted.
//!
//! Where the CPU has no invariant counter, `quanta` counts with the monotonic clock instead:
//! the same answer, with no saving.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// How much earlier than the next millisecond's start a window ends.
pub(crate) const WINDOW_MARGIN_NS: u64 = 50_000;

const NANOS_PER_MILLI: i64 = 1_000_000;

/// One thread's current window: until `length_ns` after counter value `start`, the wall
/// clock reads `ms`.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    length_ns: u64,
    ms: i64,
}

thread_local! {
    /// Empty until the thread's first read.
    static WINDOW: Cell<Window> = const { Cell::new(Window { start: 0, length_ns: 0, ms: 0 }) };
}

fn counter() -> &'static quanta::Clock {
    static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();
    // Calibrates once per process (a few milliseconds, against the monotonic clock).
    COUNTER.get_or_init(quanta::Clock::new)
}

/// The wall clock's current millisecond since the epoch, as `CLOCK_REALTIME` would give it.
#[inline]
pub(crate) fn now_ms() -> i64 {
    let counter = counter();
    let now = counter.raw();
    let window = WINDOW.with(Cell::get);
    if now >= window.start && counter.delta_as_nanos(window.start, now) < window.length_ns {
        return window.ms;
    }
    open_window(counter)
}

/// Reads the real clock and opens this thread's window on it.
#[cold]
fn open_window(counter: &quanta::Clock) -> i64 {
    // Before the real clock: see the module's first point.
    let start = counter.raw();
    let (ms, into_ms_ns) = realtime();
    let length_ns = (NANOS_PER_MILLI - into_ms_ns) as u64;
    WINDOW.with(|window| {
        window.set(Window {
            start,
            length_ns: length_ns.saturating_sub(WINDOW_MARGIN_NS),
            ms,
        })
    });
    ms
}

/// `CLOCK_REALTIME` as whole milliseconds and the nanoseconds into the current one.
fn realtime() -> (i64, i64) {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(now) => (
            now.tv_sec() * 1000 + now.tv_nsec() / NANOS_PER_MILLI,
            now.tv_nsec() % NANOS_PER_MILLI,
        ),
        // CLOCK_REALTIME always exists; should it fail, std reads the same clock.
        Err(_) => {
            let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            (
                since_epoch.as_millis() as i64,
                i64::from(since_epoch.subsec_nanos()) % NANOS_PER_MILLI,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as i64
    }

    /// Every read, sampled back to back for a while (many windows), lies between two reads
    /// of the system's wall clock taken around it: the window never gives a millisecond the
    /// real clock had left.
    #[test]
    fn every_read_is_the_millisecond_the_real_clock_shows() {
        let mut windows_seen = 0;
        let mut last = 0;
        for _ in 0..2_000_000 {
            let before = system_ms();
            let ms = now_ms();
            let after = system_ms();
            assert!(
                (before..=after).contains(&ms),
                "read {ms} outside the real clock's {before}..={after}"
            );
            if ms != last {
                windows_seen += 1;
                last = ms;
            }
            if windows_seen > 20 {
                return;
            }
        }
        panic!("the wall clock moved through only {windows_seen} milliseconds");
    }

    #[test]
    fn a_thread_reads_the_same_clock_as_any_other() {
        let here = now_ms();
        let there = std::thread::spawn(now_ms).join().expect("the thread ran");
        let after = system_ms();
        assert!(here <= there && there <= after, "{here} {there} {after}");
    }
}
