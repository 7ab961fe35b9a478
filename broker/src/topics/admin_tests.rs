//! Registry tests of the topic capabilities the Kafka admin APIs need: persistent topic
//! UUIDs (surviving restarts and metadata loss, and given to topics from older brokers).

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
