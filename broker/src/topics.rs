//! The topic registry: which topics exist, their effective configuration and their open
//! partition logs. Owns the `topics/`, `creating/` and `deleting/` trees of the data directory,
//! each topic's manifest and the metadata store's topic records; knows nothing of the network.
//!
//! Layout: `<data_dir>/topics/<topic>/topic.manifest` describes the topic (`manifest`) and
//! `<data_dir>/topics/<topic>/<partition>/` holds one partition's segments. The directories are
//! the truth about data; the metadata store only mirrors them (`reconcile` rebuilds a lost or
//! damaged record from the manifest at start). So the store never decides to delete records:
//! * a create builds the topic under `creating/<topic id>/`, renames it into `topics/` and only
//!   then writes the record; a create of a name whose directory exists is refused;
//! * a delete renames `topics/<topic>` to `deleting/<topic id>` (a short name, whatever the
//!   topic name's length) and only then removes the record; a start finishes both trees.

mod alter;
pub mod config;
mod id;
mod manifest;
mod parallel;
mod reconcile;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use alter::ConfigUpdate;
pub use config::{ConfigChange, ConfigEntry, ConfigKind, ConfigSource};

use crate::config::{BrokerConfig, Limits, LogDefaults};
use crate::error::TopicError;
use crate::metadata::{MetadataStore, TopicOverrides, TopicRecord};
use crate::resources::StorageResources;
use crate::storage::{FlushPolicy, LogConfig, PartitionLog};

/// What clients are told about a partition that could not be opened; the broker log (ERROR)
/// has the details, which name files of the data directory.
const OFFLINE_OPEN_FAILED: &str = "its files could not be opened (see the broker log)";

/// One topic: its persisted record, the configuration its logs run with, and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub record: TopicRecord,
    /// `record.topic_id` parsed; the registry gives every topic a v4 UUID before serving it.
    id: uuid::Uuid,
    pub log_config: LogConfig,
    /// One slot per partition, by index.
    pub partitions: Vec<PartitionSlot>,
}

/// A partition is served, or offline on its own (the rest of the broker serves on).
#[derive(Debug, Clone)]
pub enum PartitionSlot {
    Online(Arc<PartitionLog>),
    /// Why it is offline, in words fit for clients (no paths).
    Offline(Arc<str>),
}

impl PartitionSlot {
    pub fn log(&self) -> Option<&Arc<PartitionLog>> {
        match self {
            Self::Online(log) => Some(log),
            Self::Offline(_) => None,
        }
    }
}

impl Topic {
    /// The topic's persistent id (Kafka's topic id): random at create, kept across restarts
    /// and metadata loss (the manifest has it), new for a new topic of the same name.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// The partition's log, if it exists and is online.
    pub fn partition(&self, partition: u32) -> Option<&Arc<PartitionLog>> {
        self.slot(partition).and_then(PartitionSlot::log)
    }

    pub fn slot(&self, partition: u32) -> Option<&PartitionSlot> {
        self.partitions.get(partition as usize)
    }

    /// Online partitions with their indexes.
    pub fn online_partitions(&self) -> impl Iterator<Item = (usize, &Arc<PartitionLog>)> {
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.log().map(|log| (index, log)))
    }
}

/// What a client asks for when creating a topic.
#[derive(Debug, Clone, Default)]
pub struct TopicSpec {
    pub name: String,
    /// `None`: the broker's default partition count.
    pub partitions: Option<u32>,
    pub overrides: TopicOverrides,
}

