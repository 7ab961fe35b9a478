//! The Kafka admin APIs on the real broker, over raw frames built with kafka-protocol's
//! encoders (and by hand for the old versions the crate lacks): CreateTopics, DeleteTopics,
//! CreatePartitions, DeleteRecords, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.
//! What they do is checked through the native protocol too: the same topics, ids and offsets.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    alter_configs_request, AlterConfigsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::records::batch_of;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;
use uuid::Uuid;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn name(value: &str) -> TopicName {
    TopicName(text(value))
}

fn creatable(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(text(key))
                        .with_value(Some(text(value)))
                })
                .collect(),
        )
}

fn create(
    kafka: &mut KafkaRaw,
    version: i16,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> Vec<(String, i16, i32, Uuid)> {
    let request = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    kafka
        .call(&request, version)
        .topics
        .into_iter()
        .map(|topic| {
            (
                topic.name.0.to_string(),
                topic.error_code,
                topic.num_partitions,
                topic.topic_id,
            )
        })
        .collect()
}

fn describe_topic(kafka: &mut KafkaRaw, version: i16, topic: &str) -> Vec<(String, String, i8)> {
    let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(text(topic))
        .with_configuration_keys(None)]);
    let response = kafka.call(&request, version);
    assert_eq!(response.results[0].error_code, 0, "{response:?}");
    response.results[0]
        .configs
        .iter()
        .map(|config| {
            (
                config.name.to_string(),
                config.value.as_ref().map(ToString::to_string).unwrap_or_default(),
                config.config_source,
            )
        })
        .collect()
}

fn value_of(configs: &[(String, String, i8)], key: &str) -> (String, i8) {
    configs
        .iter()
        .find(|(name, ..)| name == key)
        .map(|(_, value, source)| (value.clone(), *source))
        .unwrap_or_else(|| panic!("{key} not described: {configs:?}"))
}

fn incremental(
    kafka: &mut KafkaRaw,
    version: i16,
    resource_type: i8,
    resource: &str,
    changes: &[(&str, i8, Option<&str>)],
) -> i16 {
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(resource))
            .with_configs(
                changes
                    .iter()
                    .map(|(key, operation, value)| {
                        AlterableConfig::default()
                            .with_name(text(key))
                            .with_config_operation(*operation)
                            .with_value(value.map(text))
                    })
                    .collect(),
            )]);
    kafka.call(&request, version).responses[0].error_code
}

