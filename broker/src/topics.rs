//! The topic registry: which topics exist, their effective configuration and their open
//! partition logs. Owns the `topics/` tree of the data directory and the metadata store's topic
//! records; knows nothing of the network.
//!
//! Layout: `<data_dir>/topics/<topic>/<partition>/` holds one partition's segments. Deleting a
//! topic renames its directory into `<data_dir>/deleting/` before removing it, so a crash
//! half-way leaves nothing under `topics/` that the metadata store does not name.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::{BrokerConfig, Limits, LogDefaults};
use crate::error::TopicError;
use crate::metadata::{MetadataStore, TopicOverrides, TopicRecord};
use crate::storage::{FlushPolicy, LogConfig, PartitionLog};

/// One topic: its persisted record, the configuration its logs run with, and the logs.
#[derive(Debug)]
pub struct Topic {
    pub record: TopicRecord,
    pub log_config: LogConfig,
    pub partitions: Vec<Arc<PartitionLog>>,
}

impl Topic {
    pub fn partition(&self, partition: u32) -> Option<&Arc<PartitionLog>> {
        self.partitions.get(partition as usize)
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
    deleting_dir: PathBuf,
    defaults: LogDefaults,
    flush: FlushPolicy,
    limits: Limits,
    store: Box<dyn MetadataStore>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    admin: std::sync::Mutex<()>,
}

impl TopicRegistry {
    /// Opens every topic the store names, recovering each partition's log. Blocking: call it
    /// off the async runtime.
    pub fn open(config: &BrokerConfig, store: Box<dyn MetadataStore>) -> Result<Self, TopicError> {
        let topics_dir = config.data_dir.join("topics");
        let deleting_dir = config.data_dir.join("deleting");
        create_dir(&topics_dir)?;
        create_dir(&deleting_dir)?;
        // A crash during a deletion leaves the renamed directory here: finish the job.
        remove_dir_contents(&deleting_dir)?;
        let registry = Self {
            topics_dir,
            deleting_dir,
            defaults: config.log.clone(),
            flush: config.flush,
            limits: config.limits.clone(),
            store,
            topics: RwLock::new(HashMap::new()),
            admin: std::sync::Mutex::new(()),
        };
        let mut opened = HashMap::new();
        for record in registry.store.topics()? {
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    // Refuse the one damaged record but keep its data on disk untouched.
                    tracing::error!(%error, "skipping a topic whose metadata record is damaged; its data directory is left as it is");
                    continue;
                }
            };
            let topic = registry.open_topic(record)?;
            for (index, partition) in topic.partitions.iter().enumerate() {
                let report = partition.recovery_report();
                tracing::info!(topic = %topic.record.name, partition = index, ?report, "partition opened");
            }
            opened.insert(topic.record.name.clone(), Arc::new(topic));
        }
        registry.report_orphans(&opened);
        *registry.write_map() = opened;
        Ok(registry)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_map().get(name).cloned()
    }

    /// All topics, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<Arc<Topic>> = self.read_map().values().cloned().collect();
        topics.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        topics
    }

    /// Creates a topic: validates, persists the record (durably), then creates the partition
    /// directories. Blocking.
    pub fn create(&self, spec: TopicSpec, now_ms: i64) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
                return Err(TopicError::AlreadyExists(spec.name));
            }
            if map.len() >= self.limits.topics_max {
                return Err(TopicError::TooManyTopics(self.limits.topics_max));
            }
        }
        // Checks the overrides before anything is written.
        self.log_config(&spec.overrides)?;
        let record = TopicRecord {
            name: spec.name,
            partitions,
            created_ms: now_ms,
            overrides: spec.overrides,
        };
        // A directory without a record is a leftover of a crash mid-delete: move it aside.
        let dir = self.topics_dir.join(&record.name);
        if dir.exists() {
            self.move_to_deleting(&record.name)?;
        }
        let name = record.name.clone();
        self.store.put_topic(&record)?;
        let topic = match self.open_topic(record) {
            Ok(topic) => Arc::new(topic),
            Err(error) => {
                // Undo the record so a retry starts clean; the error returned is the open's.
                if let Err(undo) = self.store.delete_topic(&name) {
                    tracing::error!(topic = %name, %undo, "could not undo the record of a topic that failed to open");
                }
                return Err(error);
            }
        };
        self.write_map().insert(topic.record.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: forgets the record (durably), then removes its files. Requests already
    /// holding one of its partitions finish against the unlinked files. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _admin = self.admin.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.read_map().contains_key(name) {
            return Err(TopicError::UnknownTopic(name.to_owned()));
        }
        self.store.delete_topic(name)?;
        self.write_map().remove(name);
        let moved = self.move_to_deleting(name)?;
        fs::remove_dir_all(&moved).map_err(|source| TopicError::Io {
            context: format!("removing {}", moved.display()),
            source,
        })?;
        Ok(())
    }

    /// Syncs every partition and writes its clean-shutdown checkpoint.
    pub fn close_all(&self) -> Vec<(String, TopicError)> {
        let mut failures = Vec::new();
        for topic in self.list() {
            for partition in &topic.partitions {
                if let Err(error) = partition.close() {
                    failures.push((topic.record.name.clone(), error.into()));
                }
            }
        }
        failures
    }

    /// The effective log configuration: the topic's overrides over the broker defaults.
    pub fn log_config(&self, overrides: &TopicOverrides) -> Result<LogConfig, TopicError> {
        let flush = match &overrides.flush {
            Some(text) => text.parse().map_err(TopicError::InvalidConfig)?,
            None => self.flush,
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
        };
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

    fn open_topic(&self, record: TopicRecord) -> Result<Topic, TopicError> {
        // Checked again on load: a record read back from the store is input too.
        validate_topic_name(&record.name, self.limits.topic_name_bytes_max)?;
        if record.partitions == 0 || record.partitions > self.limits.partitions_per_topic_max {
            return Err(TopicError::InvalidPartitions {
                count: record.partitions,
                max: self.limits.partitions_per_topic_max,
            });
        }
        let log_config = self.log_config(&record.overrides)?;
        let dir = self.topics_dir.join(&record.name);
        let mut partitions = Vec::with_capacity(record.partitions as usize);
        for partition in 0..record.partitions {
            let log = PartitionLog::open(&dir.join(partition.to_string()), log_config.clone())?;
            partitions.push(Arc::new(log));
        }
        Ok(Topic {
            record,
            log_config,
            partitions,
        })
    }

    fn move_to_deleting(&self, name: &str) -> Result<PathBuf, TopicError> {
        let from = self.topics_dir.join(name);
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let to = self.deleting_dir.join(format!("{name}.{unique}"));
        fs::rename(&from, &to).map_err(|source| TopicError::Io {
            context: format!("moving {} to {}", from.display(), to.display()),
            source,
        })?;
        sync_dir(&self.topics_dir)?;
        Ok(to)
    }

    fn report_orphans(&self, opened: &HashMap<String, Arc<Topic>>) {
        let Ok(entries) = fs::read_dir(&self.topics_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !opened.contains_key(&name) {
                tracing::warn!(directory = %entry.path().display(), "topic directory has no metadata record; leaving it untouched");
            }
        }
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

fn create_dir(path: &Path) -> Result<(), TopicError> {
    fs::create_dir_all(path).map_err(|source| TopicError::Io {
        context: format!("creating {}", path.display()),
        source,
    })
}

fn remove_dir_contents(path: &Path) -> Result<(), TopicError> {
    let entries = fs::read_dir(path).map_err(|source| TopicError::Io {
        context: format!("listing {}", path.display()),
        source,
    })?;
    for entry in entries.flatten() {
        let leftover = entry.path();
        tracing::info!(directory = %leftover.display(), "removing the remains of an interrupted topic deletion");
        if let Err(error) = fs::remove_dir_all(&leftover) {
            tracing::warn!(directory = %leftover.display(), %error, "could not remove; will retry at next start");
        }
    }
    Ok(())
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
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_name_rules_are_enforced() {
        for good in ["orders", "a.b-c_d", "X9", &"t".repeat(249)] {
            validate_topic_name(good, 249).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"t".repeat(250)] {
            assert!(validate_topic_name(bad, 249).is_err(), "{bad:?}");
        }
    }
}
