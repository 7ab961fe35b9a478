//! CreateTopics: the native request translated into `Core::create_topics` (validation, the
//! floors on client settings, creation), reporting per topic.

use std::sync::Arc;

use tidelog_proto::pb;

use super::{topic_result, Outcome};
use crate::metadata::TopicOverrides;
use crate::net::ListenerContext;
use crate::topics::TopicSpec;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::CreateTopicsRequest) -> Outcome {
    let core = context.core.clone();
    Outcome::Deferred(Box::pin(async move {
        let specs = request
            .topics
            .into_iter()
            .map(|topic| TopicSpec {
                name: topic.name,
                partitions: (topic.partitions != 0).then_some(topic.partitions),
                overrides: overrides(topic.config.unwrap_or_default()),
            })
            .collect();
        // Err: the blocking task failed (logged); the client's request times out, as before.
        let created = core.create_topics(specs).await.ok()?;
        let topics = created
            .into_iter()
            .map(|(name, created)| topic_result(name, created.map(|_| ())))
            .collect();
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
        // Checked as at any create: the policy parses, the compaction settings are in range.
        cleanup_policy: config.cleanup_policy,
        min_cleanable_dirty_ratio: config.min_cleanable_dirty_ratio,
        min_compaction_lag_ms: config.min_compaction_lag_ms,
        max_compaction_lag_ms: config.max_compaction_lag_ms,
        delete_retention_ms: config.delete_retention_ms,
    }
}
