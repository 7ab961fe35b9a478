//! Changes to an existing topic: more partitions, a new configuration applied to its open
//! partitions, an advanced log start on one partition; and creating unknown topics on use
//! (`auto_create_topics`).
//!
//! Crash safety follows create's rule that the directories are the truth and the metadata
//! store never decides to delete data. A change writes the manifest (atomically: its commit
//! point), then the record, then swaps the topic in the map. Added partitions get their
//! directories and open (segment files synced) before the manifest counts them, so a crash
//! leaves the old count (the new directories are unused, never served, and reused by the next
//! add) or the new count (the next start prefers the manifest over a stale record).

use std::sync::Arc;

use super::config::{self, ConfigChange};
use super::{create_dir, manifest, manifest_io, sync_dir, PartitionSlot, Topic, TopicRegistry, TopicSpec};
use crate::error::TopicError;
use crate::metadata::{TopicOverrides, TopicRecord};

/// How a request changes a topic's configuration.
#[derive(Debug, Clone)]
pub enum ConfigUpdate {
    /// Each change applies to the topic's current overrides (Kafka's IncrementalAlterConfigs,
    /// `tidelog topic alter --config`).
    Incremental(Vec<ConfigChange>),
    /// These `name = value` pairs become the topic's whole configuration; every setting not
    /// named returns to the broker default (Kafka's AlterConfigs), except the flush policy,
    /// which changes only when named (and cannot change on a served topic).
    Replace(Vec<(String, Option<String>)>),
}

