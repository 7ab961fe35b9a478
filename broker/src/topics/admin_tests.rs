//! Registry tests of the topic capabilities the Kafka admin APIs need: persistent topic
//! UUIDs (surviving restarts and metadata loss, and given to topics from older brokers), added
//! partitions, run-time configuration, trimmed log starts and auto-creation.

use std::path::{Path, PathBuf};

use super::*;
use crate::metadata::SledMetadataStore;

const NOW_MS: i64 = 1_700_000_000_000;

fn config(data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: data_dir.to_path_buf(),
        ..BrokerConfig::default()
    }
}

fn open(data_dir: &Path) -> TopicRegistry {
    let store = SledMetadataStore::open(&data_dir.join("metadata")).unwrap();
    let resources = StorageResources::start(&config(data_dir).limits).unwrap();
    TopicRegistry::open(&config(data_dir), Box::new(store), resources).unwrap()
}

fn close(registry: TopicRegistry) {
    assert!(registry.close_all().is_empty());
}

fn spec(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions: Some(partitions),
        overrides: TopicOverrides::default(),
    }
}

fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("topics").join(name)
}

fn stored_record(data_dir: &Path, name: &str) -> TopicRecord {
    stored_record_in(
        &SledMetadataStore::open(&data_dir.join("metadata")).unwrap(),
        name,
    )
}

#[test]
fn a_topic_id_is_a_random_uuid_kept_across_restarts_and_new_for_a_new_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let first = registry.create(spec("orders", 2), NOW_MS).unwrap().id();
    let other = registry.create(spec("payments", 1), NOW_MS).unwrap().id();
    assert_eq!(first.get_version_num(), 4);
    assert_ne!(first, other);
    assert_eq!(registry.get_by_id(first).unwrap().record.name, "orders");
    close(registry);

    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().id(), first);
    assert_eq!(
        manifest::read(&topic_dir(dir.path(), "orders")).unwrap().topic_id,
        first.simple().to_string()
    );
    registry.delete("orders").unwrap();
    assert!(registry.get_by_id(first).is_none());
    let again = registry.create(spec("orders", 2), NOW_MS).unwrap().id();
    assert_ne!(again, first);
    close(registry);
}

#[test]
fn a_topic_id_survives_losing_the_metadata_store() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let id = registry.create(spec("orders", 3), NOW_MS).unwrap().id();
    close(registry);
    fs::remove_dir_all(dir.path().join("metadata")).unwrap();

    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().id(), id);
    close(registry);
    assert_eq!(
        stored_record(dir.path(), "orders").topic_id,
        id.simple().to_string()
    );
}

#[test]
fn topics_from_before_uuids_get_one_persisted_before_they_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("legacy", 1), NOW_MS).unwrap();
    registry.create(spec("ancient", 1), NOW_MS).unwrap();
    close(registry);
    // What older brokers left: an id of time, process id and counter in a version 1 manifest
    // ("legacy"), and no id nor manifest at all ("ancient").
    let legacy_id = "18744a5bc3d2e1f00040000000000007".to_owned();
    {
        let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
        for (name, record) in store.topics().unwrap() {
            let mut record = record.unwrap();
            let topic_dir = topic_dir(dir.path(), &name);
            if name == "legacy" {
                record.topic_id = legacy_id.clone();
                let mut bytes = manifest::encode(&record).unwrap();
                bytes[4..6].copy_from_slice(&1u16.to_be_bytes());
                fs::write(manifest::path(&topic_dir), bytes).unwrap();
            } else {
                record.topic_id.clear();
                fs::remove_file(manifest::path(&topic_dir)).unwrap();
            }
            store.put_topic(&record).unwrap();
        }
    }

    let registry = open(dir.path());
    let mut ids = Vec::new();
    for name in ["legacy", "ancient"] {
        let topic = registry.get(name).unwrap();
        assert_eq!(topic.id().get_version_num(), 4, "{name}");
        assert_ne!(topic.record.topic_id, legacy_id);
        assert_eq!(
            manifest::read(&topic_dir(dir.path(), name)).unwrap(),
            topic.record
        );
        ids.push(topic.id());
    }
    close(registry);
    for (name, id) in ["legacy", "ancient"].into_iter().zip(&ids) {
        assert_eq!(stored_record(dir.path(), name).topic_id, id.simple().to_string());
    }
    // Given once: the next start keeps them.
    let registry = open(dir.path());
    assert_eq!(registry.get("legacy").unwrap().id(), ids[0]);
    assert_eq!(registry.get("ancient").unwrap().id(), ids[1]);
    close(registry);
}

