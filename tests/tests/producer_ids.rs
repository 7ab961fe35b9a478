//! The producer-id counter on the real `tidelogd`: whatever happens to its record in the
//! metadata store while the broker is stopped (a flipped bit that makes sled drop it, a store
//! rolled back to an old value, the whole metadata directory lost), the next producer gets an
//! id above every id the partitions hold, and its records are stored, not taken for
//! duplicates of an older producer's. Also: an id not handed out yet cannot be bumped.

use std::path::Path;

use tidelog_broker::metadata::{MetadataStore, SledMetadataStore};
use tidelog_e2e::producers::{init_producer_id, init_producer_id_response, stamped_batch};
use tidelog_e2e::records::{read_partition, StoredRecord};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

const TOPIC: &str = "producer-ids";

fn values(records: &[StoredRecord]) -> Vec<String> {
    records.iter().map(StoredRecord::value_text).collect()
}

/// Every place under `dir` where `needle` occurs: (file, byte offset).
fn find_in_files(dir: &std::path::Path, needle: &[u8]) -> Vec<(std::path::PathBuf, usize)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    // Bounded: sled's directory holds a handful of files and one level of subdirectories.
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing the metadata directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("reading a metadata file");
            let mut at = 0;
            while let Some(position) = bytes[at..]
                .windows(needle.len())
                .position(|window| window == needle)
            {
                found.push((path.clone(), at + position));
                at += position + 1;
            }
        }
    }
    found
}

/// A producer stores 10 records; the broker stops; `damage` is done to the data directory;
/// after a restart a new producer's 10 different records must all be stored, under an id
/// above the old one, and the damage must have been logged at ERROR.
fn new_producer_records_survive(test_name: &str, damage: impl FnOnce(&Path)) {
    let dir = TestDir::new(test_name);
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 1, None);
    let (old_id, old_epoch) = init_producer_id(&mut client);
    let old: Vec<String> = (0..10).map(|n| format!("old-{n}")).collect();
    assert_eq!(
        client.produce_ok(TOPIC, 0, stamped_batch(old_id, old_epoch, 0, &old)),
        0
    );
    broker.terminate_and_wait();
    damage(&dir.data_dir());

    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (new_id, new_epoch) = init_producer_id(&mut client);
    let new: Vec<String> = (0..10).map(|n| format!("new-{n}")).collect();
    let response = client
        .produce(TOPIC, 0, stamped_batch(new_id, new_epoch, 0, &new))
        .expect("produce");
    let (records, high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
    assert_eq!(
        high_watermark,
        20,
        "every new record stored (answer: {response:?}; ids {old_id} then {new_id}):\n{}",
        broker.logs()
    );
    let expected: Vec<String> = old.iter().chain(&new).cloned().collect();
    assert_eq!(values(&records), expected);
    assert_eq!(response.error(), ErrorCode::None, "{response:?}");
    assert_eq!((response.base_offset, response.last_offset), (10, 19));
    assert!(new_id > old_id, "id {new_id} after {old_id}: ids went backwards");
    let log = broker.log_text();
    assert!(
        log.lines()
            .any(|line| line.contains("ERROR") && line.contains("producer id counter")),
        "the damage is logged at ERROR:\n{}",
        broker.logs()
    );
}

/// Seen: one flipped bit in the stored producer-id counter made sled drop the record; the
/// counter restarted at 0, the next producer got the id an earlier one had used, and its 10
/// different records were acknowledged as duplicates of that one's and never stored.
#[test]
fn a_flipped_bit_in_the_counter_record_never_makes_new_records_look_like_duplicates() {
    new_producer_records_survive("producer-ids-flip", |data_dir| {
        // Flip one bit of the counter's value in the newest copy of its record on disk.
        let metadata = data_dir.join("metadata");
        let key = b"producer-ids/next";
        let copies = find_in_files(&metadata, key);
        let (path, key_at) = copies
            .iter()
            .max_by_key(|(path, at)| (std::fs::metadata(path).map(|m| m.len()).unwrap_or(0), *at))
            .cloned()
            .unwrap_or_else(|| panic!("no {key:?} record under {}", metadata.display()));
        let mut bytes = std::fs::read(&path).unwrap();
        let value = b"next = ";
        let value_at = bytes[key_at..]
            .windows(value.len())
            .take(256)
            .position(|window| window == value)
            .map(|position| key_at + position + value.len())
            .unwrap_or_else(|| panic!("the counter's value follows its key in {}", path.display()));
        bytes[value_at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
    });
}

/// A metadata store put back from an old backup: the counter is sound but behind the ids the
/// partitions hold.
#[test]
fn a_counter_rolled_back_to_zero_continues_above_the_partitions() {
    new_producer_records_survive("producer-ids-rollback", |data_dir| {
        let store = SledMetadataStore::open(&data_dir.join("metadata")).expect("opening the store");
        store
            .put_producer_id_counter(0)
            .expect("rolling the counter back");
    });
}

/// The whole metadata directory lost: the topics are recovered from their manifests, and the
/// counter from the partitions.
#[test]
fn a_lost_metadata_directory_does_not_restart_producer_ids_at_zero() {
    new_producer_records_survive("producer-ids-lost-metadata", |data_dir| {
        std::fs::remove_dir_all(data_dir.join("metadata")).expect("deleting the metadata directory");
    });
}

#[test]
fn only_a_handed_out_producer_id_can_have_its_epoch_bumped() {
    let dir = TestDir::new("producer-ids-bump");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (id, epoch) = init_producer_id(&mut client);
    let bumped = init_producer_id_response(&mut client, id, i32::from(epoch));
    assert_eq!(bumped.error(), ErrorCode::None, "{bumped:?}");
    assert_eq!(
        (bumped.producer_id, bumped.producer_epoch),
        (id, i32::from(epoch) + 1)
    );
    let never = init_producer_id_response(&mut client, id + 1_000_000, 0);
    assert_eq!(never.error(), ErrorCode::InvalidRequest, "{never:?}");
    // The refused id is still handed out to a new producer later, with epoch 0, unshared.
    let (next, next_epoch) = init_producer_id(&mut client);
    assert_eq!((next, next_epoch), (id + 1, 0));
}
