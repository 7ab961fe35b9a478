//! Durable broker metadata (topics and their configuration) in sled, behind one trait.
//!
//! sled is beta software (its own README says so), pinned at 0.34; nothing outside this file
//! knows it is sled, so it can be swapped. Every value is framed as
//! `magic "TLMD" | version u16 BE | crc32 u32 BE of the body | body (TOML text)` so a damaged
//! record is detected rather than misread; see docs/storage-format.md.
//!
//! Keys: `topic/<name>`, `group/<group id>` (a [`GroupRecord`]), `producer-ids/next` (the
//! producer-id counter, see [`ProducerIdAllocator`]) and, for committed offsets,
//! `offset/` + group id length (u16 BE) + group id + topic length (u16 BE) + topic + partition
//! (u32 BE), so one group's offsets are one prefix scan and no id needs escaping.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::MetadataError;

const RECORD_MAGIC: &[u8; 4] = b"TLMD";
const RECORD_VERSION: u16 = 1;
const RECORD_HEADER_BYTES: usize = 4 + 2 + 4;
const TOPIC_KEY_PREFIX: &str = "topic/";
const GROUP_KEY_PREFIX: &str = "group/";
const OFFSET_KEY_PREFIX: &str = "offset/";
/// The first producer id not yet reserved (a [`ProducerIdBlock`]).
const PRODUCER_IDS_KEY: &str = "producer-ids/next";

/// The persisted end of the producer ids reserved so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerIdBlock {
    next: i64,
}

/// What the partitions on disk say about producer ids already handed out, gathered at start
/// before the first id is: the counter must never fall back below them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdFloor {
    /// The highest producer id found in any partition's producer state (snapshots plus batch
    /// headers); -1: none.
    pub seen_max: i64,
    /// Whether the data directory already holds topics: a counter missing there was lost,
    /// not never written.
    pub data_present: bool,
    /// Partitions that could not be opened, so their producer ids are not in `seen_max`
    /// (named in the ERROR if the counter has to be recovered; the recovery gap covers them
    /// unless they hold ids 2^32 above every other partition's).
    pub partitions_offline: usize,
}

/// How far past the highest id seen in any partition a lost or damaged counter restarts.
/// Ids above it may have been handed out to producers that have not written yet (or wrote
/// only to topics since deleted); 2^32 is more than any broker hands out between restarts,
/// and costs nothing in a 63-bit id space.
pub const PRODUCER_ID_RECOVERY_GAP: i64 = 1 << 32;

/// Hands out producer ids from blocks reserved in the [`MetadataStore`], so a crash never
/// reuses one (it only skips the rest of the block). The counter is read once, at
/// [`open`](Self::open), and checked against the partitions; after that this allocator is its
/// only writer and never reads it back, so a record the store later loses or damages cannot
/// send ids backwards. Calls block on the store: run them on the blocking pool.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    store: std::sync::Arc<dyn MetadataStore>,
    block_size: i64,
    /// Next id to hand out and the end of the reserved block (the persisted counter).
    range: std::sync::Mutex<(i64, i64)>,
    /// The next id to hand out, readable without the lock (which `allocate` holds across a
    /// metadata write): ids below it may be in use.
    next_unused: std::sync::atomic::AtomicI64,
}

impl ProducerIdAllocator {
    /// Ids reserved per metadata write.
    pub const BLOCK_SIZE_DEFAULT: i64 = 1000;

