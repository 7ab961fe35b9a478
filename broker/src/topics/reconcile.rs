//! Start-time reconciliation of the metadata store with the directories. The directories hold
//! the data and describe themselves (`manifest`); the store's topic records are rebuilt from
//! them when lost or damaged, never the other way round. Nothing here removes a partition
//! directory: the only trees removed are `creating/` (topics whose create never finished, so
//! nothing in them was ever acknowledged) and `deleting/` (deletes already decided).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{id, manifest, validate_topic_name, TopicRegistry};
use crate::error::{MetadataError, TopicError};
use crate::metadata::{TopicOverrides, TopicRecord};
use crate::storage::LogConfig;

/// One topic to open.
#[derive(Debug)]
pub(super) struct TopicPlan {
    pub record: TopicRecord,
    pub log_config: LogConfig,
    /// Set when the whole topic cannot be served (its configuration is unusable): every
    /// partition is offline with this reason.
    pub offline: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub(super) struct Plan {
    pub topics: Vec<TopicPlan>,
    /// Names with a directory that could not be recovered, and why.
    pub unrecoverable: HashMap<String, String>,
}

type Records = HashMap<String, Result<TopicRecord, MetadataError>>;

pub(super) fn reconcile(registry: &TopicRegistry) -> Result<Plan, TopicError> {
    clear_creating(&registry.creating_dir)?;
    let mut records: Records = registry.store.topics()?.into_iter().collect();
    finish_deletions(registry, &mut records)?;
    let mut plan = Plan::default();
    let mut records_to_write = Vec::new();
    for entry in list(&registry.topics_dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        // Taken out of `records` whatever happens below: a record whose name is on disk is
        // never treated as a record without data.
        let record = records.remove(&name);
        if !dir.is_dir() {
            tracing::warn!(path = %dir.display(), "not a topic directory; leaving it (and any record of its name) untouched");
            continue;
        }
        if validate_topic_name(&name, registry.limits.topic_name_bytes_max).is_err() {
            tracing::error!(directory = %dir.display(), "directory name is not a topic name this broker accepts (see limits.topic_name_bytes_max); leaving it and any record of its name untouched");
            continue;
        }
        manifest::remove_leftover_temp(&dir);
        match decide(registry, &name, &dir, record)? {
            Decision::Serve {
                mut record,
                mut write_record,
            } => {
                if give_uuid(&mut record) {
                    // The manifest first: a crash before the record is written leaves a
                    // manifest the next start prefers, so the id issued here is the one kept.
                    manifest::write(&dir, &record).map_err(|error| super::manifest_io(&dir, error))?;
                    write_record = true;
                }
                if write_record {
                    records_to_write.push(record.clone());
                }
                plan.topics.push(registry.plan_for(record));
            }
            Decision::Unrecoverable(reason) => {
                tracing::error!(topic = %name, directory = %dir.display(), %reason, "topic directory cannot be recovered; the topic is offline and creates of its name are refused until the directory is removed (topic delete, or by hand)");
                plan.unrecoverable.insert(name, reason);
            }
        }
    }
    for (name, record) in records {
        match record {
            Ok(mut record) => {
                if give_uuid(&mut record) {
                    records_to_write.push(record.clone());
                }
                // Its directory is gone (removed by hand, a lost filesystem): serve the topic
                // with every partition offline, so nothing is silently recreated empty and a
                // create of its name is still refused.
                tracing::error!(topic = %name, "topic has a metadata record but no directory; its partitions are offline");
                plan.topics.push(registry.plan_for(record));
            }
            Err(error) => {
                // Nothing on disk belongs to it, so forgetting the damaged record loses nothing.
                tracing::warn!(topic = %name, %error, "removing a damaged metadata record of a topic that has no directory");
                registry.store.delete_topic(&name)?;
            }
        }
    }
    for record in records_to_write {
        registry.store.put_topic(&record)?;
    }
    plan.topics.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    Ok(plan)
}

// One per topic at start, consumed at once: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Decision {
    Serve { record: TopicRecord, write_record: bool },
    Unrecoverable(String),
}

