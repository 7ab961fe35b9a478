//! The Tidelog wire protocol: the protobuf schema (`pb`), the frame codec (`frame`) and the
//! Kafka RecordBatch v2 codec (`batch`). Pure functions over byte buffers: no I/O, no async.
//!
//! This is the only crate that knows prost. The broker and client convert `pb` types to their
//! own domain types at their edges.

pub mod batch;
pub mod error;
pub mod frame;
mod varint;

pub use error::{BatchError, FrameError};

/// Types generated from `proto/tidelog.proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tidelog.v1.rs"));
}

/// The protocol version every API speaks today. A request with another version is answered
/// with `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;
