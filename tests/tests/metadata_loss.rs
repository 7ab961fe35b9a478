//! The metadata store never decides to delete records. With the broker SIGKILLed, its sled
//! metadata is damaged on disk (a byte flipped in the topic's record, or the whole directory
//! deleted); the restarted broker must still serve every acknowledged record, a `topic create`
//! of the same name (what applications run at startup) must answer TOPIC_ALREADY_EXISTS and
//! leave the data where it is, and so must every later start. Also: names of every accepted
//! length can be created, used, deleted and created again; and a partition that cannot open
//! is offline on its own while the rest of the broker serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const PARTITIONS: u32 = 2;
const RECORDS: usize = 5_000;
const RECORDS_PER_BATCH: usize = 100;
/// The topic-name limit of a default broker (limits.topic_name_bytes_max).
const TOPIC_NAME_BYTES_MAX: usize = 249;

fn value(partition: u32, index: usize) -> String {
    format!("p{partition}-record-{index:05}")
}

/// Produces [`RECORDS`] records spread over the partitions; returns the values per partition.
fn produce_all(client: &mut RawClient, topic: &str) -> Vec<Vec<String>> {
    let mut sent: Vec<Vec<String>> = (0..PARTITIONS).map(|_| Vec::new()).collect();
    for chunk in 0..RECORDS / RECORDS_PER_BATCH {
        let partition = chunk as u32 % PARTITIONS;
        let values: Vec<String> = (0..RECORDS_PER_BATCH)
            .map(|index| value(partition, sent[partition as usize].len() + index))
            .collect();
        let base = client.produce_ok(topic, partition, batch_of(&values));
        assert_eq!(base, sent[partition as usize].len() as i64, "dense offsets");
        sent[partition as usize].extend(values);
    }
    sent
}

/// Every acknowledged record is there, at its offset, with its value.
fn assert_all_there(broker: &BrokerProcess, topic: &str, sent: &[Vec<String>], when: &str) {
    let mut client = RawClient::connect_or_panic(broker.addr());
    for (partition, values) in sent.iter().enumerate() {
        let (records, high_watermark) = read_partition(&mut client, topic, partition as u32, 0);
        assert_eq!(
            high_watermark,
            values.len() as i64,
            "{when}: {topic}/{partition} high watermark"
        );
        assert_dense(&records, 0, when);
        let read: Vec<String> = records.iter().map(|record| record.value_text()).collect();
        assert_eq!(&read, values, "{when}: {topic}/{partition} values");
    }
}

fn create_result(broker: &BrokerProcess, topic: &str, partitions: u32) -> pb::TopicResult {
    RawClient::connect_or_panic(broker.addr()).create_topic_result(topic, partitions, None)
}

/// What an application does at startup: create the topic, accepting that it exists. The
/// broker must say it exists (the recovered topic), never make a new one.
fn create_at_startup(broker: &BrokerProcess, topic: &str) {
    let result = create_result(broker, topic, PARTITIONS);
    assert_eq!(
        result.error(),
        ErrorCode::TopicAlreadyExists,
        "create of {topic} after metadata damage: {result:?}\n{}",
        broker.logs()
    );
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains(" ERROR ")).collect()
}

/// Every file under `dir`, recursively (bounded: sled's directory is two levels deep).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    for _ in 0..1_000 {
        let Some(dir) = pending.pop() else { break };
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Starts a broker, creates `topic` and fills it; returns the broker (SIGKILLed), what was
/// acknowledged and the topic's id.
fn crashed_with_records(dir: &TestDir, topic: &str) -> (BrokerProcess, Vec<Vec<String>>, String) {
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(topic, PARTITIONS, None);
    let sent = produce_all(&mut client, topic);
    let id = topic_id(&mut client, topic);
    assert_eq!(id.len(), 36, "a hyphenated UUID: {id:?}");
    drop(client);
    broker.kill9();
    (broker, sent, id)
}