/// Topics by name. Lookups take a read lock for a map access only; creation and deletion are
/// serialised by `admin` and do their file work outside the map lock.
#[derive(Debug)]
pub struct TopicRegistry {
    topics_dir: PathBuf,
    creating_dir: PathBuf,
    deleting_dir: PathBuf,
    defaults: LogDefaults,
    flush: FlushPolicy,
    limits: Limits,
    store: Box<dyn MetadataStore>,
    /// The descriptor budget and the file cache every partition opens its files through.
    resources: StorageResources,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Names with a directory on disk that could not be recovered (no readable manifest, no
    /// record, no partition directory): a create of one is refused, a delete removes it.
    unrecoverable: RwLock<HashMap<String, String>>,
    admin: std::sync::Mutex<()>,
    /// `auto_create_topics`: Kafka's Metadata and Produce create unknown topics.
    auto_create_topics: bool,
}

impl TopicRegistry {
    /// Reconciles the metadata store with the directories and opens every partition, in
    /// parallel, through the file cache of `resources`. A partition that cannot open is offline
    /// on its own. Blocking: call it off the async runtime.
    pub fn open(
        config: &BrokerConfig,
        store: Box<dyn MetadataStore>,
        resources: StorageResources,
    ) -> Result<Self, TopicError> {
        let topics_dir = config.data_dir.join("topics");
        let creating_dir = config.data_dir.join("creating");
        let deleting_dir = config.data_dir.join("deleting");
        for dir in [&topics_dir, &creating_dir, &deleting_dir] {
            create_dir(dir)?;
        }
        sync_dir(&config.data_dir)?;
        let registry = Self {
            topics_dir,
            creating_dir,
            deleting_dir,
            defaults: config.log.clone(),
            flush: config.flush,
            limits: config.limits.clone(),
            store,
            resources,
            topics: RwLock::new(HashMap::new()),
            unrecoverable: RwLock::new(HashMap::new()),
            admin: std::sync::Mutex::new(()),
            auto_create_topics: config.auto_create_topics,
        };
        let plan = reconcile::reconcile(&registry)?;
        let started = std::time::Instant::now();
        let mut opened = HashMap::new();
        let topics = registry.open_topics(plan.topics);
        let (mut online, mut offline) = (0usize, 0usize);
        for topic in topics {
            for (index, slot) in topic.partitions.iter().enumerate() {
                match slot {
                    PartitionSlot::Online(log) => {
                        online += 1;
                        let report = log.recovery_report();
                        tracing::debug!(topic = %topic.record.name, partition = index, ?report, "partition opened");
                    }
                    PartitionSlot::Offline(_) => offline += 1,
                }
            }
            opened.insert(topic.record.name.clone(), Arc::new(topic));
        }
        tracing::info!(
            topics = opened.len(),
            partitions = online,
            offline_partitions = offline,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partitions opened"
        );
        let partitions: usize = opened.values().map(|topic| topic.partitions.len()).sum();
        if let Err(error) = registry
            .resources
            .budget
            .check_partitions(&registry.limits, partitions, 0)
        {
            // They exist and must serve; the file cache shrinks to its minimum.
            tracing::error!(%error, "the partitions on disk exceed the broker's limits; no more can be created");
        }
        *registry.write_map() = opened;
        *registry
            .unrecoverable
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = plan.unrecoverable;
        Ok(registry)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_map().get(name).cloned()
    }

    /// The topic with this id (Kafka's requests by topic id). A scan: the map holds at most
    /// `limits.topics_max` topics and lookups by id are admin and metadata requests.
    pub fn get_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.read_map().values().find(|topic| topic.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<Arc<Topic>> = self.read_map().values().cloned().collect();
        topics.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        topics
    }

    /// Checks a create as [`create`](Self::create) would, changing nothing (Kafka's
    /// `validate_only`). Blocking (it looks at the directory).
    pub fn check_create(&self, spec: &TopicSpec) -> Result<(), TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.check_create_locked(spec).map(drop)
    }

