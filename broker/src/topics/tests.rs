//! Registry tests on the real filesystem: what survives losing or damaging the metadata store,
//! names of every accepted length, interrupted deletes and creates, offline partitions.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatch, RecordBatchBuilder};

use super::*;
use crate::error::MetadataError;
use crate::metadata::SledMetadataStore;

const NOW_MS: i64 = 1_700_000_000_000;

fn config(data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: data_dir.to_path_buf(),
        ..BrokerConfig::default()
    }
}

/// The broker's descriptor budget and file cache, as `Broker::start` makes them.
fn test_resources() -> StorageResources {
    StorageResources::start(&config(Path::new(".")).limits).unwrap()
}

fn open(data_dir: &Path) -> TopicRegistry {
    let store = SledMetadataStore::open(&data_dir.join("metadata")).unwrap();
    TopicRegistry::open(&config(data_dir), Box::new(store), test_resources()).unwrap()
}

fn spec(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions: Some(partitions),
        overrides: TopicOverrides {
            retention_ms: Some(-1),
            ..TopicOverrides::default()
        },
    }
}

fn batch(records: usize) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    for index in 0..records {
        builder.push(&NewRecord {
            timestamp: NOW_MS + index as i64,
            key: None,
            value: Some(Bytes::from(format!("value-{index}"))),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, _) = RecordBatch::split_first(&bytes).expect("builder output parses");
    batch
}

/// Appends `records` records to every partition and returns each partition's high watermark.
fn fill(registry: &TopicRegistry, name: &str, records: usize) -> Vec<i64> {
    let topic = registry.get(name).unwrap();
    topic
        .online_partitions()
        .map(|(_, log)| {
            log.append(&[batch(records)], NOW_MS).unwrap();
            log.sync().unwrap();
            log.high_watermark()
        })
        .collect()
}

fn high_watermarks(registry: &TopicRegistry, name: &str) -> Vec<Option<i64>> {
    let topic = registry.get(name).unwrap();
    topic
        .partitions
        .iter()
        .map(|slot| slot.log().map(|log| log.high_watermark()))
        .collect()
}

fn close(registry: TopicRegistry) {
    assert!(registry.close_all().is_empty());
}

fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("topics").join(name)
}

/// A store whose topic records all read back as damaged, like a flipped byte in each.
#[derive(Debug)]
struct DamagedTopics(SledMetadataStore);

impl MetadataStore for DamagedTopics {
    fn topics(&self) -> Result<Vec<crate::metadata::StoredTopic>, MetadataError> {
        Ok(self
            .0
            .topics()?
            .into_iter()
            .map(|(name, _)| {
                let damaged = MetadataError::Corrupt {
                    key: format!("topic/{name}"),
                    reason: "checksum mismatch".into(),
                };
                (name, Err(damaged))
            })
            .collect())
    }
    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError> {
        self.0.put_topic(record)
    }
    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError> {
        self.0.delete_topic(name)
    }
    fn groups(&self) -> Result<Vec<Result<crate::metadata::GroupRecord, MetadataError>>, MetadataError> {
        self.0.groups()
    }
    fn put_group(&self, record: &crate::metadata::GroupRecord) -> Result<(), MetadataError> {
        self.0.put_group(record)
    }
    fn delete_group(&self, group_id: &str) -> Result<bool, MetadataError> {
        self.0.delete_group(group_id)
    }
    fn committed_offsets(
        &self,
    ) -> Result<Vec<Result<crate::metadata::OffsetRecord, MetadataError>>, MetadataError> {
        self.0.committed_offsets()
    }
    fn put_offsets(&self, records: &[crate::metadata::OffsetRecord]) -> Result<(), MetadataError> {
        self.0.put_offsets(records)
    }
    fn producer_id_counter(&self) -> Result<Option<i64>, MetadataError> {
        self.0.producer_id_counter()
    }
    fn put_producer_id_counter(&self, next: i64) -> Result<(), MetadataError> {
        self.0.put_producer_id_counter(next)
    }
}

#[test]
fn kafka_topic_name_rules_are_enforced() {
    for good in ["orders", "a.b-c_d", "X9", &"t".repeat(249)] {
        validate_topic_name(good, 249).unwrap();
    }
    for bad in ["", ".", "..", "a/b", "a b", "ü", &"t".repeat(250)] {
        assert!(validate_topic_name(bad, 249).is_err(), "{bad:?}");
    }
}

