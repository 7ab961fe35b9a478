//! kafkajs 2.2.4 (tests/clients/node/kafka.js) against the real `tidelogd`'s Kafka listener:
//! the cluster it sees, and a topic's whole life (tidelog_e2e::kafka_scenario).

use tidelog_e2e::kafka_scenario::{check_cluster, create_and_delete_topic, topic_lifecycle, Driver};
use tidelog_e2e::{BrokerProcess, TestDir};

#[test]
fn kafkajs_sees_one_broker_that_is_also_the_controller() {
    let dir = TestDir::new("kafkajs_cluster");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    let run = check_cluster(Driver::Kafkajs, broker.kafka_addr());
    let topics = run.event("topics");
    assert_eq!(
        topics["names"],
        serde_json::json!([]),
        "a new broker has no topics:\n{run}"
    );
}

#[test]
fn kafkajs_creates_produces_consumes_in_a_group_resumes_and_deletes() {
    let dir = TestDir::new("kafkajs_lifecycle");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    topic_lifecycle(
        Driver::Kafkajs,
        broker.kafka_addr(),
        "kafkajs-orders",
        "kafkajs-billing",
    );
}

#[test]
fn kafkajs_creates_a_topic_of_three_partitions_and_deletes_it() {
    let dir = TestDir::new("kafkajs_create_delete");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    create_and_delete_topic(Driver::Kafkajs, broker.kafka_addr(), "kafkajs-created");
}
