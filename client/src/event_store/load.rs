//! Loading an aggregate: its latest snapshot and every event after it. The first page comes
//! with the snapshot in one LoadStream request; further pages are read with ReadStream from
//! where it stopped, until the end of the stream, at most [`LOAD_PAGES_MAX`] pages.

use crate::client::Client;
use crate::snapshots::Snapshot;
use crate::stream_read::{ReadStreamOptions, StreamRecord};

use super::{EventStoreError, StreamId};

/// Pages one load reads at most (the first included). A page holds up to the broker's
/// `limits.stream_read_records_max` records (10 000 by default), so this bounds a load, not a
/// real aggregate: a stream that long wants a newer snapshot.
pub const LOAD_PAGES_MAX: usize = 10_000;

/// An aggregate's state as stored: its latest snapshot and the events after it.
#[derive(Debug, Clone)]
pub struct LoadedStream {
    /// None: no snapshot (or only one past the stream's end, which is ignored); `events` then
    /// hold the whole stream.
    pub snapshot: Option<Snapshot>,
    /// Every event after the snapshot's offset, oldest first.
    pub events: Vec<StreamRecord>,
    /// The stream's version as loaded: the offset of its last event, the snapshot's offset
    /// when no event follows it, -1 for a stream with neither. Append with
    /// `Expected::Exact(version)` to be sure nothing was written since.
    pub version: i64,
}

pub(super) async fn load(client: &Client, stream: &StreamId) -> Result<LoadedStream, EventStoreError> {
    let first = client.load_stream(&stream.topic, &stream.key).await?;
    let mut events = first.records;
    let mut next = first.next_offset;
    let mut end = first.end_of_stream;
    let mut pages = 1;
    // Every page moves `next` strictly forward or ends the loop, and the pages are bounded.
    while !end {
        if pages >= LOAD_PAGES_MAX {
            return Err(EventStoreError::Config(format!(
                "stream {stream} has more than {LOAD_PAGES_MAX} pages after its snapshot; save a newer snapshot"
            )));
        }
        let page = client
            .read_stream(&stream.topic, &stream.key, ReadStreamOptions::forward(next))
            .await?;
        pages += 1;
        let moved = page.next_offset > next;
        events.extend(page.records);
        end = page.end_of_stream || !moved;
        next = page.next_offset;
    }
    let version = events
        .last()
        .map(|event| event.offset().get())
        .or(first.snapshot.as_ref().map(|snapshot| snapshot.at_offset))
        .unwrap_or(-1);
    Ok(LoadedStream {
        snapshot: first.snapshot,
        events,
        version,
    })
}