#[test]
fn topics_are_created_grown_configured_trimmed_and_deleted_through_kafka_admin_apis() {
    let dir = TestDir::new("kafka-admin");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let mut native = RawClient::connect_or_panic(broker.addr());

    // CreateTopics v7: counts, configs and the topic id come back; the native protocol sees
    // the same id.
    let created = create(
        &mut kafka,
        7,
        vec![creatable("k-orders", 2, &[("retention.ms", "3600000")])],
        false,
    );
    let (_, code, partitions, id) = created[0].clone();
    assert_eq!((code, partitions), (0, 2), "{created:?}");
    assert!(!id.is_nil());
    let metadata = native.metadata(&["k-orders"]).topics.remove(0);
    assert_eq!(metadata.topic_id, id.hyphenated().to_string());
    assert_eq!(metadata.config.unwrap().retention_ms, Some(3_600_000));
    // validate_only creates nothing; -1 partitions is the broker default.
    let dry = create(&mut kafka, 4, vec![creatable("k-dry", -1, &[])], true);
    assert_eq!(dry[0].1, 0, "{dry:?}");
    assert_eq!(
        native.metadata(&["k-dry"]).topics[0].error(),
        ErrorCode::UnknownTopicOrPartition
    );
    // Refusals, each with its Kafka code.
    for (version, topic, expected) in [
        (2, creatable("k-orders", 1, &[]), 36),
        (5, creatable("k-rf", 1, &[]).with_replication_factor(3), 38),
        (
            6,
            creatable("k-assigned", 1, &[]).with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(0)])]),
            39,
        ),
        (
            3,
            creatable("k-bad-config", 1, &[("cleanup.policy", "shred")]),
            40,
        ),
        (
            7,
            creatable("k-tiny-segments", 1, &[("segment.bytes", "1024")]),
            40,
        ),
        (7, creatable("bad name", 1, &[]), 17),
    ] {
        let result = create(&mut kafka, version, vec![topic], false);
        assert_eq!(result[0].1, expected, "v{version}: {result:?}");
    }

    // CreatePartitions: only up.
    for (version, count, expected) in [(0, 3, 0), (3, 4, 0), (1, 2, 37), (2, 4, 37)] {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("k-orders"))
                .with_count(count)
                .with_assignments(None)])
            .with_timeout_ms(10_000);
        let response = kafka.call(&request, version);
        assert_eq!(
            response.results[0].error_code, expected,
            "v{version} to {count}: {response:?}"
        );
    }
    assert_eq!(native.metadata(&["k-orders"]).topics[0].partitions.len(), 4);

    // DescribeConfigs in every crate version; synonyms and documentation at v4.
    for version in 1..=4 {
        let configs = describe_topic(&mut kafka, version, "k-orders");
        assert_eq!(
            value_of(&configs, "retention.ms"),
            ("3600000".into(), 1),
            "v{version}"
        );
        assert_eq!(value_of(&configs, "cleanup.policy").0, "delete", "v{version}");
        assert_eq!(
            value_of(&configs, "segment.bytes").1,
            4,
            "v{version}: the broker default"
        );
    }
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(text("k-orders"))
                .with_configuration_keys(Some(vec![text("retention.ms")])),
            DescribeConfigsResource::default()
                .with_resource_type(BROKER)
                .with_resource_name(text("0"))
                .with_configuration_keys(None),
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(text("k-missing"))
                .with_configuration_keys(None),
        ])
        .with_include_synonyms(true)
        .with_include_documentation(true);
    let response = kafka.call(&request, 4);
    let retention = &response.results[0].configs;
    assert_eq!(retention.len(), 1, "only the key asked for");
    let synonyms: Vec<(String, i8)> = retention[0]
        .synonyms
        .iter()
        .map(|synonym| (synonym.name.to_string(), synonym.source))
        .collect();
    assert_eq!(
        synonyms,
        vec![("retention.ms".into(), 1), ("log.retention.ms".into(), 4)]
    );
    assert_eq!(retention[0].config_type, 5, "LONG");
    assert!(retention[0]
        .documentation
        .as_ref()
        .is_some_and(|doc| !doc.is_empty()));
    let broker_configs = &response.results[1].configs;
    assert!(broker_configs
        .iter()
        .any(|config| config.name.as_str() == "auto.create.topics.enable"
            && config.value.as_deref() == Some("false")));
    assert_eq!(response.results[2].error_code, 3);

    // IncrementalAlterConfigs: SET and DELETE; a fixed setting and the broker refuse.
    assert_eq!(
        incremental(
            &mut kafka,
            1,
            TOPIC,
            "k-orders",
            &[("retention.bytes", 0, Some("5000000")), ("retention.ms", 1, None)]
        ),
        0
    );
    let configs = describe_topic(&mut kafka, 2, "k-orders");
    assert_eq!(value_of(&configs, "retention.bytes"), ("5000000".into(), 1));
    assert_eq!(
        value_of(&configs, "retention.ms").1,
        4,
        "back to the broker default"
    );
    assert_eq!(
        incremental(
            &mut kafka,
            0,
            TOPIC,
            "k-orders",
            &[("compression.type", 0, Some("zstd"))]
        ),
        40
    );
    assert_eq!(
        incremental(
            &mut kafka,
            0,
            TOPIC,
            "k-orders",
            &[("cleanup.policy", 2, Some("compact"))]
        ),
        40
    );
    assert_eq!(
        incremental(&mut kafka, 1, BROKER, "0", &[("log.retention.ms", 0, Some("1"))]),
        40
    );
    assert_eq!(
        incremental(
            &mut kafka,
            1,
            TOPIC,
            "k-missing",
            &[("retention.ms", 0, Some("1"))]
        ),
        3
    );

    // AlterConfigs replaces the whole configuration.
    for version in 0..=2 {
        let request = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(text("k-orders"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(text("segment.ms"))
                    .with_value(Some(text("3600000")))]),
        ]);
        assert_eq!(
            kafka.call(&request, version).responses[0].error_code,
            0,
            "v{version}"
        );
    }
    let configs = describe_topic(&mut kafka, 3, "k-orders");
    assert_eq!(value_of(&configs, "segment.ms"), ("3600000".into(), 1));
    assert_eq!(
        value_of(&configs, "retention.bytes").1,
        4,
        "not named, so back to the default"
    );

    // DeleteRecords: the low watermark moves; consumers see it through the native protocol.
    for _ in 0..3 {
        native.produce_ok("k-orders", 0, batch_of(&["a", "b", "c", "d"]));
    }
    for (version, partition, offset, expected, low) in [
        (0, 0, 5, 0, 5),
        (1, 0, 100, 1, -1),
        (2, 9, 0, 3, -1),
        (2, 0, -1, 0, 12),
    ] {
        let request = DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name("k-orders"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])])
            .with_timeout_ms(10_000);
        let result = &kafka.call(&request, version).topics[0].partitions[0];
        assert_eq!(
            (result.error_code, result.low_watermark),
            (expected, low),
            "v{version} {partition}@{offset}"
        );
    }
    assert_eq!(native.list_offset("k-orders", 0, -2).offset, 12);

    // DeleteTopics: v6 by id, v1 by name; unknown names and ids get their codes.
    create(&mut kafka, 7, vec![creatable("k-second", 1, &[])], false);
    let request = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_topic_id(id),
            DeleteTopicState::default().with_topic_id(Uuid::new_v4()),
        ])
        .with_timeout_ms(10_000);
    let response = kafka.call(&request, 6);
    let codes: Vec<(Option<String>, i16)> = response
        .responses
        .iter()
        .map(|result| {
            (
                result.name.as_ref().map(|name| name.0.to_string()),
                result.error_code,
            )
        })
        .collect();
    assert_eq!(codes, vec![(Some("k-orders".into()), 0), (None, 100)]);
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("k-second"), name("k-never")])
        .with_timeout_ms(10_000);
    let codes: Vec<i16> = kafka
        .call(&request, 1)
        .responses
        .iter()
        .map(|result| result.error_code)
        .collect();
    assert_eq!(codes, vec![0, 3]);
    let listed = native.metadata(&[]).topics;
    assert!(listed.is_empty(), "{listed:?}");
}