    /// Reads the persisted counter and settles where ids continue: at the counter if it is
    /// sound and above every id the partitions have seen. A counter that is damaged, missing
    /// on a data directory that has topics, or behind the partitions is corruption: it is
    /// logged at ERROR and recovered above the highest id seen (plus
    /// [`PRODUCER_ID_RECOVERY_GAP`]), and the recovered value is persisted before any id is
    /// handed out. A fresh data directory starts at 0 and records that at once, so a later
    /// absence is recognised as a loss.
    ///
    /// # Errors
    /// The store cannot be read or written (other than a damaged counter record).
    pub fn open(
        store: std::sync::Arc<dyn MetadataStore>,
        block_size: i64,
        floor: ProducerIdFloor,
    ) -> Result<Self, MetadataError> {
        let seen_next = floor.seen_max.max(-1) + 1;
        let recovered = seen_next.saturating_add(PRODUCER_ID_RECOVERY_GAP);
        let (next, persist) = match store.producer_id_counter() {
            Ok(Some(next)) if next >= seen_next => (next, false),
            Ok(Some(next)) => {
                tracing::error!(
                    counter = next,
                    seen_max = floor.seen_max,
                    partitions_offline = floor.partitions_offline,
                    recovered,
                    "the producer id counter is behind producer ids stored in partitions; continuing above them"
                );
                (recovered, true)
            }
            Ok(None) if !floor.data_present && seen_next == 0 => (0, true),
            Ok(None) => {
                tracing::error!(
                    seen_max = floor.seen_max,
                    partitions_offline = floor.partitions_offline,
                    recovered,
                    "the producer id counter is missing from a data directory that has topics; \
                     recovered it from the partitions' producer state"
                );
                (recovered, true)
            }
            Err(error @ MetadataError::Corrupt { .. }) => {
                tracing::error!(
                    %error,
                    seen_max = floor.seen_max,
                    partitions_offline = floor.partitions_offline,
                    recovered,
                    "the producer id counter is damaged; recovered it from the partitions' producer state"
                );
                (recovered, true)
            }
            Err(error) => return Err(error),
        };
        if persist {
            store.put_producer_id_counter(next)?;
        }
        Ok(Self {
            store,
            block_size: block_size.max(1),
            range: std::sync::Mutex::new((next, next)),
            next_unused: std::sync::atomic::AtomicI64::new(next),
        })
    }

    /// Whether `id` may have been handed out (by this run or an earlier one): every id below
    /// the next one qualifies, since earlier runs only handed out ids below the counter.
    pub fn may_have_handed_out(&self, id: i64) -> bool {
        (0..self.next_unused.load(std::sync::atomic::Ordering::Acquire)).contains(&id)
    }

    /// A producer id never handed out before, by this broker or an earlier run of it.
    pub fn allocate(&self) -> Result<i64, MetadataError> {
        // The range is two integers updated together; a panic cannot leave it torn.
        let mut range = self
            .range
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if range.0 >= range.1 {
            let end = range
                .0
                .checked_add(self.block_size)
                .ok_or_else(|| MetadataError::Corrupt {
                    key: PRODUCER_IDS_KEY.to_owned(),
                    reason: "producer ids exhausted".into(),
                })?;
            // Durable before any id of the block is used.
            self.store.put_producer_id_counter(end)?;
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        self.next_unused
            .store(range.0, std::sync::atomic::Ordering::Release);
        Ok(id)
    }
}

/// A topic as persisted: its partition count and the settings it overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Unique per incarnation of a name (a create after a delete gets a new one): names the
    /// topic's directory while it is being deleted and matches a manifest to its record. Empty
    /// in records written before ids existed; the registry assigns one at the next start.
    #[serde(default)]
    pub topic_id: String,
    pub partitions: u32,
    pub created_ms: i64,
    #[serde(default)]
    pub overrides: TopicOverrides,
}

/// Per-topic settings; `None` inherits the broker default. Fields added later carry
/// `#[serde(default)]`, so records written before them still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicOverrides {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<i64>,
    /// A flush policy in its text form ("always", "interval:<ms>", "never").
    pub flush: Option<String>,
    pub index_interval_bytes: Option<u32>,
    /// `cleanup.policy` in its text form ("delete", "compact", "compact,delete").
    #[serde(default)]
    pub cleanup_policy: Option<String>,
    #[serde(default)]
    pub min_cleanable_dirty_ratio: Option<f64>,
    #[serde(default)]
    pub min_compaction_lag_ms: Option<i64>,
    #[serde(default)]
    pub max_compaction_lag_ms: Option<i64>,
    #[serde(default)]
    pub delete_retention_ms: Option<i64>,
}

/// A consumer group's membership and assignments as persisted; `broker::groups` owns the
/// meaning of each field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// Partition counts of the subscribed topics the target assignment was computed from.
    #[serde(default)]
    pub partition_counts: BTreeMap<String, u32>,
    #[serde(default)]
    pub members: Vec<GroupMemberRecord>,
    /// The classic-protocol (JoinGroup/SyncGroup) side of the group, if it was ever used.
    #[serde(default)]
    pub classic: Option<ClassicGroupRecord>,
}

