//! The client's `embedded` feature: a broker in-process on a data directory, the daemon's own
//! code. Records survive a clean shutdown and a drop, a second broker on a directory in use is
//! refused, and the broker keeps serving while the caller's runtime is a single thread.

use std::time::Duration;

use tidelog_client::embedded::{EmbeddedBroker, EmbeddedConfig};
use tidelog_client::event_store::EventStoreError;
use tidelog_client::{
    Consumer, ConsumerConfig, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord, Seek,
};
use tidelog_e2e::TestDir;

const TOPIC: &str = "embedded";
/// Generous: the suite runs many brokers on two cores.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {STEP_TIMEOUT:?}"),
    }
}

async fn produce(client: &tidelog_client::Client, values: &[&str]) {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("a producer");
    for value in values {
        let delivery = within(
            "send",
            producer.send(ProducerRecord::new(TOPIC, value.to_string()).partition(PartitionId::new(0))),
        )
        .await
        .expect("sends");
        within("delivery", delivery).await.expect("delivered");
    }
    producer.close().await;
}

async fn read_all(client: &tidelog_client::Client, count: usize) -> Vec<String> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).expect("a consumer");
    within("assign", consumer.assign(TOPIC, &[PartitionId::new(0)]))
        .await
        .expect("assigns");
    consumer
        .seek(TOPIC, PartitionId::new(0), Seek::Earliest)
        .expect("seeks");
    let mut values = Vec::new();
    // Bounded: each poll waits at most a second, and the whole read at most STEP_TIMEOUT.
    within("read", async {
        while values.len() < count {
            for record in consumer.poll(Duration::from_secs(1)).await.expect("polls") {
                values
                    .push(String::from_utf8_lossy(record.value().map_or(&b""[..], |v| &v[..])).into_owned());
            }
        }
    })
    .await;
    values
}

// The default test runtime: one thread. The broker runs on its own threads, so it serves
// while this one waits on it.
#[tokio::test]
async fn records_survive_shutdown_and_drop_and_a_directory_in_use_is_refused() {
    let dir = TestDir::new("embedded");
    let data_dir = dir.data_dir();
    let (broker, store) = within("start", EmbeddedBroker::start(&data_dir))
        .await
        .expect("starts");
    assert!(broker.native_addr().ip().is_loopback());
    assert_ne!(broker.native_addr().port(), 0, "the kernel's port is reported");
    assert_eq!(
        broker.kafka_addr(),
        None,
        "the Kafka listener is off unless asked for"
    );
    within(
        "create",
        store.client().admin().create_topic(NewTopic::new(TOPIC, 1)),
    )
    .await
    .expect("creates");
    produce(store.client(), &["a", "b"]).await;

    let second = within("second start", EmbeddedBroker::start(&data_dir)).await;
    assert!(
        matches!(second, Err(EventStoreError::Embedded { .. })),
        "a directory another broker holds is refused: {second:?}"
    );
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");

    let (broker, store) = within("restart", EmbeddedBroker::start(&data_dir))
        .await
        .expect("restarts");
    assert_eq!(read_all(store.client(), 2).await, ["a", "b"]);
    produce(store.client(), &["c"]).await;
    // Dropped, not shut down: the drop stops the broker before it returns.
    drop(broker);

    let config = EmbeddedConfig::new(&data_dir).worker_threads(1).kafka_listener();
    let (broker, store) = within("restart", EmbeddedBroker::start_with(config))
        .await
        .expect("restarts after a drop");
    assert!(broker.kafka_addr().is_some(), "asked for the Kafka listener");
    assert_eq!(read_all(store.client(), 3).await, ["a", "b", "c"]);
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");
}
