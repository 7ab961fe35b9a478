//! DeleteTopics: forget each topic and remove its files, reporting per topic.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::{blocking, topic_error, Outcome};
use crate::broker::BrokerContext;

pub(super) fn handle(context: &Arc<BrokerContext>, request: pb::DeleteTopicsRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let topics = blocking(move || {
            request
                .names
                .into_iter()
                .map(|name| match context.registry.delete(&name) {
                    Ok(()) => {
                        tracing::info!(topic = %name, "topic deleted");
                        pb::TopicResult {
                            name,
                            error: ErrorCode::None as i32,
                            message: String::new(),
                        }
                    }
                    Err(error) => {
                        let (code, message) = topic_error(&error);
                        pb::TopicResult {
                            name,
                            error: code as i32,
                            message,
                        }
                    }
                })
                .collect()
        })
        .await?;
        Some(pb::response::Body::DeleteTopics(pb::DeleteTopicsResponse {
            topics,
        }))
    }))
}
