//! The Kafka listener's data path over raw frames built with kafka-protocol's encoders:
//! produce via Kafka and consume via the native protocol and the reverse, responses in request
//! order behind a long-poll fetch, acks = 0, list offsets, idempotent producer ids, and the
//! refusals a Kafka client must be able to read.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, FetchRequest, InitProducerIdRequest, ListOffsetsRequest, ProduceRequest, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::producers::stamped_batch;
use tidelog_e2e::records::{batch_of, decode_records, timed_batch};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.into()))
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn values(records: Bytes) -> Vec<String> {
    decode_records(records)
        .iter()
        .map(|record| record.value_text())
        .collect()
}

#[test]
fn produced_via_kafka_is_consumed_natively_and_the_reverse_in_every_version() {
    let (_dir, broker) = start_broker("kafka-cross-protocol");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("cross", 2, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());

    for (expected_offset, version) in (3..=11).enumerate() {
        let value = format!("kafka-v{version}");
        let acks = if version % 2 == 0 { 1 } else { -1 };
        let response = kafka.call(
            &produce_request("cross", 0, batch_of(std::slice::from_ref(&value)), acks),
            version,
        );
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "v{version}: {partition:?}");
        assert_eq!(partition.base_offset, expected_offset as i64, "v{version}");
        let fetched = native.fetch("cross", 0, partition.base_offset, 0, 0);
        assert_eq!(fetched.error(), ErrorCode::None);
        assert_eq!(values(fetched.records).first(), Some(&value), "v{version}");
    }

    // The reverse: produced natively, fetched through Kafka in every version, byte for byte.
    let stored = batch_of(&["native-1", "native-2", "native-3"]);
    let base = native.produce_ok("cross", 1, stored.clone());
    for version in 4..=12 {
        let response = kafka.call(&fetch_request("cross", 1, base, 0, 0), version);
        assert_eq!(response.error_code, 0);
        if version >= 7 {
            assert_eq!(response.session_id, 0, "sessionless");
        }
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "v{version}");
        assert_eq!(partition.high_watermark, base + 3);
        assert_eq!(partition.last_stable_offset, base + 3);
        if version >= 5 {
            assert_eq!(partition.log_start_offset, 0);
        }
        let records = partition.records.clone().expect("records");
        assert_eq!(
            values(records.clone()),
            ["native-1", "native-2", "native-3"],
            "v{version}"
        );
        // From inside the batch: the whole batch, as stored.
        let inside = kafka.call(&fetch_request("cross", 1, base + 2, 0, 0), version);
        let inside = inside.responses[0].partitions[0]
            .records
            .clone()
            .expect("records");
        assert_eq!(
            inside, records,
            "v{version}: a fetch from inside a batch returns that batch"
        );
    }
}

