//! Per-key truncation and erasure (issue 9 §3): [`Client::truncate_stream`] makes a stream's
//! records before an offset unreadable, [`Client::erase_stream`] erases every record of a
//! stream (the broker's cleaner removes them from its segment files within the broker's
//! `cleaner.erase_deadline_ms`; reads answer [`Error::StreamErased`] and appends are refused
//! until [`Client::reopen_stream`]). Each answers the stream's [`StreamMarks`], which
//! [`Client::stream_info`] also reports, with the erasure's progress.
//!
//! ```no_run
//! use tidelog_client::{Client, ClientConfig};
//! # async fn demo() -> tidelog_client::Result<()> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7171"])).await?;
//! let marks = client.erase_stream("orders", "customer-42").await?;
//! println!("erasing records below {}", marks.erase_before);
//! # Ok(()) }
//! ```

use bytes::Bytes;
use tidelog_proto::pb;

use crate::client::Client;
use crate::error::Result;
use crate::stream_read::{check, wrong_body};

/// What truncations and erasures say about one stream, and how far its erasure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMarks {
    /// Reads of the stream start here; -1: not truncated.
    pub truncated_before: i64,
    /// Erased and not re-opened: reads answer [`Error::StreamErased`](crate::Error::StreamErased)
    /// and appends are refused.
    pub erased: bool,
    /// The latest erasure: the stream's records below this offset are erased (also after a
    /// re-open); -1 when never erased.
    pub erase_before: i64,
    /// When the erasure was asked for, ms since the epoch (0: never).
    pub erase_requested_ms: i64,
    /// When it must be complete by (the broker's `cleaner.erase_deadline_ms` after the request).
    pub erase_deadline_ms: i64,
    /// When the broker's cleaner finished removing the records; 0 while it has not.
    pub erase_completed_ms: i64,
    /// Records of the stream below `erase_before` still in segment files.
    pub erase_records_remaining: u64,
    /// Segments holding them.
    pub erase_segments_remaining: u32,
}

impl StreamMarks {
    /// An erasure was asked for and the broker has not finished removing its records.
    pub fn erasure_pending(&self) -> bool {
        self.erase_before >= 0 && self.erase_completed_ms == 0
    }
}

pub(crate) fn from_wire(marks: pb::StreamMarks) -> StreamMarks {
    StreamMarks {
        truncated_before: marks.truncated_before,
        erased: marks.erased,
        erase_before: marks.erase_before,
        erase_requested_ms: marks.erase_requested_ms,
        erase_deadline_ms: marks.erase_deadline_ms,
        erase_completed_ms: marks.erase_completed_ms,
        erase_records_remaining: marks.erase_records_remaining,
        erase_segments_remaining: marks.erase_segments_remaining,
    }
}

impl Client {
    /// Makes the records of the stream `key` in `topic` before `before` unreadable (the
    /// broker's cleaner removes them); `before` is clamped to the partition's high watermark,
    /// and a truncation never moves back. The stream keeps its version. Durable when it returns.
    ///
    /// # Errors
    /// [`Error::StreamErased`](crate::Error::StreamErased) for an erased stream (re-open it
    /// first); [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition);
    /// [`Error::Broker`](crate::Error::Broker) with `OFFSET_OUT_OF_RANGE` for a negative
    /// offset, `INVALID_REQUEST` for an empty key or when the partition holds the most marks
    /// it may; connection errors.
    pub async fn truncate_stream(
        &self,
        topic: &str,
        key: impl AsRef<[u8]>,
        before: i64,
    ) -> Result<StreamMarks> {
        let key = key.as_ref();
        let request = pb::TruncateStreamRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key),
            before_offset: before,
        };
        let body = self
            .request_any(pb::request::Body::TruncateStream(request))
            .await?;
        let pb::response::Body::TruncateStream(response) = body else {
            return Err(wrong_body("truncate stream"));
        };
        answer(topic, key, response.error, response.message, response.marks)
    }

    /// Erases the stream `key` of `topic`: every record of it written so far goes (the broker
    /// removes them from its segment files by the returned `erase_deadline_ms`; other records
    /// keep their offsets), its reads answer [`Error::StreamErased`](crate::Error::StreamErased)
    /// and its appends are refused until [`reopen_stream`](Self::reopen_stream). Durable when
    /// it returns; erasing an erased stream again changes nothing.
    ///
    /// # Errors
    /// As [`truncate_stream`](Self::truncate_stream), without the erased case.
    pub async fn erase_stream(&self, topic: &str, key: impl AsRef<[u8]>) -> Result<StreamMarks> {
        let key = key.as_ref();
        let request = pb::EraseStreamRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key),
        };
        let body = self.request_any(pb::request::Body::EraseStream(request)).await?;
        let pb::response::Body::EraseStream(response) = body else {
            return Err(wrong_body("erase stream"));
        };
        answer(topic, key, response.error, response.message, response.marks)
    }

    /// Accepts appends to the erased stream `key` of `topic` again. Its erased records stay
    /// erased: reads start at its `erase_before`, and it starts with no version. A stream that
    /// is not erased is answered as it is.
    ///
    /// # Errors
    /// As [`erase_stream`](Self::erase_stream).
    pub async fn reopen_stream(&self, topic: &str, key: impl AsRef<[u8]>) -> Result<StreamMarks> {
        let key = key.as_ref();
        let request = pb::ReopenStreamRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key),
        };
        let body = self.request_any(pb::request::Body::ReopenStream(request)).await?;
        let pb::response::Body::ReopenStream(response) = body else {
            return Err(wrong_body("reopen stream"));
        };
        answer(topic, key, response.error, response.message, response.marks)
    }
}

fn answer(
    topic: &str,
    key: &[u8],
    error: i32,
    message: String,
    marks: Option<pb::StreamMarks>,
) -> Result<StreamMarks> {
    check(topic, key, error, message)?;
    marks
        .map(from_wire)
        .ok_or_else(|| wrong_body("stream marks (no marks in the answer)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_from_the_wire_field_by_field() {
        let marks = from_wire(pb::StreamMarks {
            truncated_before: 5,
            erased: true,
            erase_before: 9,
            erase_requested_ms: 100,
            erase_completed_ms: 0,
            erase_records_remaining: 3,
            erase_segments_remaining: 2,
            erase_deadline_ms: 200,
        });
        assert_eq!(
            marks,
            StreamMarks {
                truncated_before: 5,
                erased: true,
                erase_before: 9,
                erase_requested_ms: 100,
                erase_deadline_ms: 200,
                erase_completed_ms: 0,
                erase_records_remaining: 3,
                erase_segments_remaining: 2,
            }
        );
        assert!(marks.erasure_pending());
        assert!(!StreamMarks {
            erase_completed_ms: 300,
            ..marks
        }
        .erasure_pending());
    }
}
