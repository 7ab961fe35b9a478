//! Snapshots of event-sourced aggregates (issue 9 §2): [`Client::save_snapshot`] stores an
//! aggregate's state as of a stream offset, [`Client::load_stream`] returns the latest snapshot
//! and the first page of the stream's records after it in one request, so loading an aggregate
//! costs its snapshot plus its recent events.
//!
//! The broker keeps the snapshots of topic `T`'s streams in the companion topic `T.snapshots`
//! ([`snapshot_topic_name`]): compacted (the latest snapshot per stream is kept), created on
//! the first save with `T`'s partition count, keyed by the stream key, the covered offset in the
//! `tidelog-snapshot-offset` header ([`SNAPSHOT_OFFSET_HEADER`]).
//!
//! ```no_run
//! use tidelog_client::{Client, ClientConfig};
//! # async fn demo() -> tidelog_client::Result<()> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7171"])).await?;
//! client.save_snapshot("orders", "order-7", 41, "state as of 41").await?;
//! let page = client.load_stream("orders", "order-7").await?;
//! if let Some(snapshot) = &page.snapshot {
//!     println!("snapshot at {}: {} bytes", snapshot.at_offset, snapshot.bytes.len());
//! }
//! println!("{} records after it", page.records.len());
//! # Ok(()) }
//! ```

use bytes::Bytes;
use tidelog_proto::pb;

use crate::client::Client;
use crate::error::Result;
use crate::stream_read::{check, stream_records, wrong_body, StreamRecord};
use crate::types::PartitionId;

/// The record header holding the stream offset a snapshot covers, in decimal.
pub const SNAPSHOT_OFFSET_HEADER: &str = "tidelog-snapshot-offset";

/// The companion topic holding the snapshots of `topic`'s streams: `<topic>.snapshots`.
pub fn snapshot_topic_name(topic: &str) -> String {
    format!("{topic}.snapshots")
}

/// Where [`Client::save_snapshot`] stored a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSnapshot {
    /// The companion topic (`<topic>.snapshots`).
    pub snapshot_topic: String,
    /// The partition and offset of the snapshot's record in the companion topic.
    pub partition: PartitionId,
    pub offset: i64,
}

/// A stream's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last stream offset the snapshot covers: its records after this offset follow it.
    pub at_offset: i64,
    pub bytes: Bytes,
    /// When it was saved (ms since the epoch).
    pub timestamp: i64,
}

/// What [`Client::load_stream`] returns: the latest snapshot and the first page after it.
#[derive(Debug, Clone)]
pub struct LoadedPage {
    /// The partition the stream lives in.
    pub partition: PartitionId,
    /// None: the stream has no snapshot (or only one past its last record, which is ignored),
    /// and `records` start at the stream's beginning.
    pub snapshot: Option<Snapshot>,
    /// Oldest first, all after the snapshot's offset.
    pub records: Vec<StreamRecord>,
    /// Read on from here with [`Client::read_stream`] (forward) unless `end_of_stream`.
    pub next_offset: i64,
    pub end_of_stream: bool,
    /// The partition's high watermark when read.
    pub high_watermark: i64,
}

impl Client {
    /// Stores `snapshot` as the state of the stream `key` of `topic` as of `at_offset` (the
    /// last record it covers, inclusive). The answer comes once the snapshot is durable. The
    /// companion topic is created on the first save.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition) for an unknown
    /// stream topic; [`Error::Broker`](crate::Error::Broker) with `INVALID_REQUEST` for an
    /// `at_offset` past the stream's last record (or below 0) or an empty key, `INVALID_TOPIC`
    /// when the companion topic's name would be too long, `MESSAGE_TOO_LARGE` for a snapshot
    /// larger than the broker's batch limit; connection errors.
    pub async fn save_snapshot(
        &self,
        topic: &str,
        key: impl AsRef<[u8]>,
        at_offset: i64,
        snapshot: impl Into<Bytes>,
    ) -> Result<SavedSnapshot> {
        let request = pb::SaveSnapshotRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key.as_ref()),
            at_offset,
            snapshot: snapshot.into(),
        };
        let body = self.request_any(pb::request::Body::SaveSnapshot(request)).await?;
        let pb::response::Body::SaveSnapshot(response) = body else {
            return Err(wrong_body("save snapshot"));
        };
        check(topic, key.as_ref(), response.error, response.message)?;
        Ok(SavedSnapshot {
            snapshot_topic: response.snapshot_topic,
            partition: PartitionId::new(response.partition),
            offset: response.offset,
        })
    }

    /// The latest snapshot of the stream `key` of `topic` and the first page of its records
    /// after the snapshot's offset (from the stream's start without one), in one request.
    /// Continue with [`read_stream`](Self::read_stream) from `next_offset` until
    /// `end_of_stream`, or use [`EventStore::load`](crate::EventStore::load), which does.
    ///
    /// # Errors
    /// As [`read_stream`](Self::read_stream).
    pub async fn load_stream(&self, topic: &str, key: impl AsRef<[u8]>) -> Result<LoadedPage> {
        let request = pb::LoadStreamRequest {
            topic: topic.to_owned(),
            key: Bytes::copy_from_slice(key.as_ref()),
            limit: 0,
            max_bytes: 0,
        };
        let body = self
            .any_connection()
            .await?
            .request_held(pb::request::Body::LoadStream(request), std::time::Duration::ZERO)
            .await?;
        let pb::response::Body::LoadStream(response) = body else {
            return Err(wrong_body("load stream"));
        };
        check(topic, key.as_ref(), response.error, response.message)?;
        let partition = PartitionId::new(response.partition);
        Ok(LoadedPage {
            partition,
            snapshot: response.snapshot.map(|snapshot| Snapshot {
                at_offset: snapshot.at_offset,
                bytes: snapshot.snapshot,
                timestamp: snapshot.timestamp,
            }),
            records: stream_records(topic, partition, response.records),
            next_offset: response.next_offset,
            end_of_stream: response.end_of_stream,
            high_watermark: response.high_watermark,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_companion_topic_is_named_as_the_broker_names_it() {
        assert_eq!(snapshot_topic_name("orders"), "orders.snapshots");
    }
}