#[test]
fn an_id_upgrade_interrupted_after_the_manifest_keeps_the_manifests_id() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let id = registry.create(spec("orders", 1), NOW_MS).unwrap().id();
    close(registry);
    // The crash window: the manifest has the new id, the record still the old one.
    {
        let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
        let mut record = stored_record_in(&store, "orders");
        record.topic_id = "18744a5bc3d2e1f00040000000000007".into();
        store.put_topic(&record).unwrap();
    }
    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().id(), id);
    close(registry);
    assert_eq!(
        stored_record(dir.path(), "orders").topic_id,
        id.simple().to_string()
    );
}

fn stored_record_in(store: &SledMetadataStore, name: &str) -> TopicRecord {
    store
        .topics()
        .unwrap()
        .into_iter()
        .find(|(found, _)| found == name)
        .unwrap()
        .1
        .unwrap()
}

fn batch(records: usize) -> tidelog_proto::batch::RecordBatch {
    use tidelog_proto::batch::{NewRecord, RecordBatch, RecordBatchBuilder};
    let mut builder = RecordBatchBuilder::new();
    for index in 0..records {
        builder.push(&NewRecord {
            timestamp: NOW_MS + index as i64,
            key: None,
            value: Some(bytes::Bytes::from(format!("value-{index}"))),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    RecordBatch::split_first(&bytes).expect("builder output parses").0
}

fn append(registry: &TopicRegistry, name: &str, partition: u32, records: usize) -> i64 {
    let log = registry.get(name).unwrap().partition(partition).unwrap().clone();
    log.append(&[batch(records)], NOW_MS).unwrap();
    log.sync().unwrap();
    log.high_watermark()
}

#[test]
fn added_partitions_serve_at_once_and_survive_restarts_and_metadata_loss() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let id = registry.create(spec("orders", 2), NOW_MS).unwrap().id();
    append(&registry, "orders", 1, 3);
    let topic = registry.add_partitions("orders", 5, false).unwrap();
    assert_eq!(topic.partitions.len(), 5);
    assert_eq!(topic.id(), id);
    assert_eq!(append(&registry, "orders", 4, 2), 2);
    close(registry);

    let registry = open(dir.path());
    let topic = registry.get("orders").unwrap();
    assert_eq!(topic.partitions.len(), 5);
    assert_eq!(topic.partition(1).unwrap().high_watermark(), 3);
    assert_eq!(topic.partition(4).unwrap().high_watermark(), 2);
    close(registry);
    fs::remove_dir_all(dir.path().join("metadata")).unwrap();
    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().partitions.len(), 5);
    close(registry);
}

#[test]
fn a_partition_count_only_grows_within_the_limits_and_validate_only_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 3), NOW_MS).unwrap();
    for count in [1, 3] {
        assert!(matches!(
            registry.add_partitions("orders", count, false),
            Err(TopicError::InvalidPartitionChange(_))
        ));
    }
    let max = config(dir.path()).limits.partitions_per_topic_max;
    assert!(matches!(
        registry.add_partitions("orders", max + 1, false),
        Err(TopicError::InvalidPartitions { .. })
    ));
    assert!(matches!(
        registry.add_partitions("nope", 4, false),
        Err(TopicError::UnknownTopic(_))
    ));
    assert_eq!(
        registry
            .add_partitions("orders", 4, true)
            .unwrap()
            .partitions
            .len(),
        3
    );
    assert_eq!(registry.get("orders").unwrap().partitions.len(), 3);
    assert!(!topic_dir(dir.path(), "orders").join("3").exists());
    close(registry);
}

