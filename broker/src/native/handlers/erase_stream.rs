//! EraseStream: the native request translated into `Core::erase_stream` (every record of the
//! stream so far goes, appends are refused until re-opened; on the blocking pool) and its
//! marks back, with the erasure's progress.

use std::sync::Arc;

use tidelog_proto::pb;

use super::truncate_stream::answer;
use super::Outcome;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::EraseStreamRequest) -> Outcome {
    let erasing = context.core.erase_stream(&request.topic, request.key);
    Outcome::Deferred(Box::pin(async move {
        let (error, message, partition, marks) = answer(erasing.await);
        Some(pb::response::Body::EraseStream(pb::EraseStreamResponse {
            error,
            message,
            partition,
            marks,
        }))
    }))
}
