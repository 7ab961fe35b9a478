//! CreateTopics: validate and create each topic, reporting per topic.

use std::sync::Arc;

use tidelog_proto::pb;

use super::{blocking, topic_result, Outcome};
use crate::clock::now_ms;
use crate::metadata::TopicOverrides;
use crate::net::ListenerContext;
use crate::topics::TopicSpec;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::CreateTopicsRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let topics = blocking(move || {
            request
                .topics
                .into_iter()
                .map(|topic| {
                    let name = topic.name.clone();
                    let spec = TopicSpec {
                        name: topic.name,
                        partitions: (topic.partitions != 0).then_some(topic.partitions),
                        overrides: overrides(topic.config.unwrap_or_default()),
                    };
                    // The registry holds the overrides to the floors (topics::config).
                    let created = context.core.registry.create(spec, now_ms());
                    if let Ok(topic) = &created {
                        tracing::info!(topic = %name, partitions = topic.partitions.len(), "topic created");
                    }
                    topic_result(name, &created)
                })
                .collect()
        })
        .await?;
        Some(pb::response::Body::CreateTopics(pb::CreateTopicsResponse {
            topics,
        }))
    }))
}

fn overrides(config: pb::TopicConfig) -> TopicOverrides {
    TopicOverrides {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        flush: config.flush,
        index_interval_bytes: config.index_interval_bytes,
    }
}
