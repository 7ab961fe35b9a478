//! `Broker::start` runs one core and every configured listener: each bound on its own address,
//! named in the handle, stopped by the one graceful shutdown, and serving the same topics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use std::time::Duration;

use tidelog_proto::pb::{self, request::Body, response};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest the graceful shutdown may take with idle connections open on every listener.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_configured_listener_runs_on_its_own_address_and_all_stop_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let native = broker.listener_addr("native").expect("the native listener runs");
    let kafka = broker.listener_addr("kafka").expect("the Kafka listener runs");
    assert_eq!(native, broker.local_addr());
    assert_eq!(Some(kafka), broker.kafka_addr());
    assert_ne!(native.port(), kafka.port());
    assert_eq!(broker.listener_addr("no-such-listener"), None);

    // A topic created through the native listener is one of the core's: the native listener
    // sees it, and both listeners accept connections.
    let mut client = RawClient::connect(&broker).await;
    let created = client.create_topic("shared", 2).await;
    assert_eq!(created.error, pb::ErrorCode::None as i32, "{created:?}");
    match client
        .call_ok(Body::Metadata(pb::MetadataRequest {
            topics: vec!["shared".into()],
        }))
        .await
    {
        response::Body::Metadata(metadata) => {
            assert_eq!(metadata.topics[0].partitions.len(), 2, "{metadata:?}");
            // The native listener advertises its own address, not the Kafka one.
            assert_eq!(metadata.brokers[0].port, u32::from(native.port()));
        }
        other => panic!("unexpected response {other:?}"),
    }
    let mut kafka_connection = TcpStream::connect(kafka).await.unwrap();

    tokio::time::timeout(SHUTDOWN_TIMEOUT, broker.shutdown())
        .await
        .expect("shutdown drains every listener in time")
        .unwrap();
    // The Kafka listener closed its connection as it drained: reading ends (EOF or reset).
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(SHUTDOWN_TIMEOUT, kafka_connection.read(&mut byte))
        .await
        .expect("the Kafka connection is closed by the shutdown");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        TcpStream::connect(native).await.is_err(),
        "the native listener still accepts"
    );
    assert!(
        TcpStream::connect(kafka).await.is_err(),
        "the Kafka listener still accepts"
    );
}

#[tokio::test]
async fn a_listener_that_is_off_is_not_bound() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.kafka.listen = None).await;
    assert_eq!(broker.kafka_addr(), None);
    assert_eq!(broker.listener_addr("kafka"), None);
    assert_eq!(broker.listener_addr("native"), Some(broker.local_addr()));
    broker.shutdown().await.unwrap();
}
