//! TruncateStream: the native request translated into `Core::truncate_stream` (the stream's
//! records below the offset become unreadable; on the blocking pool) and its marks back.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::stream_info::stream_marks;
use super::Outcome;
use crate::core::streams::MarksAnswer;
use crate::core::CoreError;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::TruncateStreamRequest) -> Outcome {
    let truncating = context
        .core
        .truncate_stream(&request.topic, request.key, request.before_offset);
    Outcome::Deferred(Box::pin(async move {
        let (error, message, partition, marks) = answer(truncating.await);
        Some(pb::response::Body::TruncateStream(pb::TruncateStreamResponse {
            error,
            message,
            partition,
            marks,
        }))
    }))
}

/// `(error, message, partition, marks)`, shared by the three mark-changing handlers.
pub(super) fn answer(changed: Result<MarksAnswer, CoreError>) -> (i32, String, u32, Option<pb::StreamMarks>) {
    match changed {
        Ok((partition, state, progress)) => (
            ErrorCode::None as i32,
            String::new(),
            partition,
            Some(stream_marks(&state, &progress)),
        ),
        Err(error) => {
            let (code, message) = wire(error);
            (code as i32, message, 0, None)
        }
    }
}
