//! The Kafka listener over raw frames built with kafka-protocol's encoders: version
//! negotiation, metadata, and what happens to bad input.

use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

/// The versions the issue requires the listener to serve.
const REQUIRED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

#[test]
fn api_versions_lists_every_required_range_in_every_version() {
    let (_dir, broker) = start_broker("kafka-api-versions");
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    for version in 0..=4 {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("tidelog-e2e"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let response = kafka.call(&request, version);
        assert_eq!(response.error_code, 0, "v{version}");
        for (key, min, max) in REQUIRED {
            let listed = response
                .api_keys
                .iter()
                .find(|api| api.api_key == *key as i16)
                .unwrap_or_else(|| panic!("v{version}: {key:?} is not listed"));
            assert_eq!((listed.min_version, listed.max_version), (*min, *max), "{key:?}");
        }
    }
}

#[test]
fn api_versions_of_an_unknown_version_gets_unsupported_version_in_a_v0_body() {
    let (_dir, broker) = start_broker("kafka-api-versions-unknown");
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    // v7 does not exist; the header is v2 (flexible), as for v3+.
    let sent = kafka.send(&ApiVersionsRequest::default(), 4);
    let _ = kafka.receive::<ApiVersionsRequest>(4);
    let frame = kafka.encode(&ApiVersionsRequest::default(), 4, 99);
    let mut bumped = frame.to_vec();
    // The version is the i16 after the size prefix and the API key.
    bumped[6..8].copy_from_slice(&7i16.to_be_bytes());
    kafka.send_raw(&bumped).unwrap();
    let (correlation_id, response) = kafka.receive::<ApiVersionsRequest>(0);
    assert!(sent < correlation_id);
    assert_eq!(correlation_id, 99);
    assert_eq!(response.error_code, ResponseError::UnsupportedVersion.code());
    assert!(response
        .api_keys
        .iter()
        .any(|api| api.api_key == ApiKey::Metadata as i16));
    // The connection is still usable.
    assert_eq!(kafka.call(&ApiVersionsRequest::default(), 3).error_code, 0);
}

#[test]
fn metadata_describes_native_topics_in_every_version() {
    let (_dir, broker) = start_broker("kafka-metadata");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("orders", 3, None);
    let kafka_addr = broker.kafka_addr();
    let mut kafka = KafkaRaw::connect(kafka_addr);
    for version in 0..=12 {
        // Every topic: an empty list in v0, null later.
        let all = MetadataRequest::default().with_topics((version == 0).then(Vec::new));
        let response = kafka.call(&all, version);
        assert_eq!(response.brokers.len(), 1, "v{version}");
        let broker_info = &response.brokers[0];
        assert_eq!(broker_info.port, i32::from(kafka_addr.port()), "v{version}");
        assert_eq!(broker_info.host.as_str(), "127.0.0.1");
        if version >= 1 {
            assert_eq!(response.controller_id, broker_info.node_id, "v{version}");
        }
        let orders = response
            .topics
            .iter()
            .find(|topic| topic.name.as_ref().map(|name| name.as_str()) == Some("orders"))
            .unwrap_or_else(|| panic!("v{version}: orders missing: {response:?}"));
        assert_eq!(orders.error_code, 0);
        assert_eq!(orders.partitions.len(), 3);
        for (index, partition) in orders.partitions.iter().enumerate() {
            assert_eq!(partition.partition_index, index as i32);
            assert_eq!(partition.leader_id, broker_info.node_id);
            assert_eq!(partition.error_code, 0);
            if version >= 7 {
                assert_eq!(partition.leader_epoch, 0);
            }
        }
        if version >= 10 {
            assert!(!orders.topic_id.is_nil(), "v{version}: topics have ids");
        }

        let wanted = |name: &str| {
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.into()))))
        };
        let named = MetadataRequest::default().with_topics(Some(vec![wanted("orders"), wanted("missing")]));
        let response = kafka.call(&named, version);
        assert_eq!(response.topics.len(), 2);
        assert_eq!(response.topics[0].error_code, 0);
        assert_eq!(
            response.topics[1].error_code,
            ResponseError::UnknownTopicOrPartition.code(),
            "v{version}"
        );
    }
}

#[test]
fn metadata_reports_authorized_operations_only_when_asked() {
    let (_dir, broker) = start_broker("kafka-metadata-operations");
    RawClient::connect_or_panic(broker.addr()).create_topic("ops", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let every_topic = || MetadataRequest::default().with_topics(None);
    let plain = kafka.call(&every_topic(), 8);
    assert_eq!(plain.topics[0].topic_authorized_operations, i32::MIN);
    assert_eq!(plain.cluster_authorized_operations, i32::MIN);
    let asked = every_topic()
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    let response = kafka.call(&asked, 8);
    let topic_operations = response.topics[0].topic_authorized_operations;
    // READ (3), WRITE (4), DESCRIBE (8) among them.
    for operation in [3, 4, 8] {
        assert_ne!(topic_operations & (1 << operation), 0, "{topic_operations:#x}");
    }
    assert_ne!(response.cluster_authorized_operations & (1 << 8), 0);
    // Looked up by id (v10+): the id Metadata gave.
    let id = kafka.call(&every_topic(), 12).topics[0].topic_id;
    assert!(!id.is_nil());
    let by_id = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(id)]));
    let response = kafka.call(&by_id, 12);
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(
        response.topics[0].name.as_ref().map(|name| name.as_str()),
        Some("ops")
    );
}