    /// Every check of a create, under the admin lock; returns the partition count and the log
    /// configuration the topic would get.
    fn check_create_locked(&self, spec: &TopicSpec) -> Result<(u32, LogConfig), TopicError> {
        validate_topic_name(&spec.name, self.limits.topic_name_bytes_max)?;
        let partitions = spec.partitions.unwrap_or(self.defaults.partitions);
        if partitions == 0 || partitions > self.limits.partitions_per_topic_max {
            return Err(TopicError::InvalidPartitions {
                count: partitions,
                max: self.limits.partitions_per_topic_max,
            });
        }
        {
            let map = self.read_map();
            if map.contains_key(&spec.name) {
                return Err(TopicError::AlreadyExists(spec.name.clone()));
            }
            if map.len() >= self.limits.topics_max {
                return Err(TopicError::TooManyTopics(self.limits.topics_max));
            }
            let existing = map.values().map(|topic| topic.partitions.len()).sum();
            self.resources
                .budget
                .check_partitions(&self.limits, existing, partitions as usize)?;
        }
        if let Some(reason) = self.unrecoverable_reason(&spec.name) {
            return Err(TopicError::DataOnDisk {
                name: spec.name.clone(),
                reason,
            });
        }
        let dir = self.topics_dir.join(&spec.name);
        if fs::symlink_metadata(&dir).is_ok() {
            // Not in the registry yet on disk: put there while we run, or left by something
            // we do not understand. Its bytes may be someone's records.
            return Err(TopicError::DataOnDisk {
                name: spec.name.clone(),
                reason: "a directory of that name is on disk but was not there at start".into(),
            });
        }
        // Checks the overrides before anything is written.
        config::check_floors(&spec.overrides, &self.limits)?;
        let log_config = self.log_config(&spec.overrides)?;
        Ok((partitions, log_config))
    }

