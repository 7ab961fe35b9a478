//! Pipelining: many requests written back to back on one connection, without waiting, all get
//! answered, matched by correlation id; produce requests to one partition append in send order.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use tidelog_e2e::raw::{produce_partition, Reaction};
use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::frame::encode_frame;
use tidelog_proto::pb::{self, ErrorCode};

/// More than the broker's 128 in-flight requests per connection, so back-pressure is exercised.
const REQUESTS: usize = 300;

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

#[test]
fn back_to_back_requests_are_all_answered_and_produces_append_in_send_order() {
    let (_dir, broker) = start_broker("pipelining");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("piped", 2, None);

    // Every third request is a produce to partition 0, the rest metadata and fetches.
    let mut wire = BytesMut::new();
    let mut kinds: BTreeMap<u64, &str> = BTreeMap::new();
    let mut produce_ids = Vec::new();
    for index in 0..REQUESTS {
        let body = match index % 3 {
            0 => RawClient::produce_body(
                "piped",
                0,
                batch_of(&[format!("piped-{index}")]),
                pb::Acks::Leader,
            ),
            1 => pb::request::Body::Metadata(pb::MetadataRequest {
                topics: vec!["piped".into()],
            }),
            _ => RawClient::fetch_body("piped", 0, 0, 0, 0),
        };
        let kind = match &body {
            pb::request::Body::Produce(_) => "produce",
            pb::request::Body::Metadata(_) => "metadata",
            _ => "fetch",
        };
        let (correlation_id, request) = client.request(body);
        if kind == "produce" {
            produce_ids.push((correlation_id, format!("piped-{index}")));
        }
        kinds.insert(correlation_id, kind);
        encode_frame(&request, &mut wire, usize::MAX).unwrap();
    }
    // Written in one go from another thread, so the broker's back-pressure cannot deadlock us.
    let mut writer = client.stream().try_clone().unwrap();
    let wire = wire.freeze();
    let writer = std::thread::spawn(move || writer.write_all(&wire));

    let mut answered = BTreeMap::new();
    for _ in 0..REQUESTS {
        let response = client.read_response().unwrap().expect("a response, not a close");
        let id = response.correlation_id;
        assert!(
            kinds.contains_key(&id),
            "a response to an unknown correlation id: {response:?}"
        );
        assert_eq!(response.error(), ErrorCode::None, "{response:?}");
        let body_kind = match &response.body {
            Some(pb::response::Body::Produce(_)) => "produce",
            Some(pb::response::Body::Metadata(_)) => "metadata",
            Some(pb::response::Body::Fetch(_)) => "fetch",
            other => panic!("unexpected body {other:?}"),
        };
        assert_eq!(body_kind, kinds[&id], "response {id} answers the wrong request");
        assert!(
            answered.insert(id, response).is_none(),
            "request {id} answered twice"
        );
    }
    writer.join().unwrap().unwrap();
    let extra = client.reaction(Duration::from_millis(200), Duration::from_millis(200));
    assert!(
        matches!(extra, Reaction::Silent),
        "more responses than requests: {extra:?}"
    );

    // In send order, the produces got offsets 0, 1, 2, ...
    for (expected_offset, (id, _)) in produce_ids.iter().enumerate() {
        let response = answered.remove(id).unwrap();
        let partition = produce_partition(response);
        assert_eq!(partition.error(), ErrorCode::None, "{partition:?}");
        assert_eq!(
            partition.base_offset, expected_offset as i64,
            "the produce sent as number {expected_offset} got offset {}",
            partition.base_offset
        );
    }
    let (records, _) = read_partition(&mut client, "piped", 0, 0);
    let stored: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    let sent: Vec<String> = produce_ids.into_iter().map(|(_, value)| value).collect();
    assert_eq!(stored, sent, "the log holds the produces in send order");
}

#[test]
fn acks_none_produce_gets_no_response_but_is_appended() {
    let (_dir, broker) = start_broker("acks-none");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("silent", 1, None);
    let silent_ids: HashSet<u64> = (0..5)
        .map(|index| {
            let body =
                RawClient::produce_body("silent", 0, batch_of(&[format!("quiet-{index}")]), pb::Acks::None);
            client.send_body(body).unwrap()
        })
        .collect();
    // The next response on the connection is the metadata one: acks=none produces send nothing.
    let metadata_id = client
        .send_body(pb::request::Body::Metadata(pb::MetadataRequest {
            topics: Vec::new(),
        }))
        .unwrap();
    let response = client.read_response().unwrap().expect("a response");
    assert!(
        !silent_ids.contains(&response.correlation_id),
        "an acks=none produce was answered: {response:?}"
    );
    assert_eq!(response.correlation_id, metadata_id, "{response:?}");
    // Pipelined on the same connection and appended in order before the acks=leader one.
    let base = client.produce_ok("silent", 0, batch_of(&["loud"]));
    assert_eq!(base, 5, "the five acks=none records come first");
    let (records, _) = read_partition(&mut client, "silent", 0, 0);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(
        values,
        vec!["quiet-0", "quiet-1", "quiet-2", "quiet-3", "quiet-4", "loud"]
    );
}

#[test]
fn a_slow_long_poll_does_not_hold_back_later_requests_on_the_same_connection() {
    let (_dir, broker) = start_broker("out-of-order");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("mixed", 1, None);
    let slow = client
        .send_body(RawClient::fetch_body("mixed", 0, 0, 10_000, 1))
        .unwrap();
    let fast = client
        .send_body(pb::request::Body::Metadata(pb::MetadataRequest {
            topics: Vec::new(),
        }))
        .unwrap();
    let first = client.read_response().unwrap().expect("a response");
    assert_eq!(
        first.correlation_id, fast,
        "the metadata answer must not wait behind the long poll"
    );
    // A produce on the same connection wakes the long poll.
    let produce = client
        .send_body(RawClient::produce_body(
            "mixed",
            0,
            batch_of(&["wake"]),
            pb::Acks::Leader,
        ))
        .unwrap();
    let mut ids = vec![
        client
            .read_response()
            .unwrap()
            .expect("a response")
            .correlation_id,
        client
            .read_response()
            .unwrap()
            .expect("a response")
            .correlation_id,
    ];
    ids.sort_unstable();
    assert_eq!(ids, vec![slow, produce]);
}