#[test]
fn an_add_interrupted_before_its_manifest_keeps_the_old_count_and_the_next_add_reuses_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 1), NOW_MS).unwrap();
    close(registry);
    // What a crash after the new partition's directory (and its files) but before the
    // manifest leaves: a partition directory the manifest does not count.
    let partition_dir = topic_dir(dir.path(), "orders").join("1");
    {
        let log =
            crate::storage::PartitionLog::open(&partition_dir, crate::storage::LogConfig::default()).unwrap();
        log.close().unwrap();
    }
    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().partitions.len(), 1);
    assert!(
        partition_dir.exists(),
        "start never removes a partition directory"
    );
    registry.add_partitions("orders", 2, false).unwrap();
    assert_eq!(append(&registry, "orders", 1, 1), 1);
    close(registry);
}

#[test]
fn an_add_interrupted_after_its_manifest_keeps_the_new_count() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 1), NOW_MS).unwrap();
    registry.add_partitions("orders", 3, false).unwrap();
    append(&registry, "orders", 2, 4);
    close(registry);
    // The record still says 1: the crash came between the manifest and the record.
    {
        let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
        let mut record = stored_record_in(&store, "orders");
        record.partitions = 1;
        store.put_topic(&record).unwrap();
    }
    let registry = open(dir.path());
    assert_eq!(registry.get("orders").unwrap().partitions.len(), 3);
    assert_eq!(
        registry
            .get("orders")
            .unwrap()
            .partition(2)
            .unwrap()
            .high_watermark(),
        4
    );
    close(registry);
    assert_eq!(stored_record(dir.path(), "orders").partitions, 3);
}

fn set(name: &str, value: &str) -> ConfigChange {
    ConfigChange::Set {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn a_config_change_applies_to_open_partitions_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 2), NOW_MS).unwrap();
    // The smallest segment size a topic may have: the floor, and room for the largest batch.
    let limits = config(dir.path()).limits;
    let min = limits.segment_bytes_min.max(limits.batch_bytes_max as u64);
    let update = ConfigUpdate::Incremental(vec![
        set("segment.bytes", &min.to_string()),
        set("retention.ms", "60000"),
    ]);
    let topic = registry.alter_config("orders", &update, false).unwrap();
    assert_eq!(topic.record.overrides.segment_bytes, Some(min));
    assert_eq!(topic.log_config.retention_ms, 60_000);
    for (_, log) in topic.online_partitions() {
        assert_eq!(log.config().segment_bytes, min);
        assert_eq!(log.config().retention_ms, 60_000);
    }
    let entries = registry.config_entries(&topic);
    let retention = entries.iter().find(|entry| entry.name == "retention.ms").unwrap();
    assert_eq!(
        (retention.value.as_str(), retention.source),
        ("60000", ConfigSource::TopicOverride)
    );
    // Unset: back to the broker default.
    let unset = ConfigUpdate::Incremental(vec![ConfigChange::Unset {
        name: "retention.ms".into(),
    }]);
    let topic = registry.alter_config("orders", &unset, false).unwrap();
    assert_eq!(topic.log_config.retention_ms, config(dir.path()).log.retention_ms);
    close(registry);

    let registry = open(dir.path());
    let topic = registry.get("orders").unwrap();
    assert_eq!(topic.record.overrides.segment_bytes, Some(min));
    assert_eq!(topic.record.overrides.retention_ms, None);
    assert_eq!(topic.partition(0).unwrap().config().segment_bytes, min);
    assert_eq!(
        manifest::read(&topic_dir(dir.path(), "orders")).unwrap(),
        topic.record
    );
    // Replace: what is not named returns to the default.
    let replace = ConfigUpdate::Replace(vec![("retention.bytes".into(), Some("1000000".into()))]);
    let topic = registry.alter_config("orders", &replace, false).unwrap();
    assert_eq!(topic.record.overrides.segment_bytes, None);
    assert_eq!(topic.record.overrides.retention_bytes, Some(1_000_000));
    close(registry);
}