/// A classic group as persisted: its generation, the chosen protocol and the members with
/// their last assignment; `broker::groups::classic` owns the meaning of each field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicGroupRecord {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    #[serde(default)]
    pub members: Vec<ClassicMemberRecord>,
}

/// One member of a [`ClassicGroupRecord`]; byte strings are hex, which TOML holds compactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// Protocol names with their metadata, in the member's order of preference.
    pub protocols: Vec<ClassicProtocolRecord>,
    pub assignment_hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicProtocolRecord {
    pub name: String,
    pub metadata_hex: String,
}

/// One member of a [`GroupRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub session_timeout_ms: u32,
    /// A static member that left with epoch -2 and keeps its place until its session ends.
    pub left: bool,
    pub subscription: Vec<String>,
    /// Partitions the member was given and keeps.
    pub assigned: Vec<TopicPartitionsRecord>,
    /// Partitions the member was told to release and has not yet acknowledged releasing.
    pub revoking: Vec<TopicPartitionsRecord>,
    /// The member's share of the group's target assignment.
    pub target: Vec<TopicPartitionsRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitionsRecord {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// A committed offset of one group for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub group_id: String,
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: i64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A topic record as read back: the topic name its key gives, and the record or why it could
/// not be read.
pub type StoredTopic = (String, Result<TopicRecord, MetadataError>);

/// Where the broker keeps what must survive a restart besides the logs themselves.
/// Every write is durable when it returns.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// Every topic record, with the topic name its key gives, so a damaged record still says
    /// which topic it belonged to.
    fn topics(&self) -> Result<Vec<StoredTopic>, MetadataError>;
    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError>;
    /// Returns whether the topic existed.
    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError>;

    /// Every consumer group record; a damaged one is reported in place.
    fn groups(&self) -> Result<Vec<Result<GroupRecord, MetadataError>>, MetadataError>;
    fn put_group(&self, record: &GroupRecord) -> Result<(), MetadataError>;
    /// Removes a group's record and all its committed offsets in one atomic batch; returns
    /// whether anything existed.
    fn delete_group(&self, group_id: &str) -> Result<bool, MetadataError>;
    /// Every committed offset of every group (loaded once, at start).
    fn committed_offsets(&self) -> Result<Vec<Result<OffsetRecord, MetadataError>>, MetadataError>;
    /// Writes the offsets in one atomic batch.
    fn put_offsets(&self, records: &[OffsetRecord]) -> Result<(), MetadataError>;
    /// Removes some of one group's committed offsets in one atomic batch. Stores that keep
    /// no offsets of their own (test doubles) refuse.
    fn delete_offsets(&self, group_id: &str, partitions: &[(String, u32)]) -> Result<(), MetadataError> {
        let _ = partitions;
        Err(MetadataError::Encode {
            key: group_id.to_owned(),
            reason: "this metadata store cannot delete single offsets".into(),
        })
    }

    /// The persisted end of the producer ids reserved so far: `None` if there is no record,
    /// `Err(Corrupt)` if the record fails its checks (never read as absent).
    fn producer_id_counter(&self) -> Result<Option<i64>, MetadataError>;
    /// Durably sets the producer id counter (see [`ProducerIdAllocator`]).
    fn put_producer_id_counter(&self, next: i64) -> Result<(), MetadataError>;
}

/// The sled implementation of [`MetadataStore`]. Cloning shares the database (the topic
/// registry and the group coordinator each hold one).
#[derive(Debug, Clone)]
pub struct SledMetadataStore {
    db: sled::Db,
}

impl SledMetadataStore {
    /// Opens (creating if absent) the store at `path`.
    ///
    /// sled 0.34 releases its file lock from a background thread after the last handle is
    /// dropped, so a store closed a moment ago (an in-process restart) can still look locked:
    /// a lock conflict is retried for up to `LOCK_WAIT`. Another live process holding the
    /// directory still fails, with sled's "could not acquire lock" error.
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
        const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);
        let started = std::time::Instant::now();
        loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => return Ok(Self { db }),
                Err(source) if is_lock_conflict(&source) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(source) => {
                    return Err(MetadataError::Open {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        }
    }
}

