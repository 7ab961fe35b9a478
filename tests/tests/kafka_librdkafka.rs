//! librdkafka against the real `tidelogd`'s Kafka listener, twice: the recent one bundled in
//! confluent-kafka 2.16.1 (tests/clients/python/confluent.py; classic and KIP-848 groups), and
//! Debian's kcat 1.7.1 on librdkafka 2.0.2 (tests/clients/kcat/kcat.sh), older than 2.2, which
//! misreads tagged fields written with their default values.

use std::collections::BTreeMap;

use tidelog_e2e::cli::run_cli;
use tidelog_e2e::kafka_clients::{run_kcat_script, ScriptRun, SCRIPT_TIMEOUT};
use tidelog_e2e::kafka_scenario::{
    check_cluster, check_log, create_and_delete_topic, group_lifecycle, topic_lifecycle, Driver, Produced,
};
use tidelog_e2e::{BrokerProcess, TestDir};

const CONFLUENT: Driver = Driver::Confluent { kip848: false };
/// The topic of the kcat tests.
const TOPIC: &str = "kcat-orders";
/// Partitions of [`TOPIC`].
const PARTITIONS: u32 = 3;

#[test]
fn confluent_kafka_sees_one_broker_that_is_also_the_controller() {
    let dir = TestDir::new("confluent_cluster");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    check_cluster(CONFLUENT, broker.kafka_addr());
}

#[test]
fn confluent_kafka_creates_produces_consumes_in_a_group_resumes_and_deletes() {
    let dir = TestDir::new("confluent_lifecycle");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    topic_lifecycle(
        CONFLUENT,
        broker.kafka_addr(),
        "confluent-orders",
        "confluent-billing",
    );
}

#[test]
fn confluent_kafka_kip848_group_of_two_commits_and_resumes_at_the_commits() {
    let dir = TestDir::new("confluent_kip848");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    group_lifecycle(
        Driver::Confluent { kip848: true },
        broker.kafka_addr(),
        "kip848-orders",
        "kip848-billing",
    );
}

fn kcat(broker: &BrokerProcess, command: &str, args: &[&str]) -> ScriptRun {
    let bootstrap = broker.kafka_addr().to_string();
    let mut full = vec![command, "--bootstrap", bootstrap.as_str()];
    full.extend_from_slice(args);
    let run = run_kcat_script("kcat.sh", &full, SCRIPT_TIMEOUT);
    run.assert_success();
    run
}

