//! Offsets a client can ask for by name: the log's start, its end, or the first record at or
//! after a time (ListOffsets). Committed offsets live with the groups (`core::groups`).

use super::{Core, CoreError, ErrorCode};

/// What a ListOffsets query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetQuery {
    /// The high watermark (sentinel -1).
    Latest,
    /// The log start offset (sentinel -2).
    Earliest,
    /// The first record with the newest timestamp (sentinel -3, Kafka's ListOffsets v7+).
    MaxTimestamp,
    /// The first offset whose timestamp is at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl OffsetQuery {
    pub(crate) const LATEST: i64 = -1;
    pub(crate) const EARLIEST: i64 = -2;
    pub(crate) const MAX_TIMESTAMP: i64 = -3;

    /// The query a wire timestamp stands for: -1 latest, -2 earliest, -3 the newest
    /// timestamp, a time otherwise; any other negative value is refused.
    pub(crate) fn from_sentinel(timestamp: i64) -> Result<OffsetQuery, CoreError> {
        match timestamp {
            Self::LATEST => Ok(OffsetQuery::Latest),
            Self::EARLIEST => Ok(OffsetQuery::Earliest),
            Self::MAX_TIMESTAMP => Ok(OffsetQuery::MaxTimestamp),
            timestamp if timestamp < 0 => Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!("timestamp {timestamp} is neither -1, -2, -3 nor a time"),
            )),
            timestamp => Ok(OffsetQuery::Timestamp(timestamp)),
        }
    }
}

impl Core {
    /// The answer to a ListOffsets query for one partition, `timestamp` being the wire value
    /// (-1 latest, -2 earliest, else a time): `Some((offset, timestamp))`, the timestamp -1 for
    /// the sentinels; `None` when no record is at or after the time asked for. An unknown or
    /// offline partition is reported before a bad timestamp.
    pub(crate) fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, CoreError> {
        let log = self.partition(topic, partition)?;
        match OffsetQuery::from_sentinel(timestamp)? {
            OffsetQuery::Latest => Ok(Some((log.high_watermark(), -1))),
            OffsetQuery::Earliest => Ok(Some((log.log_start_offset(), -1))),
            OffsetQuery::MaxTimestamp => log
                .max_timestamp_offset()
                .map_err(|error| CoreError::partition_storage(topic, partition, &error)),
            OffsetQuery::Timestamp(timestamp) => log
                .offset_for_timestamp(timestamp)
                .map_err(|error| CoreError::partition_storage(topic, partition, &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_name_the_ends_and_other_negative_times_are_refused() {
        assert_eq!(OffsetQuery::from_sentinel(-1), Ok(OffsetQuery::Latest));
        assert_eq!(OffsetQuery::from_sentinel(-2), Ok(OffsetQuery::Earliest));
        assert_eq!(OffsetQuery::from_sentinel(0), Ok(OffsetQuery::Timestamp(0)));
        assert_eq!(OffsetQuery::from_sentinel(-3), Ok(OffsetQuery::MaxTimestamp));
        let refused = OffsetQuery::from_sentinel(-4).expect_err("not a sentinel");
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
    }
}
