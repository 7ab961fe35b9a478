//! DeleteTopics: forget each topic and remove its files, reporting per topic.

use std::sync::Arc;

use tidelog_proto::pb;

use super::{blocking, topic_result, Outcome};
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DeleteTopicsRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let topics = blocking(move || {
            request
                .names
                .into_iter()
                .map(|name| {
                    let deleted = context.core.registry.delete(&name);
                    if deleted.is_ok() {
                        tracing::info!(topic = %name, "topic deleted");
                    }
                    topic_result(name, &deleted)
                })
                .collect()
        })
        .await?;
        Some(pb::response::Body::DeleteTopics(pb::DeleteTopicsResponse {
            topics,
        }))
    }))
}