#[test]
fn oversized_and_garbage_frames_close_only_their_own_connection() {
    let (_dir, mut broker) = start_broker("kafka-bad-frames");
    let addr = broker.kafka_addr();
    let mut bystander = KafkaRaw::connect(addr);
    assert_eq!(bystander.call(&ApiVersionsRequest::default(), 3).error_code, 0);

    // A size prefix above kafka.frame_bytes_max is refused before any of it is buffered.
    let mut oversized = KafkaRaw::connect(addr);
    oversized.send_raw(&(200u32 << 20).to_be_bytes()).unwrap();
    assert!(oversized.closed_within(Duration::from_secs(30)));

    // An API key Kafka does not define.
    let mut unknown = KafkaRaw::connect(addr);
    unknown
        .send_raw(&[0, 0, 0, 10, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    assert!(unknown.closed_within(Duration::from_secs(30)));

    // A Metadata v0 claiming two billion topics in six bytes.
    let mut bomb = KafkaRaw::connect(addr);
    let mut frame = vec![0, 0, 0, 18, 0, 3, 0, 0, 0, 0, 0, 7, 0, 2, b'x', b'y'];
    frame.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 1]);
    bomb.send_raw(&frame).unwrap();
    assert!(bomb.closed_within(Duration::from_secs(30)));

    broker.assert_alive("bad Kafka frames");
    assert_eq!(bystander.call(&MetadataRequest::default(), 12).brokers.len(), 1);
}

/// An OffsetForLeaderEpoch v0/v1 request, by hand: kafka-protocol has no codec for them.
fn legacy_offset_for_leader_epoch(correlation_id: i32, version: i16, topic: &str, epoch: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(ApiKey::OffsetForLeaderEpoch as i16).to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&2i32.to_be_bytes());
    for partition in [0i32, 7] {
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&epoch.to_be_bytes());
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn offset_for_leader_epoch_ends_epoch_zero_at_the_log_end_in_every_version() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::OffsetForLeaderEpochRequest;
    use tidelog_e2e::records::batch_of;

    let (_dir, broker) = start_broker("kafka-offset-for-leader-epoch");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("epochs", 1, None);
    native.produce_ok("epochs", 0, batch_of(&["a", "b", "c"]));
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());

    for version in 0..=1i16 {
        kafka
            .send_raw(&legacy_offset_for_leader_epoch(
                40 + i32::from(version),
                version,
                "epochs",
                0,
            ))
            .unwrap();
        let frame = kafka.read_frame().unwrap();
        // Response header v0: the correlation id, then `[topic [error partition (epoch) end]]`.
        let mut expected = (40 + i32::from(version)).to_be_bytes().to_vec();
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&6i16.to_be_bytes());
        expected.extend_from_slice(b"epochs");
        expected.extend_from_slice(&2i32.to_be_bytes());
        for (partition, error, epoch, end) in [(0i32, 0i16, 0i32, 3i64), (7, 3, -1, -1)] {
            expected.extend_from_slice(&error.to_be_bytes());
            expected.extend_from_slice(&partition.to_be_bytes());
            if version == 1 {
                expected.extend_from_slice(&epoch.to_be_bytes());
            }
            expected.extend_from_slice(&end.to_be_bytes());
        }
        assert_eq!(frame.to_vec(), expected, "v{version}");
    }

    for version in 2..=4 {
        let partition = |leader_epoch: i32, current: i32| {
            OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_leader_epoch(leader_epoch)
                .with_current_leader_epoch(current)
        };
        let request =
            OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("epochs")))
                .with_partitions(vec![partition(0, 0), partition(3, -1), partition(0, 5)])]);
        let response = kafka.call(&request, version);
        let answers = &response.topics[0].partitions;
        assert_eq!(
            (
                answers[0].error_code,
                answers[0].leader_epoch,
                answers[0].end_offset
            ),
            (0, 0, 3),
            "v{version}"
        );
        // A later epoch than any: Kafka's undefined answer.
        assert_eq!(
            (
                answers[1].error_code,
                answers[1].leader_epoch,
                answers[1].end_offset
            ),
            (0, -1, -1)
        );
        assert_eq!(answers[2].error_code, ResponseError::UnknownLeaderEpoch.code());
    }
}

#[test]
fn describe_cluster_names_this_broker_as_the_controller() {
    use kafka_protocol::messages::DescribeClusterRequest;

    let (_dir, broker) = start_broker("kafka-describe-cluster");
    let kafka_addr = broker.kafka_addr();
    let mut kafka = KafkaRaw::connect(kafka_addr);
    for version in 0..=1 {
        let response = kafka.call(
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            version,
        );
        assert_eq!(response.error_code, 0);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].port, i32::from(kafka_addr.port()));
        assert_eq!(response.controller_id, response.brokers[0].broker_id);
        assert_ne!(response.cluster_authorized_operations & (1 << 8), 0, "DESCRIBE");
        assert!(!response.cluster_id.is_empty());
    }
}