fn topic_id(client: &mut RawClient, topic: &str) -> String {
    client.metadata(&[topic]).topics.remove(0).topic_id
}

/// Restarts, creates the same name as an application would, restarts again: every record is
/// still served each time.
fn assert_survives_create_and_restarts(broker: &mut BrokerProcess, topic: &str, sent: &[Vec<String>]) {
    broker.restart();
    create_at_startup(broker, topic);
    assert_all_there(broker, topic, sent, "after the restart and create");
    assert!(
        !error_lines(&broker.log_text()).is_empty(),
        "the rebuild from the manifest must be logged at ERROR:\n{}",
        broker.log_text()
    );
    broker.kill9();
    broker.restart();
    create_at_startup(broker, topic);
    assert_all_there(broker, topic, sent, "after a second restart");
    broker.terminate_and_wait();
    broker.restart();
    assert_all_there(broker, topic, sent, "after a clean restart");
}

#[test]
fn a_flipped_byte_in_the_topic_record_loses_no_record() {
    let dir = TestDir::new("metadata-flip");
    let topic = "flipped-record";
    let (mut broker, sent, _) = crashed_with_records(&dir, topic);
    // The record's TOML body names the topic; flip a byte inside that name wherever sled keeps
    // it, so the record no longer passes sled's or our checks.
    let needle = format!("name = \"{topic}\"");
    let mut flipped = 0;
    for file in files_under(&dir.data_dir().join("metadata")) {
        let mut bytes = std::fs::read(&file).unwrap();
        let mut changed = false;
        let mut at = 0;
        while let Some(found) = bytes[at..]
            .windows(needle.len())
            .position(|window| window == needle.as_bytes())
        {
            let byte = at + found + "name = \"".len() + 2;
            bytes[byte] ^= 0x01;
            changed = true;
            flipped += 1;
            at += found + needle.len();
        }
        if changed {
            std::fs::write(&file, &bytes).unwrap();
        }
    }
    assert!(flipped > 0, "the topic record was not found in the sled files");
    assert_survives_create_and_restarts(&mut broker, topic, &sent);
}

#[test]
fn a_deleted_metadata_directory_loses_no_record() {
    let dir = TestDir::new("metadata-deleted");
    let topic = "lost-metadata";
    let (mut broker, sent, id) = crashed_with_records(&dir, topic);
    std::fs::remove_dir_all(dir.data_dir().join("metadata")).unwrap();
    assert_survives_create_and_restarts(&mut broker, topic, &sent);
    // The topic id comes back from the manifest: Kafka clients see the same topic.
    let mut client = RawClient::connect_or_panic(broker.addr());
    assert_eq!(topic_id(&mut client, topic), id);
}

#[test]
fn names_of_every_accepted_length_create_produce_delete_and_create_again() {
    let dir = TestDir::new("metadata-names");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    let names: Vec<String> = (1..=TOPIC_NAME_BYTES_MAX)
        .map(|length| {
            // Mixed characters, so no name is another's prefix by accident of repetition.
            let pattern = b"abcXYZ019._-";
            (0..length)
                .map(|at| pattern[(at + length) % pattern.len()] as char)
                .collect()
        })
        .collect();
    for name in &names {
        client.create_topic(name, 1, None);
        client.produce_ok(name, 0, batch_of(&["first incarnation"]));
        delete(&mut client, name);
        client.create_topic(name, 1, None);
        client.produce_ok(name, 0, batch_of(&["second", "incarnation"]));
    }
    let too_long = "x".repeat(TOPIC_NAME_BYTES_MAX + 1);
    let refused = client.create_topic_result(&too_long, 1, None);
    assert_eq!(refused.error(), ErrorCode::InvalidTopic, "{refused:?}");
    drop(client);

    broker.terminate_and_wait();
    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&[]);
    let listed: BTreeSet<&str> = metadata.topics.iter().map(|topic| topic.name.as_str()).collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect());
    for name in &names {
        let (records, _) = read_partition(&mut client, name, 0, 0);
        let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
        assert_eq!(values, ["second", "incarnation"], "{}-byte name", name.len());
        delete(&mut client, name);
    }
    assert!(client.metadata(&[]).topics.is_empty());
    for tree in ["topics", "deleting", "creating"] {
        let left = std::fs::read_dir(dir.data_dir().join(tree)).unwrap().count();
        assert_eq!(left, 0, "{tree}/ still holds {left} entries");
    }
}

