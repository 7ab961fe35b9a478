//! The compaction topic configs (`cleanup.policy`, `min.cleanable.dirty.ratio`,
//! `min.compaction.lag.ms`, `max.compaction.lag.ms`, `delete.retention.ms`) end to end on the
//! real broker: set at create and changed at run time through Kafka's CreateTopics,
//! DescribeConfigs, IncrementalAlterConfigs and AlterConfigs (raw frames), the native
//! CreateTopics/Metadata, and `tidelog topic create --config`; refused outside Kafka's bounds;
//! kept across a restart.

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    alter_configs_request, AlterConfigsRequest, CreateTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

fn create(kafka: &mut KafkaRaw, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let topic = CreatableTopic::default()
        .with_name(TopicName(text(topic)))
        .with_num_partitions(1)
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
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000);
    kafka.call(&request, 7).topics[0].error_code
}

/// (value, source, config type, synonyms as (name, value, source)) of one topic config, at v4
/// with synonyms.
type Described = (String, i8, i8, Vec<(String, String, i8)>);

fn describe(kafka: &mut KafkaRaw, resource_type: i8, resource: &str, key: &str) -> Described {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(text(resource))
            .with_configuration_keys(Some(vec![text(key)]))])
        .with_include_synonyms(true)
        .with_include_documentation(true);
    let response = kafka.call(&request, 4);
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "{response:?}");
    let config = result
        .configs
        .iter()
        .find(|config| config.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} not described: {response:?}"));
    (
        config.value.as_ref().map(ToString::to_string).unwrap_or_default(),
        config.config_source,
        config.config_type,
        config
            .synonyms
            .iter()
            .map(|synonym| {
                (
                    synonym.name.to_string(),
                    synonym
                        .value
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    synonym.source,
                )
            })
            .collect(),
    )
}

fn incremental(kafka: &mut KafkaRaw, topic: &str, changes: &[(&str, i8, Option<&str>)]) -> i16 {
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(topic))
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
    kafka.call(&request, 1).responses[0].error_code
}

fn native_config(native: &mut RawClient, topic: &str) -> pb::TopicConfig {
    let mut metadata = native.metadata(&[topic]);
    let topic = metadata.topics.remove(0);
    assert_eq!(topic.error(), ErrorCode::None, "{topic:?}");
    topic.config.expect("metadata carries the effective config")
}

#[test]
fn compaction_configs_are_set_described_and_altered_through_kafka_admin_apis() {
    let dir = TestDir::new("kafka-admin-compaction");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let mut native = RawClient::connect_or_panic(broker.addr());

    // CreateTopics with Kafka's names; the native protocol sees the same effective values.
    assert_eq!(
        create(
            &mut kafka,
            "k-changelog",
            &[
                ("cleanup.policy", "compact"),
                ("min.cleanable.dirty.ratio", "0.1"),
                ("min.compaction.lag.ms", "1000"),
                ("delete.retention.ms", "0"),
            ],
        ),
        0
    );
    let config = native_config(&mut native, "k-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact"));
    assert_eq!(config.min_cleanable_dirty_ratio, Some(0.1));
    assert_eq!(config.min_compaction_lag_ms, Some(1000));
    assert_eq!(config.max_compaction_lag_ms, Some(i64::MAX), "the broker default");
    assert_eq!(config.delete_retention_ms, Some(0));

    // Refused outside Kafka's bounds: INVALID_CONFIG (40), and nothing is created.
    for (index, configs) in [
        vec![("cleanup.policy", "shred")],
        vec![("min.cleanable.dirty.ratio", "1.5")],
        vec![("min.compaction.lag.ms", "-1")],
        vec![("max.compaction.lag.ms", "0")],
        vec![("min.compaction.lag.ms", "100"), ("max.compaction.lag.ms", "99")],
        vec![("delete.retention.ms", "-1")],
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("k-refused-{index}");
        assert_eq!(create(&mut kafka, &name, &configs), 40, "{configs:?}");
        assert_eq!(
            native.metadata(&[&name]).topics[0].error(),
            ErrorCode::UnknownTopicOrPartition
        );
    }

    // DescribeConfigs: alterable, typed, with the broker synonym.
    let (value, source, kind, synonyms) = describe(&mut kafka, TOPIC, "k-changelog", "cleanup.policy");
    assert_eq!(
        (value.as_str(), source, kind),
        ("compact", 1, 7),
        "LIST, the topic's own"
    );
    assert_eq!(
        synonyms,
        vec![
            ("cleanup.policy".into(), "compact".into(), 1),
            ("log.cleanup.policy".into(), "delete".into(), 4)
        ]
    );
    let (value, _, kind, _) = describe(&mut kafka, TOPIC, "k-changelog", "min.cleanable.dirty.ratio");
    assert_eq!((value.as_str(), kind), ("0.1", 6), "DOUBLE");
    let (value, source, kind, synonyms) = describe(&mut kafka, TOPIC, "k-changelog", "max.compaction.lag.ms");
    assert_eq!(
        (value.as_str(), source, kind),
        ("9223372036854775807", 4, 5),
        "LONG, inherited"
    );
    assert_eq!(synonyms[0].0, "log.cleaner.max.compaction.lag.ms");
    let (value, ..) = describe(&mut kafka, BROKER, "0", "log.cleaner.delete.retention.ms");
    assert_eq!(value, "86400000");

    // IncrementalAlterConfigs: SET and DELETE change the open topic at once.
    assert_eq!(
        incremental(
            &mut kafka,
            "k-changelog",
            &[
                ("cleanup.policy", SET, Some("compact,delete")),
                ("min.cleanable.dirty.ratio", DELETE, None),
                ("max.compaction.lag.ms", SET, Some("60000")),
            ]
        ),
        0
    );
    let config = native_config(&mut native, "k-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact,delete"));
    assert_eq!(
        config.min_cleanable_dirty_ratio,
        Some(0.5),
        "back to the broker default"
    );
    assert_eq!(config.max_compaction_lag_ms, Some(60_000));
    // A bad value, a max below the min, and APPEND are refused; nothing changes.
    for changes in [
        vec![("min.cleanable.dirty.ratio", SET, Some("2"))],
        vec![("max.compaction.lag.ms", SET, Some("999"))],
        vec![("cleanup.policy", APPEND, Some("delete"))],
    ] {
        assert_eq!(
            incremental(&mut kafka, "k-changelog", &changes),
            40,
            "{changes:?}"
        );
    }
    assert_eq!(native_config(&mut native, "k-changelog"), config);

    // AlterConfigs replaces the whole configuration: what is not named returns to the default.
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text("k-changelog"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(text("cleanup.policy"))
                .with_value(Some(text("compact")))]),
    ]);
    assert_eq!(kafka.call(&request, 2).responses[0].error_code, 0);
    let config = native_config(&mut native, "k-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact"));
    assert_eq!(config.max_compaction_lag_ms, Some(i64::MAX));
    assert_eq!(config.min_compaction_lag_ms, Some(0));

    // Kept across a restart.
    drop(kafka);
    drop(native);
    assert!(broker.terminate_and_wait().success());
    broker.restart();
    let mut native = RawClient::connect_or_panic(broker.addr());
    let config = native_config(&mut native, "k-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact"));
    assert_eq!(config.delete_retention_ms, Some(86_400_000));
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let (value, source, ..) = describe(&mut kafka, TOPIC, "k-changelog", "cleanup.policy");
    assert_eq!((value.as_str(), source), ("compact", 1));
}