impl TopicRegistry {
    /// Grows `name` to `count` partitions (only up; `partitions_per_topic_max`, `partitions_max`
    /// and the descriptor budget hold as at create). With `validate_only` nothing changes.
    /// Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`; `InvalidPartitionChange` for a count not above the current one or a
    /// topic with offline partitions; the limits' errors; I/O errors.
    pub fn add_partitions(
        &self,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_owned()))?;
        let current = topic.record.partitions;
        if count <= current {
            return Err(TopicError::InvalidPartitionChange(format!(
                "topic {name:?} has {current} partitions; a partition count can only grow (asked for {count})"
            )));
        }
        if count > self.limits.partitions_per_topic_max {
            return Err(TopicError::InvalidPartitions {
                count,
                max: self.limits.partitions_per_topic_max,
            });
        }
        if let Some((index, _)) = topic
            .partitions
            .iter()
            .enumerate()
            .find(|(_, slot)| matches!(slot, PartitionSlot::Offline(_)))
        {
            return Err(TopicError::InvalidPartitionChange(format!(
                "topic {name:?} has an offline partition ({index}); partitions are added only to a topic served whole"
            )));
        }
        {
            let map = self.read_map();
            let existing = map.values().map(|topic| topic.partitions.len()).sum();
            self.resources
                .budget
                .check_partitions(&self.limits, existing, (count - current) as usize)?;
        }
        if validate_only {
            return Ok(topic);
        }
        let dir = self.topics_dir.join(name);
        for partition in current..count {
            // An existing directory is an earlier add that a crash interrupted before its
            // manifest: never served, so reusing it (whatever it holds) loses nothing.
            create_dir(&dir.join(partition.to_string()))?;
        }
        sync_dir(&dir)?;
        let added: Vec<u32> = (current..count).collect();
        let opened =
            super::parallel::map_bounded(&added, self.limits.partition_io_threads_max, |partition| {
                let partition_dir = dir.join(partition.to_string());
                crate::storage::PartitionLog::open_with_disk(
                    &partition_dir,
                    topic.log_config.clone(),
                    Arc::clone(&self.resources.disk),
                )
                .map(Arc::new)
            });
        let mut logs = Vec::with_capacity(opened.len());
        for log in opened {
            // The directories stay: unused until the next add, which reuses them.
            logs.push(log?);
        }
        let record = TopicRecord {
            partitions: count,
            ..topic.record.clone()
        };
        let mut partitions = topic.partitions.clone();
        partitions.extend(logs.into_iter().map(PartitionSlot::Online));
        let updated = self.commit(&topic, record, topic.log_config.clone(), partitions)?;
        tracing::info!(topic = %name, from = current, to = count, "partitions added");
        Ok(updated)
    }

    /// Changes `name`'s configuration, validated as at create (the changed settings held to
    /// the floors), persisted, then applied to its open partitions (later appends roll by it,
    /// the next maintenance pass retains by it). The flush policy of a served topic cannot
    /// change. With `validate_only` nothing changes. Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`; `InvalidConfig`; I/O errors.
    pub fn alter_config(
        &self,
        name: &str,
        update: &ConfigUpdate,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_owned()))?;
        let before = &topic.record.overrides;
        let overrides = match update {
            ConfigUpdate::Incremental(changes) => {
                let mut overrides = before.clone();
                for change in changes {
                    config::apply(&mut overrides, change, &self.limits)?;
                }
                overrides
            }
            ConfigUpdate::Replace(pairs) => {
                let mut overrides = config::from_pairs(
                    pairs
                        .iter()
                        .map(|(name, value)| (name.as_str(), value.as_deref())),
                    &self.limits,
                )?;
                // The flush policy is set at create and Kafka clients do not know it: a
                // replacement that does not name it keeps it.
                if !pairs.iter().any(|(name, _)| name == config::FLUSH_POLICY) {
                    overrides.flush.clone_from(&before.flush);
                }
                overrides
            }
        };
        config::check_floors(&config::changed(before, &overrides), &self.limits)?;
        let log_config = self.log_config(&overrides)?;
        if log_config.flush != topic.log_config.flush {
            return Err(TopicError::InvalidConfig(format!(
                "the flush policy of topic {name:?} is {} and cannot change while it is served",
                topic.log_config.flush
            )));
        }
        if validate_only || overrides == *before {
            return Ok(topic);
        }
        let record = TopicRecord {
            overrides,
            ..topic.record.clone()
        };
        let updated = self.commit(&topic, record, log_config.clone(), topic.partitions.clone())?;
        for (partition, log) in updated.online_partitions() {
            if let Err(error) = log.alter_config(log_config.clone()) {
                // Persisted already: the partition runs with it from its next open.
                tracing::warn!(topic = %name, partition, %error, "partition kept its old configuration until it reopens");
            }
        }
        tracing::info!(topic = %name, overrides = ?updated.record.overrides, "topic configuration changed");
        Ok(updated)
    }

    /// Advances `partition`'s log start to `before` (`-1`: its high watermark), as Kafka's
    /// DeleteRecords: offsets below it become unreadable, whole segments below it are deleted,
    /// and a restart keeps it. Returns the log start now in force. Blocking.
    ///
    /// # Errors
    /// `UnknownTopic`, `UnknownPartition`, `PartitionOffline`; `Storage(OffsetOutOfRange)`
    /// for a target above the high watermark.
    pub fn trim(&self, name: &str, partition: u32, before: i64, now_ms: i64) -> Result<i64, TopicError> {
        let topic = self
            .get(name)
            .ok_or_else(|| TopicError::UnknownTopic(name.to_owned()))?;
        let log = match topic.slot(partition) {
            Some(PartitionSlot::Online(log)) => Arc::clone(log),
            Some(PartitionSlot::Offline(reason)) => {
                return Err(TopicError::PartitionOffline {
                    topic: name.to_owned(),
                    partition,
                    reason: reason.to_string(),
                })
            }
            None => {
                return Err(TopicError::UnknownPartition {
                    topic: name.to_owned(),
                    partition,
                })
            }
        };
        let log_start = log.advance_log_start(before, now_ms)?;
        tracing::info!(topic = %name, partition, log_start, "log start advanced");
        Ok(log_start)
    }

    /// The topic `name`, created with the broker's default partition count and configuration
    /// if it does not exist and `auto_create_topics` is on (Kafka's Metadata with
    /// `allow_auto_topic_creation`, and Produce). `Ok(None)`: unknown and not created.
    /// Blocking when it creates.
    ///
    /// # Errors
    /// As [`create`](Self::create) (an invalid name is `InvalidName`).
    pub fn get_or_auto_create(&self, name: &str, now_ms: i64) -> Result<Option<Arc<Topic>>, TopicError> {
        if let Some(topic) = self.get(name) {
            return Ok(Some(topic));
        }
        if !self.auto_create_topics {
            return Ok(None);
        }
        let spec = TopicSpec {
            name: name.to_owned(),
            partitions: None,
            overrides: TopicOverrides::default(),
        };
        match self.create(spec, now_ms) {
            Ok(topic) => {
                tracing::info!(topic = %name, partitions = topic.partitions.len(), "topic created on first use (auto_create_topics)");
                Ok(Some(topic))
            }
            // Another request created it meanwhile.
            Err(TopicError::AlreadyExists(_)) => Ok(self.get(name)),
            Err(error) => Err(error),
        }
    }

    /// Whether unknown topics are created on use.
    pub fn auto_create_topics(&self) -> bool {
        self.auto_create_topics
    }

    /// The manifest (the commit point), then the record, then the map. A record that cannot
    /// be written is logged, not returned: the change has happened (the manifest says so and
    /// the next start rewrites the record from it), so undoing it in memory would serve less
    /// than the disk holds.
    fn commit(
        &self,
        topic: &Topic,
        record: TopicRecord,
        log_config: crate::storage::LogConfig,
        partitions: Vec<PartitionSlot>,
    ) -> Result<Arc<Topic>, TopicError> {
        let dir = self.topics_dir.join(&record.name);
        manifest::write(&dir, &record).map_err(|error| manifest_io(&dir, error))?;
        if let Err(error) = self.store.put_topic(&record) {
            tracing::error!(topic = %record.name, %error, "topic changed but its metadata record was not updated; the next start rebuilds it from the manifest");
        }
        let updated = Arc::new(Topic {
            id: topic.id,
            record,
            log_config,
            partitions,
        });
        self.write_map()
            .insert(updated.record.name.clone(), Arc::clone(&updated));
        Ok(updated)
    }
}