#[test]
fn a_lost_metadata_directory_is_rebuilt_from_the_manifests_and_create_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 3), NOW_MS).unwrap();
    let filled = fill(&registry, "orders", 10);
    close(registry);
    fs::remove_dir_all(dir.path().join("metadata")).unwrap();

    let registry = open(dir.path());
    let topic = registry.get("orders").expect("topic recovered from its manifest");
    assert_eq!(topic.record.partitions, 3);
    assert_eq!(topic.record.overrides.retention_ms, Some(-1), "overrides kept");
    let again = registry.create(spec("orders", 1), NOW_MS);
    assert!(matches!(again, Err(TopicError::AlreadyExists(_))), "{again:?}");
    close(registry);

    // The rebuilt record was written: the next start needs no manifest rebuild and still has
    // every record.
    let registry = open(dir.path());
    let expected: Vec<Option<i64>> = filled.into_iter().map(Some).collect();
    assert_eq!(high_watermarks(&registry, "orders"), expected);
    close(registry);
}

#[test]
fn a_damaged_topic_record_is_rebuilt_from_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("events", 2), NOW_MS).unwrap();
    let filled = fill(&registry, "events", 7);
    close(registry);

    let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
    let registry = TopicRegistry::open(
        &config(dir.path()),
        Box::new(DamagedTopics(store)),
        test_resources(),
    )
    .unwrap();
    assert_eq!(
        high_watermarks(&registry, "events"),
        filled.into_iter().map(Some).collect::<Vec<_>>()
    );
    assert!(matches!(
        registry.create(spec("events", 2), NOW_MS),
        Err(TopicError::AlreadyExists(_))
    ));
    close(registry);
}

#[test]
fn without_record_or_manifest_the_partition_directories_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("bare", 4), NOW_MS).unwrap();
    let filled = fill(&registry, "bare", 5);
    close(registry);
    fs::remove_dir_all(dir.path().join("metadata")).unwrap();
    fs::write(
        topic_dir(dir.path(), "bare").join(manifest::MANIFEST_FILE_NAME),
        b"garbage",
    )
    .unwrap();

    let registry = open(dir.path());
    assert_eq!(
        high_watermarks(&registry, "bare"),
        filled.into_iter().map(Some).collect::<Vec<_>>()
    );
    assert!(matches!(
        registry.create(spec("bare", 1), NOW_MS),
        Err(TopicError::AlreadyExists(_))
    ));
    close(registry);
    // A fresh manifest was written for the recovered topic.
    assert_eq!(
        manifest::read(&topic_dir(dir.path(), "bare")).unwrap().partitions,
        4
    );
}

#[test]
fn an_unrecoverable_directory_refuses_creates_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let stray = topic_dir(dir.path(), "mystery");
    fs::create_dir_all(&stray).unwrap();
    fs::write(stray.join("notes.txt"), b"someone's bytes").unwrap();

    let registry = open(dir.path());
    let refused = registry.create(spec("mystery", 1), NOW_MS);
    assert!(
        matches!(refused, Err(TopicError::DataOnDisk { .. })),
        "{refused:?}"
    );
    assert!(
        stray.join("notes.txt").exists(),
        "a refused create must not touch the directory"
    );
    registry.delete("mystery").unwrap();
    registry.create(spec("mystery", 1), NOW_MS).unwrap();
    close(registry);
}

#[test]
fn a_directory_that_appears_while_running_is_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let stray = topic_dir(dir.path(), "late").join("0");
    fs::create_dir_all(&stray).unwrap();
    let refused = registry.create(spec("late", 1), NOW_MS);
    assert!(
        matches!(refused, Err(TopicError::DataOnDisk { .. })),
        "{refused:?}"
    );
    assert!(stray.is_dir());
    close(registry);
}