#[test]
fn config_changes_below_the_floors_or_of_the_flush_policy_are_refused_and_validate_only_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 1), NOW_MS).unwrap();
    for update in [
        vec![set("segment.bytes", "1024")],
        vec![set("segment.ms", "1")],
        vec![set("retention.ms", "0")],
        vec![set(config::FLUSH_POLICY, "never")],
        vec![set("no.such.config", "1")],
    ] {
        let refused = registry.alter_config("orders", &ConfigUpdate::Incremental(update.clone()), false);
        assert!(
            matches!(refused, Err(TopicError::InvalidConfig(_))),
            "{update:?}: {refused:?}"
        );
    }
    let checked = registry
        .alter_config(
            "orders",
            &ConfigUpdate::Incremental(vec![set("retention.ms", "5000")]),
            true,
        )
        .unwrap();
    assert_eq!(checked.record.overrides.retention_ms, None);
    assert_eq!(
        registry.get("orders").unwrap().record.overrides.retention_ms,
        None
    );
    close(registry);
}

#[test]
fn a_trim_hides_earlier_offsets_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    registry.create(spec("orders", 2), NOW_MS).unwrap();
    append(&registry, "orders", 0, 10);
    assert_eq!(registry.trim("orders", 0, 4, NOW_MS).unwrap(), 4);
    assert!(matches!(
        registry.trim("orders", 0, 11, NOW_MS),
        Err(TopicError::Storage(
            crate::storage::StorageError::OffsetOutOfRange { .. }
        ))
    ));
    assert!(matches!(
        registry.trim("orders", 7, 0, NOW_MS),
        Err(TopicError::UnknownPartition { .. })
    ));
    assert_eq!(registry.trim("orders", 1, -1, NOW_MS).unwrap(), 0);
    close(registry);
    let registry = open(dir.path());
    let log = registry.get("orders").unwrap().partition(0).unwrap().clone();
    assert_eq!(log.log_start_offset(), 4);
    assert!(log.read(3, 1 << 20).is_err());
    close(registry);
}

#[test]
fn auto_creation_happens_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    assert!(registry.get_or_auto_create("typo", NOW_MS).unwrap().is_none());
    assert!(registry.get("typo").is_none());
    close(registry);
    let store = SledMetadataStore::open(&dir.path().join("metadata")).unwrap();
    let config = BrokerConfig {
        auto_create_topics: true,
        ..config(dir.path())
    };
    let resources = StorageResources::start(&config.limits).unwrap();
    let registry = TopicRegistry::open(&config, Box::new(store), resources).unwrap();
    let topic = registry.get_or_auto_create("fresh", NOW_MS).unwrap().unwrap();
    assert_eq!(topic.partitions.len() as u32, config.log.partitions);
    assert_eq!(
        registry
            .get_or_auto_create("fresh", NOW_MS)
            .unwrap()
            .unwrap()
            .id(),
        topic.id()
    );
    assert!(matches!(
        registry.get_or_auto_create("bad name", NOW_MS),
        Err(TopicError::InvalidName { .. })
    ));
    close(registry);
}