/// What to make of one topic directory, given its record in the store (if any).
fn decide(
    registry: &TopicRegistry,
    name: &str,
    dir: &Path,
    record: Option<Result<TopicRecord, MetadataError>>,
) -> Result<Decision, TopicError> {
    let found = manifest::read(dir).and_then(|found| {
        if found.name != name || found.partitions == 0 {
            Err(manifest::ManifestError::Damaged(format!(
                "describes topic {:?} with {} partitions",
                found.name, found.partitions
            )))
        } else {
            Ok(found)
        }
    });
    let record = match record {
        Some(Ok(record)) if record.partitions > 0 => Ok(record),
        Some(Ok(record)) => Err(format!("record has {} partitions", record.partitions)),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("no record".to_owned()),
    };
    let write_manifest =
        |record: &TopicRecord| manifest::write(dir, record).map_err(|error| super::manifest_io(dir, error));
    Ok(match (record, found) {
        (Ok(record), Ok(found)) if record == found => Decision::Serve {
            record,
            write_record: false,
        },
        (Ok(record), Ok(found)) => {
            // Every change writes the manifest, then the record: a difference is a change a
            // crash interrupted between the two (an id upgrade, added partitions, a config
            // change), damage that passed a checksum, or a directory put here from elsewhere.
            // The manifest describes the data beside it, so it wins.
            tracing::warn!(topic = %name, ?record, manifest = ?found, "metadata record and manifest disagree (an interrupted topic change, or damage); the manifest wins and the record is rewritten");
            Decision::Serve {
                record: found,
                write_record: true,
            }
        }
        (Ok(record), Err(manifest::ManifestError::Missing)) => {
            // A topic created before manifests existed (its id, if it has none, comes next).
            tracing::info!(topic = %name, "writing the manifest of a topic created before manifests");
            write_manifest(&record)?;
            Decision::Serve {
                record,
                write_record: false,
            }
        }
        (Ok(record), Err(error)) => {
            tracing::error!(topic = %name, %error, "topic manifest is unreadable; rewriting it from the metadata record");
            write_manifest(&record)?;
            Decision::Serve {
                record,
                write_record: false,
            }
        }
        (Err(reason), Ok(found)) => {
            tracing::error!(topic = %name, %reason, partitions = found.partitions, "topic metadata record is missing or damaged; rebuilt it from the topic's manifest");
            Decision::Serve {
                record: found,
                write_record: true,
            }
        }
        (Err(reason), Err(manifest_error)) => match partition_dirs(dir)? {
            None => Decision::Unrecoverable(format!(
                "no usable metadata record ({reason}), no usable manifest ({manifest_error}) and no partition directories"
            )),
            Some(highest) if highest >= registry.limits.partitions_per_topic_max => {
                Decision::Unrecoverable(format!(
                    "no usable metadata record or manifest, and partition directories up to {highest} exceed limits.partitions_per_topic_max"
                ))
            }
            Some(highest) => {
                let record = TopicRecord {
                    name: name.to_owned(),
                    topic_id: id::new_topic_id(),
                    partitions: highest + 1,
                    created_ms: crate::clock::now_ms(),
                    overrides: TopicOverrides::default(),
                };
                tracing::error!(topic = %name, %reason, manifest = %manifest_error, partitions = record.partitions, "topic has neither a usable metadata record nor a manifest; recovered it from its partition directories with the broker's default configuration (its overrides are lost)");
                write_manifest(&record)?;
                Decision::Serve {
                    record,
                    write_record: true,
                }
            }
        },
    })
}

/// Gives a record without a v4 UUID (written before ids, or before ids were UUIDs) a new one;
/// returns whether it did, so the caller persists it before the topic is served.
fn give_uuid(record: &mut TopicRecord) -> bool {
    if id::parse(&record.topic_id).is_some() {
        return false;
    }
    let topic_id = id::new_topic_id();
    tracing::info!(topic = %record.name, old = %record.topic_id, new = %topic_id, "giving a topic created before topic UUIDs its persistent id");
    record.topic_id = topic_id;
    true
}

/// The highest partition number among `dir`'s partition directories, if it has any.
fn partition_dirs(dir: &Path) -> Result<Option<u32>, TopicError> {
    let mut highest = None;
    for entry in list(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(partition) = name.parse::<u32>() else {
            continue;
        };
        // Only the canonical spelling the broker writes ("7", not "007").
        if partition.to_string() == name && entry.path().is_dir() {
            highest = highest.max(Some(partition));
        }
    }
    Ok(highest)
}

/// Removes topics whose create never finished: nothing in them was ever served.
fn clear_creating(creating_dir: &Path) -> Result<(), TopicError> {
    for entry in list(creating_dir)? {
        let leftover = entry.path();
        tracing::warn!(directory = %leftover.display(), "removing a topic whose create was interrupted (it was never served)");
        if let Err(error) = fs::remove_dir_all(&leftover) {
            tracing::warn!(directory = %leftover.display(), %error, "could not remove; will retry at next start");
        }
    }
    Ok(())
}

/// Finishes deletions a crash interrupted: the directory had been moved into `deleting/`; the
/// record, if still there and of the same topic id, goes now, then the files.
fn finish_deletions(registry: &TopicRegistry, records: &mut Records) -> Result<(), TopicError> {
    for entry in list(&registry.deleting_dir)? {
        let leftover = entry.path();
        if let Ok(found) = manifest::read(&leftover) {
            let same =
                matches!(records.get(&found.name), Some(Ok(record)) if record.topic_id == found.topic_id);
            if same {
                registry.store.delete_topic(&found.name)?;
                records.remove(&found.name);
            }
        }
        tracing::info!(directory = %leftover.display(), "removing the remains of an interrupted topic deletion");
        let removed = if leftover.is_dir() {
            fs::remove_dir_all(&leftover)
        } else {
            fs::remove_file(&leftover)
        };
        if let Err(error) = removed {
            tracing::warn!(directory = %leftover.display(), %error, "could not remove; will retry at next start");
        }
    }
    Ok(())
}

fn list(dir: &Path) -> Result<Vec<fs::DirEntry>, TopicError> {
    let io = |source| TopicError::Io {
        context: format!("listing {}", dir.display()),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        entries.push(entry.map_err(io)?);
    }
    Ok(entries)
}

impl TopicRegistry {
    /// The configuration a found topic runs with; a topic this broker's limits refuse is
    /// served with every partition offline rather than stopping the broker.
    fn plan_for(&self, record: TopicRecord) -> TopicPlan {
        let checked = validate_topic_name(&record.name, self.limits.topic_name_bytes_max)
            .and_then(|()| self.log_config(&record.overrides));
        match checked {
            Ok(log_config) if record.partitions <= self.limits.partitions_per_topic_max => TopicPlan {
                record,
                log_config,
                offline: None,
            },
            outcome => {
                let reason = match outcome {
                    Err(error) => error.to_string(),
                    Ok(_) => format!(
                        "{} partitions exceed limits.partitions_per_topic_max",
                        record.partitions
                    ),
                };
                tracing::error!(topic = %record.name, %reason, "topic cannot be served under this broker's configuration; its partitions are offline");
                TopicPlan {
                    log_config: LogConfig::default(),
                    record,
                    offline: Some(Arc::from(format!("its configuration is refused: {reason}"))),
                }
            }
        }
    }
}
