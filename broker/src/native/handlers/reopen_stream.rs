//! ReopenStream: the native request translated into `Core::reopen_stream` (appends to an
//! erased stream are accepted again; its erased records stay erased) and its marks back.

use std::sync::Arc;

use tidelog_proto::pb;

use super::truncate_stream::answer;
use super::Outcome;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ReopenStreamRequest) -> Outcome {
    let reopening = context.core.reopen_stream(&request.topic, request.key);
    Outcome::Deferred(Box::pin(async move {
        let (error, message, partition, marks) = answer(reopening.await);
        Some(pb::response::Body::ReopenStream(pb::ReopenStreamResponse {
            error,
            message,
            partition,
            marks,
        }))
    }))
}
