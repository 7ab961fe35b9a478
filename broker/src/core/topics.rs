//! Topic operations every front end calls: create, delete, alter (partitions, config), trim,
//! and metadata (each topic's partitions, offline ones with their error). The registry
//! (`topics`) owns the topics themselves and their rules (limits, config floors); this module
//! is what a request adds: the order of the steps of one request.

use std::sync::Arc;

use super::{blocking, Core, CoreError, ErrorCode};
use crate::clock::now_ms;
use crate::topics::{validate_topic_name, ConfigEntry, ConfigUpdate, PartitionSlot, Topic, TopicSpec};

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
    /// The cleaner's view (compacted topics, pending erasures, uncleanable partitions).
    pub cleaner: Option<crate::cleaner::CleanerStatus>,
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

    /// What creating `spec` would make, without making it (Kafka's `validate_only`): its
    /// partition count and config entries, or why it would be refused.
    pub(crate) fn check_create_topic(&self, spec: &TopicSpec) -> Result<(u32, Vec<ConfigEntry>), CoreError> {
        self.registry.check_create(spec)?;
        let entries = self.registry.would_be_config_entries(&spec.overrides)?;
        Ok((
            spec.partitions.unwrap_or(self.registry.default_partitions()),
            entries,
        ))
    }

    /// Deletes one topic. Blocking: it removes files and writes the metadata store.
    pub(crate) fn delete_topic(&self, name: &str) -> Result<(), CoreError> {
        self.registry.delete(name)?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
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
                    let deleted = core.delete_topic(&name);
                    (name, deleted)
                })
                .collect()
        })
        .await
    }

    /// Changes a topic's config (`validate_only`: checks without changing). Blocking: it
    /// writes the metadata store.
    pub(crate) fn alter_topic_config(
        &self,
        name: &str,
        update: &ConfigUpdate,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CoreError> {
        // The registry logs the change.
        Ok(self.registry.alter_config(name, update, validate_only)?)
    }

    /// Grows a topic to `count` partitions (only up). Blocking: it creates and syncs files
    /// and writes the metadata store.
    pub(crate) fn add_partitions(
        &self,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, CoreError> {
        // The registry logs the change.
        Ok(self.registry.add_partitions(name, count, validate_only)?)
    }

    /// Both changes of one request, all or nothing as far as checks go: the config is
    /// checked before any partition is added, so a refused change leaves the partition count
    /// alone too; then partitions, then the config. Blocking.
    pub(crate) fn alter_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        update: &ConfigUpdate,
        validate_only: bool,
    ) -> Result<(), CoreError> {
        let has_changes = !matches!(update, ConfigUpdate::Incremental(changes) if changes.is_empty());
        if has_changes {
            self.alter_topic_config(name, update, true)?;
        }
        if let Some(partitions) = partitions {
            self.add_partitions(name, partitions, validate_only)?;
        }
        if has_changes && !validate_only {
            self.alter_topic_config(name, update, false)?;
        }
        Ok(())
    }

    /// Advances a partition's log start to `before` (-1: the high watermark); the new log
    /// start. Blocking: it may delete segment files and writes the metadata store.
    pub(crate) fn trim(&self, name: &str, partition: u32, before: i64) -> Result<i64, CoreError> {
        Ok(self.registry.trim(name, partition, before, now_ms())?)
    }

    /// Of `names`, the topics a request would create on first use: `auto_create_topics` is on,
    /// and the topic does not exist, is validly named, and is not one whose data on disk
    /// could not be recovered (that one is reported, not replaced). Cheap: a front end asks
    /// first, and goes off the async workers only when there is something to create.
    pub(crate) fn topics_to_auto_create<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        if !self.registry.auto_create_topics() {
            return Vec::new();
        }
        let name_bytes_max = self.config.limits.topic_name_bytes_max;
        names
            .into_iter()
            .filter(|name| !name.is_empty() && validate_topic_name(name, name_bytes_max).is_ok())
            .filter(|name| {
                self.registry.get(name).is_none() && self.registry.unrecoverable_reason(name).is_none()
            })
            .map(str::to_owned)
            .collect()
    }

    /// Creates each of `names` with the default settings unless it exists (see
    /// `topics_to_auto_create`). A topic that cannot be created is logged at WARN and left to
    /// the lookup that follows, which reports it as it finds it. Blocking.
    pub(crate) fn auto_create_topics(&self, names: &[String]) {
        for name in names {
            if let Err(error) = self.registry.get_or_auto_create(name, now_ms()) {
                tracing::warn!(topic = %name, %error, "could not auto-create a topic");
            }
        }
    }

    /// The topic with this persistent id, if any.
    pub(crate) fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        (!id.is_nil()).then(|| self.registry.get_by_id(id)).flatten()
    }

    /// The topics named (every topic, sorted by name, when `names` is empty). A name that
    /// is no topic is INVALID_TOPIC when it cannot be one, KAFKA_STORAGE_ERROR when its data on
    /// disk could not be recovered, UNKNOWN_TOPIC_OR_PARTITION otherwise.
    pub(crate) fn metadata(&self, names: &[String]) -> Vec<TopicMetadata> {
        if names.is_empty() {
            return self
                .registry
                .list()
                .into_iter()
                .map(|topic| self.describe(topic))
                .collect();
        }
        names
            .iter()
            .map(|name| match self.registry.get(name) {
                Some(topic) => self.describe(topic),
                None => {
                    let name_bytes_max = self.config.limits.topic_name_bytes_max;
                    let error = match self.registry.unrecoverable_reason(name) {
                        _ if validate_topic_name(name, name_bytes_max).is_err() => CoreError::new(
                            ErrorCode::InvalidTopic,
                            format!("{name:?} is not a valid topic name"),
                        ),
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

impl Core {
    fn describe(&self, topic: Arc<Topic>) -> TopicMetadata {
        describe(topic, &self.cleaner, crate::clock::now_ms())
    }
}

fn describe(topic: Arc<Topic>, cleaner: &crate::cleaner::Cleaner, now_ms: i64) -> TopicMetadata {
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
                    cleaner: cleaner.status(&topic, partition, log, now_ms),
                },
                PartitionSlot::Offline(reason) => PartitionMetadata {
                    partition,
                    error: Some(CoreError::offline_partition(&topic.record.name, index, reason)),
                    log_start_offset: -1,
                    high_watermark: -1,
                    cleaner: None,
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