fn delete(client: &mut RawClient, name: &str) {
    let body = pb::request::Body::DeleteTopics(pb::DeleteTopicsRequest {
        names: vec![name.to_owned()],
    });
    match client.call_ok(body) {
        pb::response::Body::DeleteTopics(response) => {
            let result = &response.topics[0];
            assert_eq!(
                result.error(),
                ErrorCode::None,
                "delete of a {}-byte name: {result:?}",
                name.len()
            );
        }
        other => panic!("unexpected DeleteTopics response: {other:?}"),
    }
}

/// Rewrites a segment file's header as a newer Tidelog would: version 2, CRC recomputed, so
/// the header is intact and storage refuses it instead of repairing it.
fn make_header_newer(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(file, &bytes).unwrap();
}

#[test]
fn a_partition_that_cannot_open_is_offline_while_the_rest_serve() {
    let dir = TestDir::new("metadata-offline");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("damaged", 3, None);
    client.create_topic("healthy", 1, None);
    for (topic, partition) in [("damaged", 0), ("damaged", 1), ("damaged", 2), ("healthy", 0)] {
        client.produce_ok(topic, partition, batch_of(&["a", "b", "c"]));
    }
    drop(client);
    broker.terminate_and_wait();
    let partition_dir = dir.data_dir().join("topics").join("damaged").join("1");
    make_header_newer(&partition_dir.join("00000000000000000000.log"));

    broker.restart();
    let log = broker.log_text();
    assert!(
        error_lines(&log).iter().any(|line| line.contains("offline")),
        "the offline partition must be logged at ERROR:\n{log}"
    );
    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&["damaged"]);
    let partitions = &metadata.topics[0].partitions;
    let codes: Vec<ErrorCode> = partitions.iter().map(|partition| partition.error()).collect();
    assert_eq!(
        codes,
        [ErrorCode::None, ErrorCode::KafkaStorageError, ErrorCode::None]
    );
    let message = &partitions[1].message;
    assert!(message.contains("offline"), "{message:?}");
    assert!(
        !message.contains(dir.path().to_str().unwrap()),
        "no data directory paths to clients: {message:?}"
    );

    let refused = client
        .produce("damaged", 1, batch_of(&["lost?"]))
        .expect("produce answered");
    assert_eq!(refused.error(), ErrorCode::KafkaStorageError, "{refused:?}");
    let refused = client.fetch("damaged", 1, 0, 0, 0);
    assert_eq!(refused.error(), ErrorCode::KafkaStorageError, "{refused:?}");
    let refused = client.list_offset("damaged", 1, -1);
    assert_eq!(refused.error(), ErrorCode::KafkaStorageError, "{refused:?}");

    for (topic, partition) in [("damaged", 0), ("damaged", 2), ("healthy", 0)] {
        assert_eq!(
            client.produce_ok(topic, partition, batch_of(&["d"])),
            3,
            "{topic}/{partition}"
        );
        let (records, high_watermark) = read_partition(&mut client, topic, partition, 0);
        assert_eq!((records.len(), high_watermark), (4, 4), "{topic}/{partition}");
    }
    // A create of the name is still refused (the topic exists), and nothing was moved.
    let again = client.create_topic_result("damaged", 3, None);
    assert_eq!(again.error(), ErrorCode::TopicAlreadyExists, "{again:?}");
    assert!(partition_dir.join("00000000000000000000.log").exists());
    drop(client);
    broker.terminate_and_wait();
}
