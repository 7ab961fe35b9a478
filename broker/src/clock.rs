//! Wall-clock time in milliseconds since the Unix epoch, the unit of record timestamps.
//! One function, so tests of time-dependent code pass explicit times instead.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    // A clock before 1970 is a misconfigured host; treating it as the epoch keeps going.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
