//! Metadata: the broker list and, per topic, its partitions with their offsets and the
//! topic's effective configuration. What each topic and partition reports is the core's
//! (`Core::metadata`); the broker list is this listener's (its advertised address).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::topics::TopicMetadata;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::MetadataRequest) -> Outcome {
    let broker_id = context.core.config.broker_id;
    let host = context
        .core
        .config
        .advertised_host
        .clone()
        .unwrap_or_else(|| context.advertised.ip().to_string());
    let brokers = vec![pb::BrokerInfo {
        id: broker_id,
        host,
        port: u32::from(context.advertised.port()),
    }];
    let topics = context
        .core
        .metadata(&request.topics)
        .into_iter()
        .map(|topic| describe(topic, broker_id))
        .collect();
    Outcome::Reply(pb::response::Body::Metadata(pb::MetadataResponse {
        brokers,
        topics,
    }))
}

fn describe(metadata: TopicMetadata, leader: u32) -> pb::TopicMetadata {
    let topic = match metadata.topic {
        Ok(topic) => topic,
        Err(error) => {
            let (code, message) = wire(error);
            return pb::TopicMetadata {
                name: metadata.name,
                error: code as i32,
                message,
                config: None,
                partitions: Vec::new(),
                topic_id: String::new(),
            };
        }
    };
    let config = &topic.log_config;
    pb::TopicMetadata {
        name: metadata.name,
        topic_id: topic.id().hyphenated().to_string(),
        error: ErrorCode::None as i32,
        message: String::new(),
        config: Some(pb::TopicConfig {
            retention_ms: Some(config.retention_ms),
            retention_bytes: Some(config.retention_bytes),
            segment_bytes: Some(config.segment_bytes),
            segment_ms: Some(config.segment_ms),
            flush: Some(config.flush.to_string()),
            index_interval_bytes: Some(config.index_interval_bytes),
            cleanup_policy: Some(config.cleanup_policy.to_string()),
            min_cleanable_dirty_ratio: Some(config.compaction.min_cleanable_dirty_ratio),
            min_compaction_lag_ms: Some(config.compaction.min_compaction_lag_ms),
            max_compaction_lag_ms: Some(config.compaction.max_compaction_lag_ms),
            delete_retention_ms: Some(config.compaction.delete_retention_ms),
        }),
        partitions: metadata
            .partitions
            .into_iter()
            .map(|partition| {
                let (code, message) = match partition.error {
                    None => (ErrorCode::None, String::new()),
                    Some(error) => wire(error),
                };
                pb::PartitionMetadata {
                    partition: partition.partition,
                    error: code as i32,
                    message,
                    leader,
                    log_start_offset: partition.log_start_offset,
                    high_watermark: partition.high_watermark,
                    cleaner: partition.cleaner.map(cleaner_status),
                }
            })
            .collect(),
    }
}

fn cleaner_status(status: crate::cleaner::CleanerStatus) -> pb::CleanerStatus {
    use crate::cleaner::CleanerState;
    pb::CleanerStatus {
        state: match status.state {
            CleanerState::Idle => "idle",
            CleanerState::Cleaning => "cleaning",
            CleanerState::Uncleanable => "uncleanable",
        }
        .to_owned(),
        error: status.error.unwrap_or_default(),
        dirty_bytes: status.dirty_bytes,
        dirty_ratio: status.dirty_ratio,
        last_cleaned_ms: status.last_cleaned_ms,
        erasures_pending: status.erasures_pending,
    }
}