fn is_lock_conflict(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

impl MetadataStore for SledMetadataStore {
    fn topics(&self) -> Result<Vec<StoredTopic>, MetadataError> {
        let mut topics = Vec::new();
        for entry in self.db.scan_prefix(TOPIC_KEY_PREFIX) {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let name = key[TOPIC_KEY_PREFIX.len()..].to_owned();
            let record = decode_record::<TopicRecord>(&key, &value).and_then(|record| {
                // The key and the value must agree, or the value belongs to another topic.
                if record.name == name {
                    Ok(record)
                } else {
                    Err(MetadataError::Corrupt {
                        key: key.clone(),
                        reason: format!("record names topic {:?}", record.name),
                    })
                }
            });
            topics.push((name, record));
        }
        Ok(topics)
    }

    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError> {
        let key = format!("{TOPIC_KEY_PREFIX}{}", record.name);
        let value = encode_record(&key, record)?;
        self.db.insert(key.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError> {
        let key = format!("{TOPIC_KEY_PREFIX}{name}");
        let existed = self.db.remove(key.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }

    fn groups(&self) -> Result<Vec<Result<GroupRecord, MetadataError>>, MetadataError> {
        let mut groups = Vec::new();
        for entry in self.db.scan_prefix(GROUP_KEY_PREFIX) {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            groups.push(decode_record(&key, &value));
        }
        Ok(groups)
    }

    fn put_group(&self, record: &GroupRecord) -> Result<(), MetadataError> {
        let key = format!("{GROUP_KEY_PREFIX}{}", record.group_id);
        let value = encode_record(&key, record)?;
        self.db.insert(key.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    fn delete_group(&self, group_id: &str) -> Result<bool, MetadataError> {
        let group_key = format!("{GROUP_KEY_PREFIX}{group_id}");
        let mut existed = self.db.contains_key(group_key.as_bytes())?;
        let mut batch = sled::Batch::default();
        batch.remove(group_key.as_bytes());
        for entry in self.db.scan_prefix(offset_group_prefix(group_id)?) {
            let (key, _) = entry?;
            batch.remove(key);
            existed = true;
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(existed)
    }

    fn committed_offsets(&self) -> Result<Vec<Result<OffsetRecord, MetadataError>>, MetadataError> {
        let mut offsets = Vec::new();
        for entry in self.db.scan_prefix(OFFSET_KEY_PREFIX) {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            offsets.push(decode_record(&key, &value));
        }
        Ok(offsets)
    }

    fn put_offsets(&self, records: &[OffsetRecord]) -> Result<(), MetadataError> {
        let mut batch = sled::Batch::default();
        for record in records {
            let mut key = offset_group_prefix(&record.group_id)?;
            push_length_prefixed(&mut key, &record.topic)?;
            key.extend_from_slice(&record.partition.to_be_bytes());
            let value = encode_record(&String::from_utf8_lossy(&key), record)?;
            batch.insert(key, value);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn delete_offsets(&self, group_id: &str, partitions: &[(String, u32)]) -> Result<(), MetadataError> {
        let mut batch = sled::Batch::default();
        for (topic, partition) in partitions {
            let mut key = offset_group_prefix(group_id)?;
            push_length_prefixed(&mut key, topic)?;
            key.extend_from_slice(&partition.to_be_bytes());
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn producer_id_counter(&self) -> Result<Option<i64>, MetadataError> {
        match self.db.get(PRODUCER_IDS_KEY)? {
            Some(value) => {
                let next = decode_record::<ProducerIdBlock>(PRODUCER_IDS_KEY, &value)?.next;
                if next < 0 {
                    return Err(MetadataError::Corrupt {
                        key: PRODUCER_IDS_KEY.to_owned(),
                        reason: format!("negative counter {next}"),
                    });
                }
                Ok(Some(next))
            }
            None => Ok(None),
        }
    }

    fn put_producer_id_counter(&self, next: i64) -> Result<(), MetadataError> {
        let value = encode_record(PRODUCER_IDS_KEY, &ProducerIdBlock { next })?;
        self.db.insert(PRODUCER_IDS_KEY.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }
}

/// `offset/` + the group id, length-prefixed: the key prefix of all of one group's offsets.
fn offset_group_prefix(group_id: &str) -> Result<Vec<u8>, MetadataError> {
    let mut key = OFFSET_KEY_PREFIX.as_bytes().to_vec();
    push_length_prefixed(&mut key, group_id)?;
    Ok(key)
}

fn push_length_prefixed(key: &mut Vec<u8>, text: &str) -> Result<(), MetadataError> {
    let length = u16::try_from(text.len()).map_err(|_| MetadataError::Encode {
        key: text.to_owned(),
        reason: format!("{} bytes is too long for a key part", text.len()),
    })?;
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(text.as_bytes());
    Ok(())
}

fn encode_record<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, MetadataError> {
    let body = toml::to_string(value).map_err(|error| MetadataError::Encode {
        key: key.to_owned(),
        reason: error.to_string(),
    })?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    Ok(out)
}

fn decode_record<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, MetadataError> {
    let corrupt = |reason: String| MetadataError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    if value.len() < RECORD_HEADER_BYTES || &value[..4] != RECORD_MAGIC {
        return Err(corrupt("bad magic or short record".into()));
    }
    let version = u16::from_be_bytes([value[4], value[5]]);
    if version != RECORD_VERSION {
        return Err(corrupt(format!("unknown record version {version}")));
    }
    let crc = u32::from_be_bytes([value[6], value[7], value[8], value[9]]);
    let body = &value[RECORD_HEADER_BYTES..];
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let text = std::str::from_utf8(body).map_err(|error| corrupt(error.to_string()))?;
    toml::from_str(text).map_err(|error| corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            topic_id: format!("id-of-{name}"),
            partitions: 3,
            created_ms: 1,
            overrides: TopicOverrides {
                retention_ms: Some(1000),
                flush: Some("never".into()),
                ..TopicOverrides::default()
            },
        }
    }

    #[test]
    fn topics_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledMetadataStore::open(dir.path()).unwrap();
            store.put_topic(&record("a")).unwrap();
            store.put_topic(&record("b")).unwrap();
            assert!(store.delete_topic("a").unwrap());
            assert!(!store.delete_topic("missing").unwrap());
        }
        let store = SledMetadataStore::open(dir.path()).unwrap();
        let topics: Vec<TopicRecord> = store
            .topics()
            .unwrap()
            .into_iter()
            .map(|(name, record)| {
                let record = record.unwrap();
                assert_eq!(name, record.name);
                record
            })
            .collect();
        assert_eq!(topics, vec![record("b")]);
    }

    #[test]
    fn topic_records_written_before_the_compaction_settings_still_load() {
        // The shape of a topic record before issue 9: no cleanup policy, no compaction lags.
        #[derive(Serialize)]
        struct OldOverrides {
            retention_ms: Option<i64>,
            flush: Option<String>,
        }
        #[derive(Serialize)]
        struct OldRecord {
            name: String,
            topic_id: String,
            partitions: u32,
            created_ms: i64,
            overrides: OldOverrides,
        }
        let old = OldRecord {
            name: "old".into(),
            topic_id: "id".into(),
            partitions: 2,
            created_ms: 7,
            overrides: OldOverrides {
                retention_ms: Some(1000),
                flush: Some("never".into()),
            },
        };
        let bytes = encode_record("topic/old", &old).unwrap();
        let record: TopicRecord = decode_record("topic/old", &bytes).unwrap();
        assert_eq!(record.overrides.retention_ms, Some(1000));
        assert_eq!(record.overrides.flush.as_deref(), Some("never"));
        assert_eq!(record.overrides.cleanup_policy, None);
        assert_eq!(record.overrides.min_cleanable_dirty_ratio, None);
        assert_eq!(record.overrides.delete_retention_ms, None);

        // And the new fields survive a round trip through the store's encoding.
        let mut compacted = record.clone();
        compacted.overrides.cleanup_policy = Some("compact,delete".into());
        compacted.overrides.min_cleanable_dirty_ratio = Some(0.25);
        compacted.overrides.min_compaction_lag_ms = Some(5);
        compacted.overrides.max_compaction_lag_ms = Some(i64::MAX);
        compacted.overrides.delete_retention_ms = Some(0);
        let bytes = encode_record("topic/old", &compacted).unwrap();
        assert_eq!(
            decode_record::<TopicRecord>("topic/old", &bytes).unwrap(),
            compacted
        );
    }

    fn group(id: &str) -> GroupRecord {
        GroupRecord {
            group_id: id.into(),
            group_epoch: 7,
            assignment_epoch: 7,
            partition_counts: [("a.b".to_owned(), 3), ("c".to_owned(), 1)].into_iter().collect(),
            members: vec![GroupMemberRecord {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "client".into(),
                client_host: "127.0.0.1".into(),
                member_epoch: 7,
                previous_epoch: 5,
                session_timeout_ms: 10_000,
                left: false,
                subscription: vec!["a.b".into(), "c".into()],
                assigned: vec![TopicPartitionsRecord {
                    topic: "a.b".into(),
                    partitions: vec![0, 2],
                }],
                revoking: Vec::new(),
                target: vec![TopicPartitionsRecord {
                    topic: "c".into(),
                    partitions: vec![0],
                }],
            }],
            classic: None,
        }
    }

    fn offset(group: &str, topic: &str, partition: u32, offset: i64) -> OffsetRecord {
        OffsetRecord {
            group_id: group.into(),
            topic: topic.into(),
            partition,
            offset,
            metadata: "m".into(),
            commit_ms: 5,
        }
    }

    #[test]
    fn groups_and_offsets_survive_reopening_and_delete_together() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledMetadataStore::open(dir.path()).unwrap();
            store.put_group(&group("g")).unwrap();
            store.put_group(&group("g2")).unwrap();
            store
                .put_offsets(&[
                    offset("g", "t", 0, 5),
                    offset("g", "t", 1, 6),
                    offset("g2", "t", 0, 1),
                ])
                .unwrap();
            // Overwrites, not duplicates.
            store.put_offsets(&[offset("g", "t", 0, 9)]).unwrap();
            // A group id that is a prefix of another must not take the other's offsets along.
            store.put_offsets(&[offset("g2x", "t", 0, 3)]).unwrap();
            assert!(store.delete_group("g2").unwrap());
            assert!(!store.delete_group("never").unwrap());
        }
        let store = SledMetadataStore::open(dir.path()).unwrap();
        let groups: Vec<GroupRecord> = store.groups().unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(groups, vec![group("g")]);
        let mut offsets: Vec<OffsetRecord> = store
            .committed_offsets()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        offsets.sort_by(|a, b| (&a.group_id, a.partition).cmp(&(&b.group_id, b.partition)));
        assert_eq!(
            offsets,
            vec![
                offset("g", "t", 0, 9),
                offset("g", "t", 1, 6),
                offset("g2x", "t", 0, 3)
            ]
        );
    }

    #[test]
    fn producer_ids_are_never_reused_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            let store = SledMetadataStore::open(dir.path()).unwrap();
            let allocator = ProducerIdAllocator::open(std::sync::Arc::new(store), 4, fresh()).unwrap();
            // Part of a block, then the rest is lost with the "crash" (the drop).
            for _ in 0..6 {
                let id = allocator.allocate().unwrap();
                assert!(seen.insert(id), "producer id {id} handed out twice");
            }
        }
    }

    fn fresh() -> ProducerIdFloor {
        ProducerIdFloor {
            seen_max: -1,
            data_present: false,
            partitions_offline: 0,
        }
    }

    fn open_allocator(store: &SledMetadataStore, floor: ProducerIdFloor) -> ProducerIdAllocator {
        ProducerIdAllocator::open(std::sync::Arc::new(store.clone()), 10, floor).unwrap()
    }

    #[test]
    fn a_fresh_directory_starts_at_zero_and_records_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.producer_id_counter().unwrap(), None);
        let allocator = open_allocator(&store, fresh());
        assert_eq!(
            store.producer_id_counter().unwrap(),
            Some(0),
            "recorded before any id"
        );
        assert_eq!(allocator.allocate().unwrap(), 0);
        assert_eq!(store.producer_id_counter().unwrap(), Some(10));
    }

    #[test]
    fn a_damaged_counter_is_recovered_above_the_partitions_never_restarted_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        open_allocator(&store, fresh()).allocate().unwrap();
        // One bit of the record's body flipped: its CRC catches it.
        let mut value = store.db.get(PRODUCER_IDS_KEY).unwrap().unwrap().to_vec();
        let last = value.len() - 2;
        value[last] ^= 0x01;
        store.db.insert(PRODUCER_IDS_KEY, value).unwrap();
        assert!(matches!(
            store.producer_id_counter(),
            Err(MetadataError::Corrupt { .. })
        ));
        let floor = ProducerIdFloor {
            seen_max: 7,
            data_present: true,
            partitions_offline: 0,
        };
        let id = open_allocator(&store, floor).allocate().unwrap();
        assert_eq!(id, 8 + PRODUCER_ID_RECOVERY_GAP);
        assert_eq!(
            store.producer_id_counter().unwrap(),
            Some(8 + PRODUCER_ID_RECOVERY_GAP + 10),
            "the recovered counter is persisted"
        );
    }

    #[test]
    fn a_missing_counter_on_a_directory_with_topics_is_recovered_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        // Topics exist but no partition saw a producer: still above every id ever handed out
        // that might be live, so never 0.
        let floor = ProducerIdFloor {
            seen_max: -1,
            data_present: true,
            partitions_offline: 0,
        };
        assert_eq!(
            open_allocator(&store, floor).allocate().unwrap(),
            PRODUCER_ID_RECOVERY_GAP
        );
        store.db.remove(PRODUCER_IDS_KEY).unwrap();
        let floor = ProducerIdFloor {
            seen_max: 41,
            data_present: true,
            partitions_offline: 0,
        };
        assert_eq!(
            open_allocator(&store, floor).allocate().unwrap(),
            42 + PRODUCER_ID_RECOVERY_GAP
        );
    }

    #[test]
    fn a_counter_behind_the_partitions_continues_above_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        store.put_producer_id_counter(5).unwrap();
        let sound = ProducerIdFloor {
            seen_max: 4,
            data_present: true,
            partitions_offline: 0,
        };
        assert_eq!(open_allocator(&store, sound).allocate().unwrap(), 5);
        let behind = ProducerIdFloor {
            seen_max: 1_000,
            data_present: true,
            partitions_offline: 0,
        };
        assert_eq!(
            open_allocator(&store, behind).allocate().unwrap(),
            1_001 + PRODUCER_ID_RECOVERY_GAP
        );
    }

    #[test]
    fn only_ids_below_the_next_one_count_as_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        store.put_producer_id_counter(30).unwrap();
        let allocator = open_allocator(&store, fresh());
        // An earlier run handed out ids below its counter.
        assert!(allocator.may_have_handed_out(29));
        assert!(!allocator.may_have_handed_out(30));
        assert!(!allocator.may_have_handed_out(-1));
        assert_eq!(allocator.allocate().unwrap(), 30);
        assert!(allocator.may_have_handed_out(30));
        assert!(!allocator.may_have_handed_out(31));
    }

    #[test]
    fn a_counter_lost_while_running_does_not_send_ids_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledMetadataStore::open(dir.path()).unwrap();
        let allocator = open_allocator(&store, fresh());
        let mut last = -1;
        for round in 0..25 {
            if round % 7 == 3 {
                store.db.remove(PRODUCER_IDS_KEY).unwrap();
            }
            let id = allocator.allocate().unwrap();
            assert!(id > last, "id {id} after {last}");
            last = id;
        }
    }

    #[test]
    fn damaged_record_is_reported_as_corrupt() {
        let mut encoded = encode_record("topic/x", &record("x")).unwrap();
        let last = encoded.len() - 1;
        encoded[last] ^= 1;
        let decoded: Result<TopicRecord, _> = decode_record("topic/x", &encoded);
        assert!(matches!(decoded, Err(MetadataError::Corrupt { .. })));
        let decoded: Result<TopicRecord, _> = decode_record("topic/x", b"TL");
        assert!(matches!(decoded, Err(MetadataError::Corrupt { .. })));
    }
}