/// kcat's `-J` records: (partition, offset, key, payload).
fn kcat_records(run: &ScriptRun) -> Vec<Produced> {
    run.events_named("consumed")
        .iter()
        .map(|event| {
            let record = &event["record"];
            Produced {
                key: record["key"].as_str().unwrap_or_default().to_owned(),
                value: record["payload"].as_str().unwrap_or_default().to_owned(),
                partition: record["partition"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no partition: {event}")) as u32,
                offset: record["offset"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("no offset: {event}")),
            }
        })
        .collect()
}

/// A broker with the topic TOPIC of 3 partitions (created with the CLI: kcat has no admin
/// commands), after checking what kcat -L says of the broker and the topic.
fn broker_with_kcat_topic(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    run_cli(
        Some(broker.addr()),
        &["topic", "create", TOPIC, "--partitions", "3"],
        b"",
    )
    .assert_success();

    let run = kcat(&broker, "metadata", &[]);
    let version = run.event("version");
    eprintln!("kcat version: {}", version["version"]);
    let metadata = &run.event("metadata")["metadata"];
    let brokers = metadata["brokers"].as_array().cloned().unwrap_or_default();
    assert_eq!(brokers.len(), 1, "kcat -L:\n{run}");
    assert_eq!(
        brokers[0]["name"],
        broker.kafka_addr().to_string(),
        "kcat -L:\n{run}"
    );
    assert_eq!(metadata["controllerid"], brokers[0]["id"], "kcat -L:\n{run}");
    let topic = metadata["topics"]
        .as_array()
        .and_then(|topics| topics.iter().find(|topic| topic["topic"] == TOPIC))
        .unwrap_or_else(|| panic!("kcat -L does not list {TOPIC}:\n{run}"));
    let partitions: Vec<(i64, i64)> = topic["partitions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    (
                        p["partition"].as_i64().unwrap_or(-1),
                        p["leader"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let leader = brokers[0]["id"].as_i64().unwrap_or(-2);
    assert_eq!(
        partitions,
        vec![(0, leader), (1, leader), (2, leader)],
        "kcat -L:\n{run}"
    );
    (dir, broker)
}

#[test]
fn kcat_on_librdkafka_2_0_lists_the_broker_and_a_topic() {
    broker_with_kcat_topic("kcat_metadata");
}

#[test]
fn kcat_on_librdkafka_2_0_produces_with_every_codec_lists_offsets_and_resumes_a_group() {
    let (_dir, broker) = broker_with_kcat_topic("kcat");

    let variants: [(&str, &[&str]); 7] = [
        ("acks1", &["--acks", "1"]),
        ("acksall", &["--acks", "-1"]),
        ("idem", &["--acks", "-1", "--idempotent"]),
        ("zgzip", &["--compression", "gzip"]),
        ("zsnappy", &["--compression", "snappy"]),
        ("zlz4", &["--compression", "lz4"]),
        ("zzstd", &["--compression", "zstd"]),
    ];
    for (tag, options) in variants {
        let mut args = vec!["--topic", TOPIC, "--records", "12", "--keys", "4", "--tag", tag];
        args.extend_from_slice(options);
        kcat(&broker, "produce", &args);
    }
    // kcat prints no offsets when it produces: read everything back.
    let run = kcat(&broker, "consume", &["--topic", TOPIC]);
    let records = kcat_records(&run);
    assert_eq!(records.len(), 7 * 12, "kcat -C -e read back:\n{run}");
    let end = check_log(&records, PARTITIONS);
    for (tag, _) in variants {
        let count = records
            .iter()
            .filter(|r| r.value.starts_with(&format!("{tag}-")))
            .count();
        assert_eq!(count, 12, "records tagged {tag}:\n{run}");
    }

    let run = kcat(&broker, "offsets", &["--topic", TOPIC, "--partitions", "3"]);
    let listed: BTreeMap<u32, (i64, i64)> = run
        .events_named("offsets")
        .iter()
        .map(|event| {
            let low = event["low"].as_i64().unwrap_or(-100);
            let high = event["high"].as_i64().unwrap_or(-100);
            (event["partition"].as_u64().unwrap_or(99) as u32, (low, high))
        })
        .collect();
    let expected: BTreeMap<u32, (i64, i64)> = end.iter().map(|(p, high)| (*p, (0, *high))).collect();
    assert_eq!(listed, expected, "kcat -Q (low, high):\n{run}");

    // A balanced consumer reads everything and commits on close; the next run gets only what
    // was produced after it.
    let total = records.len().to_string();
    let run = kcat(
        &broker,
        "group",
        &["--topic", TOPIC, "--group", "kcat-billing", "--records", &total],
    );
    let mut first = kcat_records(&run);
    first.sort_by_key(|r| (r.partition, r.offset));
    let mut all = records.clone();
    all.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        first, all,
        "kcat -G's first run must read every record once:\n{run}"
    );

    kcat(
        &broker,
        "produce",
        &[
            "--topic",
            TOPIC,
            "--records",
            "9",
            "--keys",
            "4",
            "--tag",
            "after",
        ],
    );
    let everything = kcat_records(&kcat(&broker, "consume", &["--topic", TOPIC]));
    check_log(&everything, PARTITIONS);
    let mut new: Vec<Produced> = everything
        .into_iter()
        .filter(|r| r.offset >= end[&r.partition])
        .collect();
    new.sort_by_key(|r| (r.partition, r.offset));
    assert!(new.iter().all(|r| r.value.starts_with("after-")), "{new:?}");
    let run = kcat(
        &broker,
        "group",
        &["--topic", TOPIC, "--group", "kcat-billing", "--records", "9"],
    );
    let mut second = kcat_records(&run);
    second.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        second, new,
        "kcat -G's second run must resume exactly at its commits:\n{run}"
    );
}

#[test]
fn confluent_kafka_creates_a_topic_of_three_partitions_and_deletes_it() {
    let dir = TestDir::new("confluent_kafka_create_delete");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    create_and_delete_topic(CONFLUENT, broker.kafka_addr(), "confluent-kafka-created");
}