#[test]
fn names_of_every_accepted_length_create_delete_and_create_again() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let max = BrokerConfig::default().limits.topic_name_bytes_max;
    let lengths = [1, 100, 200, 235].into_iter().chain(236..=max);
    for length in lengths {
        let name = "n".repeat(length);
        for round in 0..2 {
            registry
                .create(spec(&name, 2), NOW_MS)
                .unwrap_or_else(|error| panic!("create of a {length}-byte name, round {round}: {error}"));
            assert_eq!(
                fill(&registry, &name, 1),
                vec![1, 1],
                "fresh topic, round {round}"
            );
            registry
                .delete(&name)
                .unwrap_or_else(|error| panic!("delete of a {length}-byte name, round {round}: {error}"));
            assert!(!topic_dir(dir.path(), &name).exists());
        }
    }
    close(registry);
    // Nothing was left in the staging trees.
    for tree in ["creating", "deleting"] {
        assert_eq!(fs::read_dir(dir.path().join(tree)).unwrap().count(), 0, "{tree}/");
    }
}

#[test]
fn a_delete_interrupted_after_the_move_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("going", 2), NOW_MS).unwrap();
    fill(&registry, "going", 3);
    let id = registry.get("going").unwrap().record.topic_id.clone();
    close(registry);
    // The crash: the directory is in deleting/, the record still in the store.
    fs::rename(
        topic_dir(dir.path(), "going"),
        dir.path().join("deleting").join(&id),
    )
    .unwrap();

    let registry = open(dir.path());
    assert!(registry.get("going").is_none(), "the delete was finished");
    assert_eq!(fs::read_dir(dir.path().join("deleting")).unwrap().count(), 0);
    registry.create(spec("going", 1), NOW_MS).unwrap();
    assert_eq!(
        high_watermarks(&registry, "going"),
        vec![Some(0)],
        "a new, empty topic"
    );
    close(registry);
}

#[test]
fn an_interrupted_create_is_removed_at_start_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let staging = dir
        .path()
        .join("creating")
        .join("0123456789abcdef0123456789abcdef");
    fs::create_dir_all(staging.join("0")).unwrap();

    let registry = open(dir.path());
    assert!(!staging.exists());
    assert!(registry.list().is_empty());
    close(registry);
}

#[test]
fn a_partition_that_cannot_open_is_offline_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("mixed", 3), NOW_MS).unwrap();
    registry.create(spec("healthy", 1), NOW_MS).unwrap();
    fill(&registry, "mixed", 4);
    fill(&registry, "healthy", 4);
    close(registry);
    // Partition 1's data file claims a newer format version (an intact header otherwise).
    let log_file = topic_dir(dir.path(), "mixed")
        .join("1")
        .join("00000000000000000000.log");
    let mut bytes = fs::read(&log_file).unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_be_bytes());
    fs::write(&log_file, &bytes).unwrap();

    let registry = open(dir.path());
    assert_eq!(high_watermarks(&registry, "mixed"), vec![Some(4), None, Some(4)]);
    assert_eq!(high_watermarks(&registry, "healthy"), vec![Some(4)]);
    let topic = registry.get("mixed").unwrap();
    let Some(PartitionSlot::Offline(reason)) = topic.slot(1) else {
        panic!("partition 1 should be offline");
    };
    assert!(
        !reason.contains(dir.path().to_str().unwrap()),
        "no paths for clients: {reason}"
    );
    // The offline partition's files are left exactly as they were.
    assert_eq!(fs::read(&log_file).unwrap(), bytes);
    close(registry);
}

#[test]
fn a_missing_partition_directory_is_offline_not_recreated_empty() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("holey", 2), NOW_MS).unwrap();
    fill(&registry, "holey", 2);
    close(registry);
    fs::remove_dir_all(topic_dir(dir.path(), "holey").join("0")).unwrap();

    let registry = open(dir.path());
    assert_eq!(high_watermarks(&registry, "holey"), vec![None, Some(2)]);
    assert!(!topic_dir(dir.path(), "holey").join("0").exists());
    close(registry);
}

#[test]
fn topics_created_before_manifests_get_one_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("legacy", 1), NOW_MS).unwrap();
    close(registry);
    // What an older broker left: a record without an id, no manifest.
    fs::remove_file(topic_dir(dir.path(), "legacy").join(manifest::MANIFEST_FILE_NAME)).unwrap();
    {
        let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
        let mut record = store.topics().unwrap().remove(0).1.unwrap();
        record.topic_id.clear();
        store.put_topic(&record).unwrap();
    }
    let registry = open(dir.path());
    let record = registry.get("legacy").unwrap().record.clone();
    assert!(!record.topic_id.is_empty());
    assert_eq!(manifest::read(&topic_dir(dir.path(), "legacy")).unwrap(), record);
    close(registry);
}

