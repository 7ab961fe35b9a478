//! Metadata: the broker list and, per topic, its partitions with their offsets and the
//! topic's effective configuration.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::{unknown_topic, Outcome};
use crate::core::error::offline_message;
use crate::net::ListenerContext;
use crate::topics::{PartitionSlot, Topic};

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
    let topics = if request.topics.is_empty() {
        context
            .core
            .registry
            .list()
            .iter()
            .map(|topic| describe(topic, broker_id))
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|name| match context.core.registry.get(name) {
                Some(topic) => describe(&topic, broker_id),
                None => {
                    let (code, message) = match context.core.registry.unrecoverable_reason(name) {
                        // The reason names no paths; the broker log has them.
                        Some(reason) => (
                            ErrorCode::KafkaStorageError,
                            format!("topic {name:?} has data on disk that could not be recovered: {reason}"),
                        ),
                        None => unknown_topic(name),
                    };
                    pb::TopicMetadata {
                        name: name.clone(),
                        error: code as i32,
                        message,
                        config: None,
                        partitions: Vec::new(),
                        topic_id: String::new(),
                    }
                }
            })
            .collect()
    };
    Outcome::Reply(pb::response::Body::Metadata(pb::MetadataResponse {
        brokers,
        topics,
    }))
}

fn describe(topic: &Topic, leader: u32) -> pb::TopicMetadata {
    let config = &topic.log_config;
    pb::TopicMetadata {
        name: topic.record.name.clone(),
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
        }),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, slot)| match slot {
                PartitionSlot::Online(log) => pb::PartitionMetadata {
                    partition: index as u32,
                    error: ErrorCode::None as i32,
                    message: String::new(),
                    leader,
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                },
                PartitionSlot::Offline(reason) => pb::PartitionMetadata {
                    partition: index as u32,
                    error: ErrorCode::KafkaStorageError as i32,
                    message: offline_message(&topic.record.name, index, reason),
                    leader,
                    log_start_offset: -1,
                    high_watermark: -1,
                },
            })
            .collect(),
    }
}
