//! librdkafka against the real `tidelogd`'s Kafka listener, twice: the recent one bundled in
//! confluent-kafka 2.16.1 (tests/clients/python/confluent.py; classic and KIP-848 groups), and
//! Debian's kcat 1.7.1 on librdkafka 2.0.2 (tests/clients/kcat/kcat.sh), older than 2.2, which
//! misreads tagged fields written with their default values.

use tidelog_e2e::cli::run_cli;
use tidelog_e2e::kafka_clients::{run_kcat_script, ScriptRun, SCRIPT_TIMEOUT};
use tidelog_e2e::kafka_scenario::{check_cluster, create_and_delete_topic, Driver};
use tidelog_e2e::{BrokerProcess, TestDir};

const CONFLUENT: Driver = Driver::Confluent { kip848: false };
/// The topic of the kcat tests.
const TOPIC: &str = "kcat-orders";

#[test]
fn confluent_kafka_sees_one_broker_that_is_also_the_controller() {
    let dir = TestDir::new("confluent_cluster");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    check_cluster(CONFLUENT, broker.kafka_addr());
}

fn kcat(broker: &BrokerProcess, command: &str, args: &[&str]) -> ScriptRun {
    let bootstrap = broker.kafka_addr().to_string();
    let mut full = vec![command, "--bootstrap", bootstrap.as_str()];
    full.extend_from_slice(args);
    let run = run_kcat_script("kcat.sh", &full, SCRIPT_TIMEOUT);
    run.assert_success();
    run
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
fn confluent_kafka_creates_a_topic_of_three_partitions_and_deletes_it() {
    let dir = TestDir::new("confluent_kafka_create_delete");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    create_and_delete_topic(CONFLUENT, broker.kafka_addr(), "confluent-kafka-created");
}
