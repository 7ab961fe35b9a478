//! StreamInfo: the native request translated into `Core::stream_info` (the key's partition,
//! its first and last retained offsets and record count, its truncation and erasure marks;
//! read on the blocking pool) and the answer back. Also the one translation of a stream's
//! marks into `pb::StreamMarks`, which the truncate, erase and re-open handlers share.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::streams::StreamDescription;
use crate::core::CoreError;
use crate::native::error::wire;
use crate::net::ListenerContext;
use crate::storage::{ErasureProgress, StreamMarkState};

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::StreamInfoRequest) -> Outcome {
    let looking = context.core.stream_info(&request.topic, request.key);
    Outcome::Deferred(Box::pin(async move {
        Some(pb::response::Body::StreamInfo(answer(looking.await)))
    }))
}

fn answer(looked: Result<StreamDescription, CoreError>) -> pb::StreamInfoResponse {
    match looked {
        Ok(described) => pb::StreamInfoResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            partition: described.partition,
            first_offset: described.info.first_offset,
            last_offset: described.info.last_offset,
            records: described.info.records,
            marks: described
                .marks
                .map(|marks| stream_marks(&marks.state, &marks.progress)),
        },
        Err(error) => {
            let (code, message) = wire(error);
            pb::StreamInfoResponse {
                error: code as i32,
                message,
                partition: 0,
                first_offset: -1,
                last_offset: -1,
                records: 0,
                marks: None,
            }
        }
    }
}

/// A stream's marks and erasure progress as the native protocol carries them.
pub(super) fn stream_marks(state: &StreamMarkState, progress: &ErasureProgress) -> pb::StreamMarks {
    pb::StreamMarks {
        truncated_before: state.truncated_before,
        erased: state.erased,
        erase_before: state.erase_before,
        erase_requested_ms: state.erase_requested_ms,
        erase_completed_ms: state.erase_completed_ms,
        erase_records_remaining: progress.records_remaining,
        erase_segments_remaining: progress.segments_remaining,
        erase_deadline_ms: state.erase_deadline_ms,
    }
}