#[test]
fn a_topic_beyond_a_lowered_name_limit_is_left_untouched_and_served_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let long = "l".repeat(200);
    let registry = open(dir.path());
    registry.create(spec(&long, 1), NOW_MS).unwrap();
    let filled = fill(&registry, &long, 6);
    close(registry);

    let mut lowered = config(dir.path());
    lowered.limits.topic_name_bytes_max = 100;
    let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
    let registry = TopicRegistry::open(&lowered, Box::new(DamagedTopics(store)), test_resources()).unwrap();
    assert!(registry.get(&long).is_none());
    close(registry);
    assert!(topic_dir(dir.path(), &long).join("0").is_dir());
    // The record (read as damaged) was not taken for one without data and removed.
    {
        let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
        let names: Vec<String> = store
            .topics()
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, vec![long.clone()]);
    }

    let registry = open(dir.path());
    assert_eq!(
        high_watermarks(&registry, &long),
        filled.into_iter().map(Some).collect::<Vec<_>>()
    );
    close(registry);
}

/// A store whose topic writes fail, like a full disk under sled.
#[derive(Debug)]
struct FailingTopicWrites(SledMetadataStore);

impl MetadataStore for FailingTopicWrites {
    fn topics(&self) -> Result<Vec<crate::metadata::StoredTopic>, MetadataError> {
        self.0.topics()
    }
    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError> {
        Err(MetadataError::Encode {
            key: format!("topic/{}", record.name),
            reason: "injected write failure".into(),
        })
    }
    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError> {
        self.0.delete_topic(name)
    }
    fn groups(&self) -> Result<Vec<Result<crate::metadata::GroupRecord, MetadataError>>, MetadataError> {
        self.0.groups()
    }
    fn put_group(&self, record: &crate::metadata::GroupRecord) -> Result<(), MetadataError> {
        self.0.put_group(record)
    }
    fn delete_group(&self, group_id: &str) -> Result<bool, MetadataError> {
        self.0.delete_group(group_id)
    }
    fn committed_offsets(
        &self,
    ) -> Result<Vec<Result<crate::metadata::OffsetRecord, MetadataError>>, MetadataError> {
        self.0.committed_offsets()
    }
    fn put_offsets(&self, records: &[crate::metadata::OffsetRecord]) -> Result<(), MetadataError> {
        self.0.put_offsets(records)
    }
    fn producer_id_counter(&self) -> Result<Option<i64>, MetadataError> {
        self.0.producer_id_counter()
    }
    fn put_producer_id_counter(&self, next: i64) -> Result<(), MetadataError> {
        self.0.put_producer_id_counter(next)
    }
}

#[test]
fn a_create_whose_record_cannot_be_written_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
    let registry = TopicRegistry::open(
        &config(dir.path()),
        Box::new(FailingTopicWrites(store)),
        test_resources(),
    )
    .unwrap();
    assert!(registry.create(spec("unlucky", 3), NOW_MS).is_err());
    assert!(registry.get("unlucky").is_none());
    assert!(
        !topic_dir(dir.path(), "unlucky").exists(),
        "the new directory was taken back"
    );
    close(registry);
    // The next start does not "recover" a topic whose create failed, and the name is free.
    let registry = open(dir.path());
    assert!(registry.get("unlucky").is_none());
    registry.create(spec("unlucky", 1), NOW_MS).unwrap();
    close(registry);
}

#[test]
fn a_create_that_fails_on_the_filesystem_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    // The staging tree is unusable (a file where the directory should be).
    let creating = dir.path().join("creating");
    fs::remove_dir(&creating).unwrap();
    fs::write(&creating, b"in the way").unwrap();
    assert!(matches!(
        registry.create(spec("blocked", 2), NOW_MS),
        Err(TopicError::Io { .. })
    ));
    assert!(!topic_dir(dir.path(), "blocked").exists());
    fs::remove_file(&creating).unwrap();
    fs::create_dir(&creating).unwrap();
    registry.create(spec("blocked", 2), NOW_MS).unwrap();
    assert_eq!(fill(&registry, "blocked", 2), vec![2, 2]);
    close(registry);
}
