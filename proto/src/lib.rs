//! The Tidelog wire protocol: the protobuf schema (`pb`), the frame codec (`frame`), the
//! Kafka RecordBatch v2 codec (`batch`), its compression codecs (`compression`) and Kafka's
//! keyed partitioner (`partitioner`). Pure functions over byte buffers: no I/O, no async.
//!
//! This is the only crate that knows prost. The broker and client convert `pb` types to their
//! own domain types at their edges.

pub mod batch;
pub mod compression;
pub mod error;
pub mod frame;
pub mod partitioner;
mod varint;

pub use error::{BatchError, CompressionError, FrameError};

/// Types generated from `proto/tidelog.proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tidelog.v1.rs"));
}

/// The protocol version every API speaks today. A request with another version is answered
/// with `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

impl pb::request::Body {
    /// The API a request body belongs to: what `RequestHeader.api` must say for it.
    pub fn api_key(&self) -> pb::ApiKey {
        use pb::request::Body;
        match self {
            Body::CreateTopics(_) => pb::ApiKey::CreateTopics,
            Body::DeleteTopics(_) => pb::ApiKey::DeleteTopics,
            Body::Metadata(_) => pb::ApiKey::Metadata,
            Body::Produce(_) => pb::ApiKey::Produce,
            Body::Fetch(_) => pb::ApiKey::Fetch,
            Body::ListOffsets(_) => pb::ApiKey::ListOffsets,
            Body::ConsumerGroupHeartbeat(_) => pb::ApiKey::ConsumerGroupHeartbeat,
            Body::OffsetCommit(_) => pb::ApiKey::OffsetCommit,
            Body::OffsetFetch(_) => pb::ApiKey::OffsetFetch,
            Body::ListGroups(_) => pb::ApiKey::ListGroups,
            Body::DescribeGroups(_) => pb::ApiKey::DescribeGroups,
            Body::DeleteGroups(_) => pb::ApiKey::DeleteGroups,
            Body::InitProducerId(_) => pb::ApiKey::InitProducerId,
            Body::AlterTopic(_) => pb::ApiKey::AlterTopic,
            Body::TrimTopic(_) => pb::ApiKey::TrimTopic,
            Body::ReadStream(_) => pb::ApiKey::ReadStream,
            Body::StreamInfo(_) => pb::ApiKey::StreamInfo,
            Body::WaitGroupOffset(_) => pb::ApiKey::WaitGroupOffset,
            Body::SaveSnapshot(_) => pb::ApiKey::SaveSnapshot,
            Body::LoadStream(_) => pb::ApiKey::LoadStream,
            Body::TruncateStream(_) => pb::ApiKey::TruncateStream,
            Body::EraseStream(_) => pb::ApiKey::EraseStream,
            Body::ReopenStream(_) => pb::ApiKey::ReopenStream,
        }
    }
}
