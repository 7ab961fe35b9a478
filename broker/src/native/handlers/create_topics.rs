//! CreateTopics: validate and create each topic, reporting per topic.

use std::sync::Arc;

use tidelog_proto::pb;

use super::{blocking, topic_result, Outcome};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::error::TopicError;
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
                    let created = check_floors(&spec.overrides, &context.core.config.limits)
                        .and_then(|()| context.core.registry.create(spec, now_ms()));
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

/// Refuses settings a client could use to make the broker roll a segment (three new files)
/// every few requests. Only what the client asks for is held to the floors: the broker's own
/// defaults are the operator's choice.
fn check_floors(overrides: &TopicOverrides, limits: &Limits) -> Result<(), TopicError> {
    if let Some(bytes) = overrides.segment_bytes {
        if bytes < limits.segment_bytes_min {
            return Err(TopicError::InvalidConfig(format!(
                "segment_bytes {bytes} is below the broker's minimum of {} (limits.segment_bytes_min)",
                limits.segment_bytes_min
            )));
        }
    }
    if let Some(ms) = overrides.segment_ms {
        if ms < limits.segment_ms_min {
            return Err(TopicError::InvalidConfig(format!(
                "segment_ms {ms} is below the broker's minimum of {} (limits.segment_ms_min)",
                limits.segment_ms_min
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_settings_below_the_floors_are_refused_and_others_pass() {
        let limits = Limits::default();
        let with = |segment_bytes, segment_ms| TopicOverrides {
            segment_bytes,
            segment_ms,
            ..TopicOverrides::default()
        };
        assert!(check_floors(&with(None, None), &limits).is_ok());
        assert!(check_floors(
            &with(Some(limits.segment_bytes_min), Some(limits.segment_ms_min)),
            &limits
        )
        .is_ok());
        assert!(matches!(
            check_floors(&with(None, Some(1)), &limits),
            Err(TopicError::InvalidConfig(_))
        ));
        assert!(matches!(
            check_floors(&with(Some(limits.segment_bytes_min - 1), None), &limits),
            Err(TopicError::InvalidConfig(_))
        ));
    }
}