    /// Creates a topic: validates, builds its directory (partitions and manifest, synced) under
    /// `creating/`, renames it into `topics/`, opens the partitions, and only then writes the
    /// record. A name whose directory is already on disk is refused, never moved aside.
    /// Blocking.
    pub fn create(&self, spec: TopicSpec, now_ms: i64) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (partitions, log_config) = self.check_create_locked(&spec)?;
        let record = TopicRecord {
            name: spec.name,
            topic_id: id::new_topic_id(),
            partitions,
            created_ms: now_ms,
            overrides: spec.overrides,
        };
        self.build_topic_dir(&record)?;
        let slots = self.open_new_partitions(&record, &log_config);
        let mut logs = Vec::with_capacity(slots.len());
        let mut failure = None;
        for slot in slots {
            match slot {
                Ok(log) => logs.push(log),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        let written = match failure {
            Some(error) => Err(error),
            None => self.store.put_topic(&record).map_err(TopicError::from),
        };
        if let Err(error) = written {
            // Nothing was acknowledged in the new partitions: take the directory back so a
            // retry starts clean (and the next start does not recover a topic never created).
            // The logs are dropped, not closed: a checkpoint of files about to go is wasted
            // fsyncs, and under descriptor exhaustion the next create should not wait for them.
            drop(logs);
            if let Err(undo) = self
                .move_to_deleting(&record)
                .and_then(|moved| remove_tree(&moved))
            {
                tracing::error!(topic = %record.name, %undo, "could not remove the directory of a topic that failed to create; the next start recovers it from its manifest");
            }
            return Err(error);
        }
        let topic = Arc::new(Topic {
            id: topic_uuid(&record),
            record,
            log_config,
            partitions: logs.into_iter().map(PartitionSlot::Online).collect(),
        });
        self.write_map().insert(topic.record.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: moves its directory into `deleting/` (durably), then forgets the record,
    /// then removes the files. Requests already holding one of its partitions finish against
    /// the unlinked files. Also removes a directory that could not be recovered at start.
    /// Blocking.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = match self.read_map().get(name) {
            Some(topic) => topic.record.clone(),
            None if self.unrecoverable_reason(name).is_some() => TopicRecord {
                name: name.to_owned(),
                topic_id: id::new_topic_id(),
                partitions: 0,
                created_ms: 0,
                overrides: TopicOverrides::default(),
            },
            None => return Err(TopicError::UnknownTopic(name.to_owned())),
        };
        let moved = if fs::symlink_metadata(self.topics_dir.join(name)).is_ok() {
            Some(self.move_to_deleting(&record)?)
        } else {
            // Its directory was already gone at start (the partitions were offline).
            None
        };
        self.write_map().remove(name);
        self.unrecoverable
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
        // The data has moved: from here a crash leaves `deleting/<id>`, which the next start
        // finishes, record included.
        self.store.delete_topic(name)?;
        if let Some(moved) = moved {
            // The delete has happened (the name is free); a failure here only leaves files the
            // next start removes, so it is not the client's error.
            if let Err(error) = remove_tree(&moved) {
                tracing::warn!(topic = %name, %error, "deleted topic's files not all removed; the next start finishes");
            }
        }
        Ok(())
    }

    /// Syncs every partition and writes its clean-shutdown checkpoint, in parallel.
    pub fn close_all(&self) -> Vec<(String, TopicError)> {
        let mut jobs = Vec::new();
        for topic in self.list() {
            for (index, log) in topic.online_partitions() {
                jobs.push((topic.record.name.clone(), index, log.clone()));
            }
        }
        let started = std::time::Instant::now();
        let results = parallel::map_bounded(&jobs, self.limits.partition_io_threads_max, |(_, _, log)| {
            log.close()
        });
        let mut failures = Vec::new();
        for ((topic, partition, _), result) in jobs.into_iter().zip(results) {
            if let Err(error) = result {
                tracing::error!(%topic, partition, %error, "partition not closed cleanly; it will be recovered at next start");
                failures.push((topic, error.into()));
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partitions closed"
        );
        failures
    }

    /// The effective log configuration: the topic's overrides over the broker defaults.
    pub fn log_config(&self, overrides: &TopicOverrides) -> Result<LogConfig, TopicError> {
        let flush = match &overrides.flush {
            Some(text) => text.parse().map_err(TopicError::InvalidConfig)?,
            None => self.flush,
        };
        let cleanup_policy = match &overrides.cleanup_policy {
            Some(text) => text.parse().map_err(TopicError::InvalidConfig)?,
            None => self.defaults.cleanup_policy,
        };
        let config = LogConfig {
            segment_bytes: overrides.segment_bytes.unwrap_or(self.defaults.segment_bytes),
            segment_ms: overrides.segment_ms.unwrap_or(self.defaults.segment_ms),
            retention_ms: overrides.retention_ms.unwrap_or(self.defaults.retention_ms),
            retention_bytes: overrides.retention_bytes.unwrap_or(self.defaults.retention_bytes),
            index_interval_bytes: overrides
                .index_interval_bytes
                .unwrap_or(self.defaults.index_interval_bytes),
            flush,
            preallocate_bytes: self.defaults.preallocate_bytes,
            preallocate_sync_bytes_max: self.defaults.preallocate_sync_bytes_max,
            producer_limits: crate::storage::ProducerLimits {
                producers_max: self.limits.producers_per_partition_max,
                producer_idle_ms: self.limits.producer_state_expiry_ms,
            },
            key_index_active_bytes_max: self.limits.key_index_active_bytes_max,
            key_hash: crate::storage::KeyHash::DEFAULT,
            decompressed_bytes_max: self.limits.batch_decompressed_bytes_max,
            cleanup_policy,
            compaction: crate::storage::CompactionConfig {
                min_cleanable_dirty_ratio: overrides
                    .min_cleanable_dirty_ratio
                    .unwrap_or(self.defaults.min_cleanable_dirty_ratio),
                min_compaction_lag_ms: overrides
                    .min_compaction_lag_ms
                    .unwrap_or(self.defaults.min_compaction_lag_ms),
                max_compaction_lag_ms: overrides
                    .max_compaction_lag_ms
                    .unwrap_or(self.defaults.max_compaction_lag_ms),
                delete_retention_ms: overrides
                    .delete_retention_ms
                    .unwrap_or(self.defaults.delete_retention_ms),
            },
            stream_marks_per_partition_max: self.limits.stream_marks_per_partition_max,
        };
        config.compaction.validate().map_err(TopicError::InvalidConfig)?;
        if config.segment_bytes < self.limits.batch_bytes_max as u64 {
            return Err(TopicError::InvalidConfig(format!(
                "segment_bytes {} is smaller than the largest batch the broker accepts ({} bytes)",
                config.segment_bytes, self.limits.batch_bytes_max
            )));
        }
        if config.segment_ms <= 0 {
            return Err(TopicError::InvalidConfig("segment_ms must be positive".into()));
        }
        if config.retention_ms < -1 || config.retention_ms == 0 {
            return Err(TopicError::InvalidConfig(
                "retention_ms must be positive or -1 (forever)".into(),
            ));
        }
        if config.retention_bytes < -1 || config.retention_bytes == 0 {
            return Err(TopicError::InvalidConfig(
                "retention_bytes must be positive or -1 (unlimited)".into(),
            ));
        }
        if config.index_interval_bytes == 0 {
            return Err(TopicError::InvalidConfig(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        Ok(config)
    }

    /// A topic's effective configuration as named entries (Kafka's config names).
    pub fn config_entries(&self, topic: &Topic) -> Vec<ConfigEntry> {
        config::topic_entries(
            &topic.record.overrides,
            &topic.log_config,
            &self.defaults,
            self.flush,
            &self.limits,
        )
    }

    /// The entries a topic created with `overrides` would have (a validate-only create).
    pub fn would_be_config_entries(
        &self,
        overrides: &TopicOverrides,
    ) -> Result<Vec<ConfigEntry>, TopicError> {
        let log_config = self.log_config(overrides)?;
        Ok(config::topic_entries(
            overrides,
            &log_config,
            &self.defaults,
            self.flush,
            &self.limits,
        ))
    }

    /// The broker's settings admin clients may ask about, as named entries.
    pub fn broker_config_entries(&self, broker_id: u32) -> Vec<ConfigEntry> {
        config::broker_entries(
            &self.defaults,
            self.flush,
            &self.limits,
            broker_id,
            self.auto_create_topics,
        )
    }

    /// The partition count a create without one gets.
    pub fn default_partitions(&self) -> u32 {
        self.defaults.partitions
    }

    /// Why a create of `name` is refused although no topic of that name is served: its
    /// directory is on disk but could not be recovered at start.
    pub fn unrecoverable_reason(&self, name: &str) -> Option<String> {
        self.unrecoverable
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    /// Builds `creating/<id>/` with its partition directories and manifest, syncs it and
    /// renames it to `topics/<name>`: the topic's directory appears whole or not at all.
    fn build_topic_dir(&self, record: &TopicRecord) -> Result<(), TopicError> {
        let staging = self.creating_dir.join(&record.topic_id);
        create_dir(&staging)?;
        for partition in 0..record.partitions {
            create_dir(&staging.join(partition.to_string()))?;
        }
        // Writes the manifest and fsyncs the staging directory, which makes the partition
        // directories' names durable too: one directory sync for all of them.
        manifest::write(&staging, record).map_err(|error| manifest_io(&staging, error))?;
        let dir = self.topics_dir.join(&record.name);
        let renamed = fs::rename(&staging, &dir).map_err(|source| TopicError::Io {
            context: format!("moving {} to {}", staging.display(), dir.display()),
            source,
        });
        if let Err(error) = renamed {
            let _ = remove_tree(&staging);
            return Err(error);
        }
        sync_dir(&self.topics_dir)?;
        sync_dir(&self.creating_dir)
    }

    fn open_topics(&self, plans: Vec<reconcile::TopicPlan>) -> Vec<Topic> {
        // One pool over every partition of every topic, so 10 topics of 1,000 partitions and
        // 1,000 topics of 10 open equally fast.
        let mut jobs = Vec::new();
        for (topic_index, plan) in plans.iter().enumerate() {
            if plan.offline.is_none() {
                for partition in 0..plan.record.partitions {
                    jobs.push((topic_index, partition));
                }
            }
        }
        let results = parallel::map_bounded(
            &jobs,
            self.limits.partition_io_threads_max,
            |(topic, partition)| {
                let plan = &plans[*topic];
                self.open_existing_partition(&plan.record, &plan.log_config, *partition)
            },
        );
        let mut topics: Vec<Topic> = plans
            .into_iter()
            .map(|plan| {
                let partitions = match &plan.offline {
                    // Bounded like any partition count, even if the record's is not.
                    Some(reason) => {
                        let count = plan.record.partitions.min(self.limits.partitions_per_topic_max);
                        (0..count)
                            .map(|_| PartitionSlot::Offline(reason.clone()))
                            .collect()
                    }
                    None => Vec::with_capacity(plan.record.partitions as usize),
                };
                Topic {
                    partitions,
                    id: topic_uuid(&plan.record),
                    record: plan.record,
                    log_config: plan.log_config,
                }
            })
            .collect();
        for ((topic, _), result) in jobs.into_iter().zip(results) {
            let slot = match result {
                Ok(log) => PartitionSlot::Online(log),
                Err(reason) => PartitionSlot::Offline(reason),
            };
            topics[topic].partitions.push(slot);
        }
        topics
    }

    /// Opens the partitions of a topic being created; any failure fails the create.
    fn open_new_partitions(
        &self,
        record: &TopicRecord,
        log_config: &LogConfig,
    ) -> Vec<Result<Arc<PartitionLog>, TopicError>> {
        let partitions: Vec<u32> = (0..record.partitions).collect();
        parallel::map_bounded(&partitions, self.limits.partition_io_threads_max, |partition| {
            let dir = self.topics_dir.join(&record.name).join(partition.to_string());
            PartitionLog::open_with_disk(&dir, log_config.clone(), Arc::clone(&self.resources.disk))
                .map(Arc::new)
                .map_err(TopicError::from)
        })
    }

    /// Opens one partition of a topic found at start; a failure makes it offline, logged at
    /// ERROR with the full cause.
    fn open_existing_partition(
        &self,
        record: &TopicRecord,
        log_config: &LogConfig,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, Arc<str>> {
        let dir = self.topics_dir.join(&record.name).join(partition.to_string());
        if !dir.is_dir() {
            // Storage would create it empty and number its records from 0 again; a directory
            // that went missing is damage, not a new partition.
            tracing::error!(topic = %record.name, partition, dir = %dir.display(), "partition directory is missing; the partition is offline");
            return Err(Arc::from("its directory is missing (see the broker log)"));
        }
        PartitionLog::open_with_disk(&dir, log_config.clone(), Arc::clone(&self.resources.disk))
            .map(Arc::new)
            .map_err(|error| {
                tracing::error!(topic = %record.name, partition, %error, "partition could not be opened; it is offline, the rest of the broker serves on");
                Arc::from(OFFLINE_OPEN_FAILED)
            })
    }

    /// Renames the topic's directory to `deleting/<topic id>`, a name that fits NAME_MAX
    /// whatever the topic name's length, and syncs both directories.
    fn move_to_deleting(&self, record: &TopicRecord) -> Result<PathBuf, TopicError> {
        let from = self.topics_dir.join(&record.name);
        let mut to = self.deleting_dir.join(&record.topic_id);
        // Bounded: a clash needs an earlier, unfinished deletion of the same id.
        for attempt in 1..=1_000u32 {
            if fs::symlink_metadata(&to).is_err() {
                break;
            }
            to = self.deleting_dir.join(format!("{}-{attempt}", record.topic_id));
        }
        fs::rename(&from, &to).map_err(|source| TopicError::Io {
            context: format!("moving {} to {}", from.display(), to.display()),
            source,
        })?;
        sync_dir(&self.topics_dir)?;
        sync_dir(&self.deleting_dir)?;
        Ok(to)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The parsed id of a record the registry serves. Reconcile and create give every served
/// record a v4 UUID; a record without one (a bug) gets the nil UUID, which matches no request.
fn topic_uuid(record: &TopicRecord) -> uuid::Uuid {
    id::parse(&record.topic_id).unwrap_or_else(|| {
        tracing::error!(topic = %record.name, topic_id = %record.topic_id, "served topic has no UUID");
        uuid::Uuid::nil()
    })
}

/// Kafka's rules, so every Kafka topic name is a Tidelog topic name and vice versa.
pub fn validate_topic_name(name: &str, max_bytes: usize) -> Result<(), TopicError> {
    let invalid = |reason| TopicError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > max_bytes {
        return Err(invalid("too long"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn manifest_io(dir: &Path, error: manifest::ManifestError) -> TopicError {
    let source = match error {
        manifest::ManifestError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    };
    TopicError::Io {
        context: format!("writing the manifest in {}", dir.display()),
        source,
    }
}

fn create_dir(path: &Path) -> Result<(), TopicError> {
    fs::create_dir_all(path).map_err(|source| TopicError::Io {
        context: format!("creating {}", path.display()),
        source,
    })
}

fn remove_tree(path: &Path) -> Result<(), TopicError> {
    fs::remove_dir_all(path).map_err(|source| TopicError::Io {
        context: format!("removing {}", path.display()),
        source,
    })
}

fn sync_dir(path: &Path) -> Result<(), TopicError> {
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| TopicError::Io {
            context: format!("syncing directory {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod tests;
