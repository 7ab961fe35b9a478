//! Conditional appends over the Kafka protocol (issue 8 §1, §2): unmodified clients carry the
//! expectation in a `tidelog-expect` header and event ids in `tidelog-event-id`. kafkajs
//! 2.2.4 (tests/clients/node/conditional.js) gets INVALID_RECORD for a conflict, its retry by
//! a new producer gets the original offsets, and an idempotent kafkajs producer goes on after a
//! refusal; raw Produce v9 frames show the per-record error "expected X, actual Y" that v8+
//! clients (librdkafka, Java) report, and v7 the code alone.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use tidelog_e2e::kafka_clients::run_node;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::records::read_partition;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::partitioner::partition_for_key;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);
const INVALID_RECORD: i16 = 87;

fn steps(run: &[Value]) -> String {
    serde_json::to_string(run).expect("steps serialise")
}

/// The `appended` / `refused` events of a kafkajs run, in step order.
fn kafkajs(broker: &BrokerProcess, topic: &str, run: &[Value], idempotent: bool) -> Vec<Value> {
    let bootstrap = broker.kafka_addr().to_string();
    let steps = steps(run);
    let mut args = vec![
        "append",
        "--bootstrap",
        &bootstrap,
        "--topic",
        topic,
        "--steps",
        &steps,
    ];
    if idempotent {
        args.push("--idempotent");
    }
    let result = run_node("conditional.js", &args, SCRIPT_TIMEOUT);
    result.assert_success();
    let events: Vec<Value> = result
        .events()
        .into_iter()
        .filter(|event| event["event"] == "appended" || event["event"] == "refused")
        .collect();
    assert_eq!(events.len(), run.len(), "one result per step:\n{result}");
    events
}

fn assert_appended(event: &Value, partition: u32, base_offset: i64) {
    assert_eq!(event["event"], "appended", "{event}");
    assert_eq!(event["partition"], json!(partition), "{event}");
    assert_eq!(event["baseOffset"], json!(base_offset), "{event}");
}

fn assert_invalid_record(event: &Value) {
    assert_eq!(event["event"], "refused", "{event}");
    assert_eq!(event["type"], "INVALID_RECORD", "{event}");
    assert_eq!(event["code"], json!(87), "{event}");
    assert_eq!(event["retriable"], json!(false), "{event}");
}

#[test]
fn kafkajs_conflicts_get_invalid_record_and_retries_by_event_id_get_the_original_offsets() {
    let dir = TestDir::new("kafka-conditional-kafkajs");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("orders", 3, None);
    let partition = partition_for_key(b"order-7", 3);

    let first = kafkajs(
        &broker,
        "orders",
        &[
            json!({"key": "order-7", "expect": "none", "ids": ["o7-1", "o7-2"], "values": ["created", "paid"]}),
            json!({"key": "order-7", "expect": "none", "ids": ["other"], "values": ["conflicting"]}),
            json!({"key": "order-7", "expect": "1", "ids": ["o7-3"], "values": ["shipped"]}),
        ],
        false,
    );
    assert_appended(&first[0], partition, 0);
    assert_invalid_record(&first[1]);
    assert_appended(&first[2], partition, 2);

    // A new (idempotent) producer: the retry of the last append gets its offset; a retry of
    // the first no longer matches (the stream moved on past it: its records after `none` are
    // three, not the two retried), nor does a different batch on an old version; the producer
    // goes on after all of them.
    let second = kafkajs(
        &broker,
        "orders",
        &[
            json!({"key": "order-7", "expect": "1", "ids": ["o7-3"], "values": ["shipped"]}),
            json!({"key": "order-7", "expect": "none", "ids": ["o7-1", "o7-2"], "values": ["created", "paid"]}),
            json!({"key": "order-7", "expect": "1", "ids": ["o7-9"], "values": ["refunded"]}),
            json!({"key": "order-7", "expect": "2", "ids": ["o7-4"], "values": ["delivered"]}),
        ],
        true,
    );
    assert_appended(&second[0], partition, 2);
    assert_invalid_record(&second[1]);
    assert_invalid_record(&second[2]);
    assert_appended(&second[3], partition, 3);

    let (records, high_watermark) = read_partition(&mut native, "orders", partition, 0);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(values, ["created", "paid", "shipped", "delivered"]);
    assert_eq!(high_watermark, 4, "neither the retry nor a conflict was stored");
}

fn record(key: &str, value: &str, headers: &[(&str, &str)]) -> NewRecord {
    NewRecord {
        timestamp: 0,
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        headers: headers
            .iter()
            .map(|(name, value)| RecordHeader {
                key: (*name).to_string(),
                value: Some(Bytes::from(value.to_string())),
            })
            .collect(),
    }
}

fn produce(topic: &str, records: &[NewRecord]) -> ProduceRequest {
    let mut builder = RecordBatchBuilder::new();
    for record in records {
        builder.push(record);
    }
    let batch = builder.build().expect("records");
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

#[test]
fn produce_v8_and_later_carry_expected_and_actual_per_record_and_older_versions_the_code() {
    let dir = TestDir::new("kafka-conditional-raw");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("ledger", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());

    let opened = kafka.call(
        &produce(
            "ledger",
            &[
                record("a", "1", &[("tidelog-expect", "none")]),
                record("b", "2", &[("tidelog-expect", "none")]),
            ],
        ),
        9,
    );
    let answer = &opened.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 0), "{answer:?}");

    // Record 0 writes c (no expectation), record 1 writes b expecting 0: b is at 1.
    let conflict = produce(
        "ledger",
        &[
            record("c", "3", &[]),
            record("b", "4", &[("tidelog-expect", "0")]),
        ],
    );
    for version in [8, 9, 11] {
        let refused = kafka.call(&conflict, version);
        let answer = &refused.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, INVALID_RECORD, "v{version}: {answer:?}");
        assert_eq!(answer.record_errors.len(), 1, "v{version}: {answer:?}");
        assert_eq!(answer.record_errors[0].batch_index, 1, "v{version}: {answer:?}");
        assert_eq!(
            answer.record_errors[0].batch_index_error_message.as_deref(),
            Some("expected 0, actual 1"),
            "v{version}"
        );
        let message = answer.error_message.as_deref().unwrap_or_default();
        assert!(message.contains("expected 0, actual 1"), "v{version}: {message}");
    }
    let refused = kafka.call(&conflict, 7);
    let answer = &refused.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, INVALID_RECORD, "v7: {answer:?}");

    // A malformed expectation is refused as an invalid record too, with what is wrong.
    let malformed = produce("ledger", &[record("a", "5", &[("tidelog-expect", "soon")])]);
    let refused = kafka.call(&malformed, 9);
    let answer = &refused.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, INVALID_RECORD, "{answer:?}");
    let message = answer.error_message.as_deref().unwrap_or_default();
    assert!(message.contains("\"soon\""), "{message}");

    let (_, high_watermark) = read_partition(&mut native, "ledger", 0, 0);
    assert_eq!(high_watermark, 2, "nothing refused was stored");
}