#[test]
fn native_create_and_the_cli_take_the_compaction_configs() {
    let dir = TestDir::new("native-compaction-config");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut native = RawClient::connect_or_panic(broker.addr());

    native.create_topic(
        "n-changelog",
        1,
        Some(pb::TopicConfig {
            cleanup_policy: Some("compact".into()),
            min_cleanable_dirty_ratio: Some(0.3),
            delete_retention_ms: Some(5_000),
            ..pb::TopicConfig::default()
        }),
    );
    let config = native_config(&mut native, "n-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact"));
    assert_eq!(config.min_cleanable_dirty_ratio, Some(0.3));
    assert_eq!(config.delete_retention_ms, Some(5_000));
    let refused = native.create_topic_result(
        "n-refused",
        1,
        Some(pb::TopicConfig {
            min_cleanable_dirty_ratio: Some(-1.0),
            ..pb::TopicConfig::default()
        }),
    );
    assert_eq!(refused.error(), ErrorCode::InvalidConfig, "{refused:?}");

    run_cli(
        Some(broker.addr()),
        &[
            "topic",
            "create",
            "cli-changelog",
            "--retention-ms",
            "3600000",
            "--config",
            "cleanup.policy=compact,delete",
            "--config",
            "min.compaction.lag.ms=250",
        ],
        b"",
    )
    .assert_success();
    let config = native_config(&mut native, "cli-changelog");
    assert_eq!(config.cleanup_policy.as_deref(), Some("compact,delete"));
    assert_eq!(config.min_compaction_lag_ms, Some(250));
    assert_eq!(config.retention_ms, Some(3_600_000));
    let describe = run_cli(Some(broker.addr()), &["topic", "describe", "cli-changelog"], b"");
    describe.assert_success();
    assert!(describe.stdout.contains("cleanup.policy"), "{describe}");
    assert!(describe.stdout.contains("compact,delete"), "{describe}");

    // An unknown name fails in the CLI with one line; the broker refuses a bad value.
    let unknown = run_cli(
        Some(broker.addr()),
        &["topic", "create", "cli-bad", "--config", "cleanup.polcy=compact"],
        b"",
    );
    assert!(unknown.assert_one_line_error().contains("cleanup.polcy"));
    let bad = run_cli(
        Some(broker.addr()),
        &["topic", "create", "cli-bad", "--config", "cleanup.policy=archive"],
        b"",
    );
    assert!(bad.assert_one_line_error().contains("archive"));
    assert_eq!(
        native.metadata(&["cli-bad"]).topics[0].error(),
        ErrorCode::UnknownTopicOrPartition
    );
}
