//! kafka-python 3.0.12 (tests/clients/python/kafka_python.py) against the real `tidelogd`'s
//! Kafka listener: the cluster it sees, and a topic's whole life (tidelog_e2e::kafka_scenario).

use tidelog_e2e::kafka_scenario::{check_cluster, create_and_delete_topic, topic_lifecycle, Driver};
use tidelog_e2e::{BrokerProcess, TestDir};

#[test]
fn kafka_python_sees_one_broker_that_is_also_the_controller() {
    let dir = TestDir::new("kafka_python_cluster");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    check_cluster(Driver::KafkaPython, broker.kafka_addr());
}

#[test]
fn kafka_python_creates_produces_consumes_in_a_group_resumes_and_deletes() {
    let dir = TestDir::new("kafka_python_lifecycle");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    topic_lifecycle(
        Driver::KafkaPython,
        broker.kafka_addr(),
        "python-orders",
        "python-billing",
    );
}

#[test]
fn kafka_python_creates_a_topic_of_three_partitions_and_deletes_it() {
    let dir = TestDir::new("kafka_python_create_delete");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    create_and_delete_topic(Driver::KafkaPython, broker.kafka_addr(), "kafka-python-created");
}
