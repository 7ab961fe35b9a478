//! Topic operations every front end calls: create, delete, and metadata (each topic's
//! partitions, offline ones with their error). The registry (`topics`) owns the topics themselves; this module is what a request adds.

use std::sync::Arc;

use super::{blocking, Core, CoreError, ErrorCode};
use crate::clock::now_ms;
use crate::topics::{PartitionSlot, Topic, TopicSpec};

/// A topic as Metadata shows it.
#[derive(Debug, Clone)]
pub(crate) struct TopicMetadata {
    pub name: String,
    /// The topic, or why it cannot be described (unknown, or unrecoverable data on disk).
    pub topic: Result<Arc<Topic>, CoreError>,
    /// Empty when `topic` is an error.
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone)]
pub(crate) struct PartitionMetadata {
    pub partition: u32,
    /// Set for an offline partition (KAFKA_STORAGE_ERROR); its offsets are then -1.
    pub error: Option<CoreError>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl Core {
    /// Creates each topic in order, off the async workers; one outcome per topic.
    pub(crate) async fn create_topics(
        self: &Arc<Self>,
        specs: Vec<TopicSpec>,
    ) -> Result<Vec<(String, Result<Arc<Topic>, CoreError>)>, CoreError> {
        let core = self.clone();
        blocking(move || {
            specs
                .into_iter()
                .map(|spec| {
                    let name = spec.name.clone();
                    let created = core.create_topic(spec);
                    (name, created)
                })
                .collect()
        })
        .await
    }

    /// Creates one topic. Blocking: it creates and syncs files and writes the metadata store.
    pub(crate) fn create_topic(&self, spec: TopicSpec) -> Result<Arc<Topic>, CoreError> {
        let name = spec.name.clone();
        // The registry holds a client's settings to the floors (`topics::config`).
        let topic = self.registry.create(spec, now_ms())?;
        tracing::info!(topic = %name, partitions = topic.partitions.len(), "topic created");
        Ok(topic)
    }

    /// Deletes each topic in order, off the async workers; one outcome per topic.
    pub(crate) async fn delete_topics(
        self: &Arc<Self>,
        names: Vec<String>,
    ) -> Result<Vec<(String, Result<(), CoreError>)>, CoreError> {
        let core = self.clone();
        blocking(move || {
            names
                .into_iter()
                .map(|name| {
                    let deleted = core.registry.delete(&name);
                    if deleted.is_ok() {
                        tracing::info!(topic = %name, "topic deleted");
                    }
                    (name, deleted.map_err(CoreError::from))
                })
                .collect()
        })
        .await
    }

    /// The topics named (every topic, sorted by name, when `names` is empty).
    pub(crate) fn metadata(&self, names: &[String]) -> Vec<TopicMetadata> {
        if names.is_empty() {
            return self.registry.list().into_iter().map(describe).collect();
        }
        names
            .iter()
            .map(|name| match self.registry.get(name) {
                Some(topic) => describe(topic),
                None => {
                    let error = match self.registry.unrecoverable_reason(name) {
                        // The reason names no paths; the broker log has them.
                        Some(reason) => CoreError::new(
                            ErrorCode::KafkaStorageError,
                            format!("topic {name:?} has data on disk that could not be recovered: {reason}"),
                        ),
                        None => CoreError::unknown_topic(name),
                    };
                    TopicMetadata {
                        name: name.clone(),
                        topic: Err(error),
                        partitions: Vec::new(),
                    }
                }
            })
            .collect()
    }
}

fn describe(topic: Arc<Topic>) -> TopicMetadata {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, slot)| {
            // Bounded by partitions_per_topic_max, a u32.
            let partition = u32::try_from(index).unwrap_or(u32::MAX);
            match slot {
                PartitionSlot::Online(log) => PartitionMetadata {
                    partition,
                    error: None,
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                },
                PartitionSlot::Offline(reason) => PartitionMetadata {
                    partition,
                    error: Some(CoreError::offline_partition(&topic.record.name, index, reason)),
                    log_start_offset: -1,
                    high_watermark: -1,
                },
            }
        })
        .collect();
    TopicMetadata {
        name: topic.record.name.clone(),
        topic: Ok(topic),
        partitions,
    }
}
