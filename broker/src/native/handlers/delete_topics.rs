//! DeleteTopics: forget each topic and remove its files (`Core::delete_topics`), reporting per
//! topic.

use std::sync::Arc;

use tidelog_proto::pb;

use super::{topic_result, Outcome};
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DeleteTopicsRequest) -> Outcome {
    let core = context.core.clone();
    Outcome::Deferred(Box::pin(async move {
        // Err: the blocking task failed (logged); the client's request times out, as before.
        let deleted = core.delete_topics(request.names).await.ok()?;
        let topics = deleted
            .into_iter()
            .map(|(name, deleted)| topic_result(name, deleted))
            .collect();
        Some(pb::response::Body::DeleteTopics(pb::DeleteTopicsResponse {
            topics,
        }))
    }))
}
