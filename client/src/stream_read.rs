//! Reading event streams (issue 8 §4): [`Client::read_stream`] pages through one key's records
//! (the broker finds them through its per-key index, so the cost follows the stream, not the
//! partition), [`Client::stream_info`] tells a stream's extent and version, and
//! [`Client::wait_for_group_offset`] waits until a consumer group has committed past an offset
//! (read-your-writes for read models). A stream is the records of one key in one topic, in the
//! partition Kafka's default partitioner picks for the key; the broker computes it.

use std::time::Duration;

use bytes::Bytes;
use tidelog_proto::pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{ErrorCode, Header, Offset, PartitionId, Record, TopicName};
use crate::wire;

/// One record of a stream: a [`Record`] whose key is the stream's.
pub type StreamRecord = Record;

/// Which way [`Client::read_stream`] walks a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadDirection {
    /// Oldest first, from `from` up.
    #[default]
    Forward,
    /// Newest first, from `from` down.
    Backward,
}

/// What one [`Client::read_stream`] call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadStreamOptions {
    /// Forward: the first offset wanted (one below the log start reads from the oldest
    /// retained record). Backward: the offset to read down from, inclusive; -1: from the
    /// stream's last record.
    pub from: i64,
    pub direction: ReadDirection,
    /// At most this many records; 0 asks for the broker's maximum, which also caps it.
    pub limit: u32,
    /// Forward only: when the stream has nothing at or after `from`, how long the broker
    /// waits for a record of the key before it answers an empty page. Zero: at once.
    pub max_wait: Duration,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        Self::forward(0)
    }
}

impl ReadStreamOptions {
    /// Oldest first from `from`, no wait, the broker's page size.
    pub fn forward(from: i64) -> Self {
        Self {
            from,
            direction: ReadDirection::Forward,
            limit: 0,
            max_wait: Duration::ZERO,
        }
    }

    /// Newest first from `from` down (-1: from the last record).
    pub fn backward(from: i64) -> Self {
        Self {
            direction: ReadDirection::Backward,
            ..Self::forward(from)
        }
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
}

/// A page of a stream.
#[derive(Debug, Clone)]
pub struct StreamPage {
    /// The partition the stream lives in.
    pub partition: PartitionId,
    /// In the direction asked.
    pub records: Vec<StreamRecord>,
    /// The `from` of the next page. Forward: one past the last record returned, or the high
    /// watermark once the stream has nothing more below it. Backward: one below the last
    /// record returned, -1 at the start of the stream.
    pub next_offset: i64,
    /// Forward: no record of the key lies between `next_offset` and the high watermark.
    /// Backward: the start of the stream was reached.
    pub end_of_stream: bool,
    /// The partition's high watermark when read.
    pub high_watermark: i64,
    /// The partition's log start when read: records below it are gone.
    pub log_start_offset: i64,
}

/// What a partition retains of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    pub partition: PartitionId,
    /// -1 when the stream has no retained record.
    pub first_offset: i64,
    /// The stream's version: the offset of its last record (a truncated stream keeps the
    /// version it had); -1 when it has none.
    pub last_offset: i64,
    /// Records retained (a truncated stream counts those from its truncation point).
    pub records: u64,
    /// Its truncation and erasure marks, with the erasure's progress; `None` when it was never
    /// truncated nor erased. An erased stream is described with no records and these marks.
    pub marks: Option<crate::stream_marks::StreamMarks>,
}

/// The answer of [`Client::wait_for_group_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitResult {
    /// The group's committed offset for the partition when answered; -1: none.
    pub committed: i64,
    /// Whether the committed offset is at or past the one waited for; false: timed out.
    pub reached: bool,
}