#[test]
fn a_replacing_config_change_keeps_the_flush_policy_it_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let mut never = spec("orders", 1);
    never.overrides.flush = Some("never".into());
    registry.create(never, NOW_MS).unwrap();
    let replace = ConfigUpdate::Replace(vec![("retention.ms".into(), Some("60000".into()))]);
    let topic = registry.alter_config("orders", &replace, false).unwrap();
    assert_eq!(topic.record.overrides.flush.as_deref(), Some("never"));
    assert_eq!(topic.record.overrides.retention_ms, Some(60_000));
    let named = ConfigUpdate::Replace(vec![(config::FLUSH_POLICY.into(), Some("always".into()))]);
    assert!(matches!(
        registry.alter_config("orders", &named, false),
        Err(TopicError::InvalidConfig(_))
    ));
    close(registry);
}

#[test]
fn compaction_settings_are_set_at_create_changed_at_run_time_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let overrides = config::from_pairs(
        [
            ("cleanup.policy", Some("compact")),
            ("min.cleanable.dirty.ratio", Some("0.2")),
            ("delete.retention.ms", Some("1000")),
        ],
        &config(dir.path()).limits,
    )
    .unwrap();
    let topic = registry
        .create(
            TopicSpec {
                overrides,
                ..spec("changelog", 2)
            },
            NOW_MS,
        )
        .unwrap();
    for (_, log) in topic.online_partitions() {
        assert_eq!(
            log.config().cleanup_policy,
            crate::storage::CleanupPolicy::Compact
        );
        assert_eq!(log.config().compaction.min_cleanable_dirty_ratio, 0.2);
        assert_eq!(log.config().compaction.delete_retention_ms, 1000);
        // Not overridden: the broker's default.
        assert_eq!(log.config().compaction.max_compaction_lag_ms, i64::MAX);
    }
    // Kafka's bounds, judged on the effective settings.
    for update in [
        vec![set("min.cleanable.dirty.ratio", "1.5")],
        vec![set("min.compaction.lag.ms", "-1")],
        vec![set("max.compaction.lag.ms", "0")],
        vec![
            set("min.compaction.lag.ms", "10"),
            set("max.compaction.lag.ms", "5"),
        ],
        vec![set("delete.retention.ms", "-1")],
        vec![set("cleanup.policy", "archive")],
    ] {
        let refused = registry.alter_config("changelog", &ConfigUpdate::Incremental(update.clone()), false);
        assert!(
            matches!(refused, Err(TopicError::InvalidConfig(_))),
            "{update:?}: {refused:?}"
        );
    }
    let bad_create = TopicSpec {
        overrides: TopicOverrides {
            min_cleanable_dirty_ratio: Some(-0.5),
            ..TopicOverrides::default()
        },
        ..spec("bad", 1)
    };
    assert!(matches!(
        registry.create(bad_create, NOW_MS),
        Err(TopicError::InvalidConfig(_))
    ));
    // A changed policy applies to the open partitions at once.
    let topic = registry
        .alter_config(
            "changelog",
            &ConfigUpdate::Incremental(vec![set("cleanup.policy", "delete,compact")]),
            false,
        )
        .unwrap();
    assert_eq!(
        topic.record.overrides.cleanup_policy.as_deref(),
        Some("compact,delete")
    );
    for (_, log) in topic.online_partitions() {
        assert_eq!(
            log.config().cleanup_policy,
            crate::storage::CleanupPolicy::CompactDelete
        );
    }
    let entries = registry.config_entries(&topic);
    let policy = entries
        .iter()
        .find(|entry| entry.name == "cleanup.policy")
        .unwrap();
    assert_eq!(
        (policy.value.as_str(), policy.source),
        ("compact,delete", ConfigSource::TopicOverride)
    );
    close(registry);

    let registry = open(dir.path());
    let topic = registry.get("changelog").unwrap();
    assert_eq!(
        topic.log_config.cleanup_policy,
        crate::storage::CleanupPolicy::CompactDelete
    );
    assert_eq!(
        topic
            .partition(1)
            .unwrap()
            .config()
            .compaction
            .min_cleanable_dirty_ratio,
        0.2
    );
    close(registry);
}