/// A request frame built by hand: header v1 (api key, version, correlation id, client id),
/// then `body`.
fn legacy_frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::new();
    let client_id = b"tidelog-e2e";
    frame.put_u32((2 + 2 + 4 + 2 + client_id.len() + body.len()) as u32);
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(correlation_id);
    frame.put_i16(client_id.len() as i16);
    frame.put_slice(client_id);
    frame.put_slice(body);
    frame.freeze()
}

fn put_string(out: &mut BytesMut, value: &str) {
    out.put_i16(value.len() as i16);
    out.put_slice(value.as_bytes());
}

fn get_string(input: &mut Bytes) -> Option<String> {
    let length = input.get_i16();
    (length >= 0).then(|| String::from_utf8(input.split_to(length as usize).to_vec()).unwrap())
}

/// Sends a hand-built request and returns its response body (header v0 checked).
fn legacy_call(kafka: &mut KafkaRaw, api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
    kafka
        .send_raw(&legacy_frame(api_key, version, correlation_id, body))
        .unwrap();
    let mut frame = kafka.read_frame().unwrap();
    assert_eq!(frame.get_i32(), correlation_id);
    frame
}

#[test]
fn the_old_versions_the_codec_crate_lacks_are_served_in_their_spec_layouts() {
    let dir = TestDir::new("kafka-admin-legacy");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let mut native = RawClient::connect_or_panic(broker.addr());

    // CreateTopics v0: topics [name, partitions, replication, assignments [], configs []],
    // timeout; the response is topics [name, error_code].
    let mut body = BytesMut::new();
    body.put_i32(1);
    put_string(&mut body, "old-topic");
    body.put_i32(3);
    body.put_i16(1);
    body.put_i32(0);
    body.put_i32(1);
    put_string(&mut body, "retention.ms");
    put_string(&mut body, "60000");
    body.put_i32(5_000);
    let mut response = legacy_call(&mut kafka, 19, 0, 41, &body);
    assert_eq!(response.get_i32(), 1);
    assert_eq!(get_string(&mut response).as_deref(), Some("old-topic"));
    assert_eq!(response.get_i16(), 0);
    assert!(!response.has_remaining());
    let metadata = native.metadata(&["old-topic"]).topics.remove(0);
    assert_eq!(metadata.partitions.len(), 3);
    assert_eq!(metadata.config.unwrap().retention_ms, Some(60_000));

    // CreateTopics v1 (validate_only appended; error_message in the response): a second
    // create of the same name fails with a message.
    body.put_u8(0);
    let mut response = legacy_call(&mut kafka, 19, 1, 42, &body);
    assert_eq!(response.get_i32(), 1);
    assert_eq!(get_string(&mut response).as_deref(), Some("old-topic"));
    assert_eq!(response.get_i16(), 36);
    assert!(get_string(&mut response).is_some_and(|message| message.contains("old-topic")));
    assert!(!response.has_remaining());

    // DescribeConfigs v0: throttle, results [error, message, type, name, configs [name,
    // value, read_only, is_default, is_sensitive]].
    let mut body = BytesMut::new();
    body.put_i32(1);
    body.put_i8(TOPIC);
    put_string(&mut body, "old-topic");
    body.put_i32(2);
    put_string(&mut body, "retention.ms");
    put_string(&mut body, "segment.bytes");
    let mut response = legacy_call(&mut kafka, 32, 0, 43, &body);
    assert_eq!(response.get_i32(), 0, "throttle");
    assert_eq!(response.get_i32(), 1);
    assert_eq!(response.get_i16(), 0);
    assert_eq!(get_string(&mut response), None);
    assert_eq!(response.get_i8(), TOPIC);
    assert_eq!(get_string(&mut response).as_deref(), Some("old-topic"));
    assert_eq!(response.get_i32(), 2);
    let mut configs = Vec::new();
    for _ in 0..2 {
        let name = get_string(&mut response).unwrap();
        let value = get_string(&mut response).unwrap();
        let flags = (response.get_u8(), response.get_u8(), response.get_u8());
        configs.push((name, value, flags));
    }
    assert!(!response.has_remaining());
    assert_eq!(configs[0], ("retention.ms".into(), "60000".into(), (0, 0, 0)));
    assert_eq!(
        (configs[1].0.as_str(), configs[1].2),
        ("segment.bytes", (0, 1, 0))
    );

    // DeleteTopics v0: the request is v1's; the response has no throttle time.
    let mut body = BytesMut::new();
    body.put_i32(2);
    put_string(&mut body, "old-topic");
    put_string(&mut body, "never-was");
    body.put_i32(5_000);
    let mut response = legacy_call(&mut kafka, 20, 0, 44, &body);
    assert_eq!(response.get_i32(), 2);
    assert_eq!(get_string(&mut response).as_deref(), Some("old-topic"));
    assert_eq!(response.get_i16(), 0);
    assert_eq!(get_string(&mut response).as_deref(), Some("never-was"));
    assert_eq!(response.get_i16(), 3);
    assert!(!response.has_remaining());
    assert!(native.metadata(&[]).topics.is_empty());

    // A truncated old-version body closes the connection (as an undecodable request does),
    // and the broker serves on.
    kafka
        .send_raw(&legacy_frame(19, 0, 45, &[0, 0, 0, 1, 0]))
        .unwrap();
    assert!(kafka.closed_within(std::time::Duration::from_secs(10)));
    let mut again = KafkaRaw::connect(broker.kafka_addr());
    let response = legacy_call(&mut again, 20, 0, 46, &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&response[..], &[0, 0, 0, 0]);
}
