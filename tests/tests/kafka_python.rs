//! kafka-python 3.0.12 (tests/clients/python/kafka_python.py) against the real `tidelogd`'s
//! Kafka listener: the cluster it sees, a topic's whole life, and a group formed right after
//! its topic (tidelog_e2e::kafka_scenario).

use tidelog_e2e::kafka_scenario::{
    check_cluster, create_and_delete_topic, group_lifecycle, topic_lifecycle, Driver,
};
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

/// A group that forms right after its topic is created, with the driver an unchanged
/// application. Its leader must assign the topic's partitions at the first rebalance, not
/// nothing. kafka-python asks for a new subscription's metadata only after 100 ms. Without
/// the broker's initial rebalance delay the group formed sooner, assigned nothing, and
/// rejoined when the metadata arrived. kafka-python can lose that rejoin: the member stops
/// heartbeating, its session times out and it spins. That was the lifecycle test's
/// intermittent failure. Each member must still own partitions, consume everything and
/// resume exactly at the commits.
#[test]
fn kafka_python_group_formed_right_after_create_topic_assigns_with_the_topic_metadata() {
    let dir = TestDir::new("kafka_python_fresh_group");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    group_lifecycle(
        Driver::KafkaPython,
        broker.kafka_addr(),
        "python-fresh",
        "python-fresh-group",
    );
}