impl Client {
    /// One page of the stream `key` in `topic`.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Broker`] with `INVALID_REQUEST` for an
    /// empty key, `REQUEST_TIMED_OUT` when the broker had no memory for the page (retriable),
    /// `KAFKA_STORAGE_ERROR` for an offline partition; connection errors.
    pub async fn read_stream(
        &self,
        topic: &str,
        key: impl AsRef<[u8]>,
        options: ReadStreamOptions,
    ) -> Result<StreamPage> {
        let request = pb::ReadStreamRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key.as_ref()),
            from_offset: options.from,
            direction: match options.direction {
                ReadDirection::Forward => pb::ReadDirection::Forward,
                ReadDirection::Backward => pb::ReadDirection::Backward,
            } as i32,
            limit: options.limit,
            max_bytes: 0,
            max_wait_ms: millis(options.max_wait),
        };
        let body = self
            .any_connection()
            .await?
            .request_held(pb::request::Body::ReadStream(request), options.max_wait)
            .await?;
        let pb::response::Body::ReadStream(response) = body else {
            return Err(wrong_body("read stream"));
        };
        check(topic, key.as_ref(), response.error, response.message)?;
        let partition = PartitionId::new(response.partition);
        let records = stream_records(topic, partition, response.records);
        Ok(StreamPage {
            partition,
            records,
            next_offset: response.next_offset,
            end_of_stream: response.end_of_stream,
            high_watermark: response.high_watermark,
            log_start_offset: response.log_start_offset,
        })
    }

    /// The extent and version of the stream `key` in `topic`.
    ///
    /// # Errors
    /// As [`read_stream`](Self::read_stream).
    pub async fn stream_info(&self, topic: &str, key: impl AsRef<[u8]>) -> Result<StreamInfo> {
        let request = pb::StreamInfoRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key.as_ref()),
        };
        let body = self.request_any(pb::request::Body::StreamInfo(request)).await?;
        let pb::response::Body::StreamInfo(response) = body else {
            return Err(wrong_body("stream info"));
        };
        check(topic, key.as_ref(), response.error, response.message)?;
        Ok(StreamInfo {
            partition: PartitionId::new(response.partition),
            first_offset: response.first_offset,
            last_offset: response.last_offset,
            records: response.records,
            marks: response.marks.map(crate::stream_marks::from_wire),
        })
    }

    /// Waits until `group` has committed `offset` or more for `topic`/`partition`, at most
    /// `timeout` (the broker clamps it to its `groups.offset_wait_ms_max`). The broker is woken
    /// by the commit itself, from any client or protocol. A group or commit that does not
    /// exist yet is waited for.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Broker`] with `INVALID_GROUP_ID`,
    /// `THROTTLING_QUOTA_EXCEEDED` when the broker has too many waits under way (retriable),
    /// `BROKER_SHUTTING_DOWN`; connection errors. A timeout is not an error:
    /// [`WaitResult::reached`] is false.
    pub async fn wait_for_group_offset(
        &self,
        group: &str,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        timeout: Duration,
    ) -> Result<WaitResult> {
        let request = pb::WaitGroupOffsetRequest {
            group_id: group.to_owned(),
            topic: topic.to_owned(),
            partition: partition.get(),
            offset: offset.get(),
            timeout_ms: millis(timeout),
        };
        let body = self
            .any_connection()
            .await?
            .request_held(pb::request::Body::WaitGroupOffset(request), timeout)
            .await?;
        let pb::response::Body::WaitGroupOffset(response) = body else {
            return Err(wrong_body("wait group offset"));
        };
        match wire::error_code(response.error) {
            None => Ok(WaitResult {
                committed: response.committed,
                reached: response.reached,
            }),
            Some(ErrorCode::UnknownTopicOrPartition) => Err(Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: Some(partition),
            }),
            Some(code) => Err(Error::Broker {
                code,
                message: response.message,
            }),
        }
    }
}

/// A page's records as the client's records of `topic`/`partition`.
pub(crate) fn stream_records(
    topic: &str,
    partition: PartitionId,
    records: Vec<pb::StreamRecord>,
) -> Vec<StreamRecord> {
    let topic_name = TopicName::new(topic);
    records
        .into_iter()
        .map(|record| {
            Record::new(
                topic_name.clone(),
                partition,
                Offset::new(record.offset),
                record.timestamp,
                Some(record.key),
                record.value,
                record
                    .headers
                    .into_iter()
                    .map(|header| Header::new(header.key, header.value))
                    .collect(),
            )
        })
        .collect()
}

/// A duration as the wire's u32 milliseconds, saturating (about 49 days).
fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A stream request's error code as the client's error (`key`: the stream's).
pub(crate) fn check(topic: &str, key: &[u8], error: i32, message: String) -> Result<()> {
    match wire::error_code(error) {
        None => Ok(()),
        Some(ErrorCode::StreamErased) => Err(Error::StreamErased {
            topic: topic.to_owned(),
            key: String::from_utf8_lossy(key).into_owned(),
            message,
        }),
        Some(ErrorCode::UnknownTopicOrPartition) => Err(Error::UnknownTopicOrPartition {
            topic: topic.to_owned(),
            partition: None,
        }),
        Some(code) => Err(Error::Broker { code, message }),
    }
}

pub(crate) fn wrong_body(api: &str) -> Error {
    Error::Protocol {
        addr: String::new(),
        reason: format!("the broker answered a {api} request with another response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_a_forward_read_from_the_start_without_waiting() {
        let options = ReadStreamOptions::default();
        assert_eq!(options.from, 0);
        assert_eq!(options.direction, ReadDirection::Forward);
        assert_eq!(options.limit, 0);
        assert_eq!(options.max_wait, Duration::ZERO);
        let back = ReadStreamOptions::backward(-1)
            .limit(5)
            .max_wait(Duration::from_secs(1));
        assert_eq!(
            (back.from, back.direction, back.limit, back.max_wait),
            (-1, ReadDirection::Backward, 5, Duration::from_secs(1))
        );
    }

    #[test]
    fn long_waits_saturate_the_wire_field() {
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
        assert_eq!(millis(Duration::from_secs(u64::MAX / 4)), u32::MAX);
    }
}