#[test]
fn responses_leave_in_request_order_behind_a_long_poll_fetch() {
    let (_dir, broker) = start_broker("kafka-in-order");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("ordered", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    // A fetch at the end of the log that waits up to 1.5 s for data, then quick requests.
    let long_poll_wait = Duration::from_millis(1_500);
    let started = Instant::now();
    let first = kafka.send(&fetch_request("ordered", 0, 0, 1_500, 1), 12);
    let quick: Vec<i32> = (0..5)
        .map(|_| kafka.send(&ApiVersionsRequest::default(), 3))
        .collect();
    let (correlation_id, response) = kafka.receive::<FetchRequest>(12);
    assert_eq!(correlation_id, first, "the long poll's response comes first");
    assert!(started.elapsed() >= long_poll_wait - Duration::from_millis(100));
    assert_eq!(
        response.responses[0].partitions[0]
            .records
            .as_ref()
            .map(Bytes::len),
        Some(0)
    );
    for expected in quick {
        let (correlation_id, _) = kafka.receive::<ApiVersionsRequest>(3);
        assert_eq!(correlation_id, expected);
    }
}

#[test]
fn acks_zero_sends_nothing_and_keeps_the_order_of_the_rest() {
    let (_dir, broker) = start_broker("kafka-acks-zero");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("silent", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    for index in 0..10 {
        kafka.send(
            &produce_request("silent", 0, batch_of(&[format!("fire-{index}")]), 0),
            9,
        );
    }
    let marker = kafka.send(&ApiVersionsRequest::default(), 3);
    let (correlation_id, _) = kafka.receive::<ApiVersionsRequest>(3);
    assert_eq!(correlation_id, marker, "acks = 0 produces are not answered");
    // All ten were appended, in send order.
    tidelog_e2e::poll_until(Duration::from_secs(30), "acks=0 records visible", || {
        (native.high_watermark("silent", 0) == 10).then_some(())
    });
    let fetched = values(native.fetch("silent", 0, 0, 0, 0).records);
    let expected: Vec<String> = (0..10).map(|index| format!("fire-{index}")).collect();
    assert_eq!(fetched, expected);
}

#[test]
fn produce_refusals_are_per_partition_errors_a_client_can_read() {
    let (_dir, broker) = start_broker("kafka-produce-refusals");
    RawClient::connect_or_panic(broker.addr()).create_topic("refusals", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let code = |response: kafka_protocol::messages::ProduceResponse| {
        response.responses[0].partition_responses[0].error_code
    };
    let unknown = kafka.call(&produce_request("nowhere", 0, batch_of(&["x"]), 1), 9);
    assert_eq!(code(unknown), ResponseError::UnknownTopicOrPartition.code());
    let bad_partition = kafka.call(&produce_request("refusals", -1, batch_of(&["x"]), 1), 9);
    assert_eq!(code(bad_partition), ResponseError::UnknownTopicOrPartition.code());
    let bad_acks = kafka.call(&produce_request("refusals", 0, batch_of(&["x"]), 2), 9);
    assert_eq!(code(bad_acks), ResponseError::InvalidRequiredAcks.code());
    let transactional = produce_request("refusals", 0, batch_of(&["x"]), -1)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("txn"))));
    let transactional = kafka.call(&transactional, 9);
    assert_eq!(
        code(transactional),
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    let mut corrupt = batch_of(&["x"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let corrupt = kafka.call(&produce_request("refusals", 0, Bytes::from(corrupt), 1), 9);
    assert_ne!(code(corrupt), 0, "a batch failing its CRC is refused");
    // Nothing of the above was stored.
    let mut native = RawClient::connect_or_panic(broker.addr());
    assert_eq!(native.high_watermark("refusals", 0), 0);
}

#[test]
fn list_offsets_answers_every_query_in_every_version() {
    let (_dir, broker) = start_broker("kafka-list-offsets");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("times", 1, None);
    native.produce_ok("times", 0, timed_batch(&["old"], 1_000));
    native.produce_ok("times", 0, timed_batch(&["newest"], 9_000));
    native.produce_ok("times", 0, timed_batch(&["middle"], 5_000));
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let query = |timestamp: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("times"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)])])
    };
    for version in 1..=8 {
        let mut answer = |timestamp: i64| {
            let response = kafka.call(&query(timestamp), version);
            let partition = &response.topics[0].partitions[0];
            (partition.error_code, partition.offset, partition.timestamp)
        };
        assert_eq!(answer(-2), (0, 0, -1), "v{version} earliest");
        assert_eq!(answer(-1), (0, 3, -1), "v{version} latest");
        assert_eq!(answer(4_000), (0, 1, 9_000), "v{version} by time");
        assert_eq!(answer(10_000), (0, -1, -1), "v{version} newer than any");
        if version >= 7 {
            assert_eq!(answer(-3), (0, 1, 9_000), "v{version} max timestamp");
        }
    }
}

#[test]
fn init_producer_id_shares_the_native_producer_state() {
    let (_dir, broker) = start_broker("kafka-init-producer-id");
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic("idempotent", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let mut ids = Vec::new();
    for version in 0..=4 {
        let response = kafka.call(
            &InitProducerIdRequest::default().with_transactional_id(None),
            version,
        );
        assert_eq!(response.error_code, 0, "v{version}");
        assert_eq!(response.producer_epoch, 0);
        ids.push(response.producer_id.0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 5, "every new producer gets a new id: {ids:?}");
    // v3+: the same id again gets the next epoch, which fences the old one.
    let bumped = kafka.call(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(ids[4]))
            .with_producer_epoch(0),
        4,
    );
    assert_eq!(
        (bumped.error_code, bumped.producer_id.0, bumped.producer_epoch),
        (0, ids[4], 1)
    );
    let transactional = kafka.call(
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t")))),
        4,
    );
    assert_eq!(
        transactional.error_code,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );

    // An idempotent batch through Kafka, then its retry through Kafka: stored once.
    let producer = ids[0];
    let batch = stamped_batch(producer, 0, 0, &["once".to_owned()]);
    for _ in 0..2 {
        let response = kafka.call(&produce_request("idempotent", 0, batch.clone(), -1), 9);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(
        native.high_watermark("idempotent", 0),
        1,
        "the retry was a duplicate"
    );
    // The next sequence through the native protocol continues the same producer state.
    let next = stamped_batch(producer, 0, 1, &["twice".to_owned()]);
    assert_eq!(native.produce_ok("idempotent", 0, next), 1);
    let skipped = kafka.call(
        &produce_request(
            "idempotent",
            0,
            stamped_batch(producer, 0, 5, &["gap".to_owned()]),
            -1,
        ),
        9,
    );
    assert_eq!(
        skipped.responses[0].partition_responses[0].error_code,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
}

#[test]
fn incremental_fetch_sessions_are_refused_so_clients_fall_back_to_full_fetches() {
    let (_dir, broker) = start_broker("kafka-fetch-sessions");
    RawClient::connect_or_panic(broker.addr()).create_topic("sessions", 1, None);
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let incremental = fetch_request("sessions", 0, 0, 0, 0)
        .with_session_id(77)
        .with_session_epoch(3);
    let response = kafka.call(&incremental, 12);
    assert_eq!(response.error_code, ResponseError::FetchSessionIdNotFound.code());
    // Asking to open a session (id 0, epoch 0) gets a sessionless full answer.
    let opening = fetch_request("sessions", 0, 0, 0, 0).with_session_epoch(0);
    let response = kafka.call(&opening, 12);
    assert_eq!((response.error_code, response.session_id), (0, 0));
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
}
