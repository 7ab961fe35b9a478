//! Compaction with a real Kafka client (issue 9, "Tests and figures"): unmodified kafkajs 2.2.4
//! (tests/clients/node/compaction.js) creates a topic with `cleanup.policy=compact` in its
//! admin `configEntries`, produces many values over a few keys and tombstones, and, once the
//! real `tidelogd`'s cleaner has cleaned the closed segments, a new group reading from the
//! start sees exactly the latest value per key, at the offsets they were produced at, in
//! offset order, with the tombstones inside `delete.retention.ms` as null values; its
//! committed position reaches the high watermark (no stall on batches that hold no record).
//! With a short `delete.retention.ms`, the tombstones are gone after the delete horizon passed
//! and the cleaner ran again.
//!
//! Segments are 4 KiB (the broker's default here), so the values span several closed segments;
//! a run of "fence" records on one more key after them closes the segment holding the last
//! value, so every value and tombstone lies where the cleaner may clean it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tidelog_e2e::compacted::{fast_cleaner_config as config, read_compacted, CompactedRead};
use tidelog_e2e::kafka_clients::{run_node, ScriptRun};
use tidelog_e2e::records::now_ms;
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(200);
/// The cleaner backs off 100 ms between looks; a loaded 2-core machine running the suite is
/// given far longer than a clean of a few KiB takes.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(120);
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
const FENCE: &str = "fence";

fn start(dir: &TestDir) -> BrokerProcess {
    let config = config(dir);
    BrokerProcess::start_with_kafka(
        &dir.data_dir(),
        &["--config", config.to_str().expect("UTF-8 path")],
    )
}

fn kafkajs(broker: &BrokerProcess, command: &str, args: &[&str]) -> ScriptRun {
    let bootstrap = broker.kafka_addr().to_string();
    let mut full = vec![command, "--bootstrap", bootstrap.as_str()];
    full.extend_from_slice(args);
    let run = run_node("compaction.js", &full, SCRIPT_TIMEOUT);
    run.assert_success();
    assert!(
        run.events_named("error").is_empty(),
        "compaction.js {command} failed:\n{run}"
    );
    run
}

fn create_compacted(broker: &BrokerProcess, topic: &str, delete_retention_ms: i64) {
    let configs = json!({
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": delete_retention_ms.to_string(),
    });
    kafkajs(
        broker,
        "create",
        &["--topic", topic, "--configs", &configs.to_string()],
    );
}

/// A produced (or consumed) message: offset, key, value (`None`: a tombstone).
type Message = (i64, String, Option<String>);

fn messages_of(run: &ScriptRun, event: &str) -> Vec<Message> {
    run.events_named(event)
        .iter()
        .map(|event| {
            (
                event["offset"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("no offset in {event}")),
                event["key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no key in {event}"))
                    .to_owned(),
                event["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn produce(broker: &BrokerProcess, topic: &str, messages: &[Value]) -> Vec<Message> {
    let messages = Value::Array(messages.to_vec()).to_string();
    let run = kafkajs(
        broker,
        "produce",
        &["--topic", topic, "--messages", &messages, "--per-send", "5"],
    );
    messages_of(&run, "produced")
}

/// 40 values of each key, with tombstones: k1's is followed by a new value (so it goes), k3
/// ends with one (so it stays while inside delete.retention.ms).
fn history() -> Vec<Value> {
    let mut messages = Vec::new();
    for round in 0..40 {
        for key in KEYS {
            messages.push(json!({"key": key, "value": format!("{key}-value-{round:02}-{}", "x".repeat(40))}));
        }
        if round == 20 {
            messages.push(json!({"key": "k1", "value": null}));
        }
    }
    messages.push(json!({"key": "k3", "value": null}));
    messages
}

/// Enough records of one more key to fill and close the segment holding the last of
/// `history` (several segments' worth), tagged so each run's fence is distinct.
fn fence(tag: &str) -> Vec<Value> {
    (0..120)
        .map(|index| json!({"key": FENCE, "value": format!("{tag}-{index:03}-{}", "f".repeat(40))}))
        .collect()
}

/// The last message of each key.
fn latest(produced: &[Message]) -> BTreeMap<String, Message> {
    let mut out = BTreeMap::new();
    for message in produced {
        out.insert(message.1.clone(), message.clone());
    }
    out
}

/// Polls the partition over the native protocol until every history key is down to exactly
/// one record: the cleaner has cleaned the closed segments holding them.
fn wait_until_cleaned(
    broker: &BrokerProcess,
    topic: &str,
    what: &str,
    done: impl Fn(&CompactedRead) -> bool,
) -> CompactedRead {
    let mut client = RawClient::connect_or_panic(broker.addr());
    poll_until(CLEAN_TIMEOUT, what, || {
        let read = read_compacted(&mut client, topic, 0, 0);
        done(&read).then_some(read)
    })
}

fn one_record_per_key(read: &CompactedRead, keys: &[&str]) -> bool {
    keys.iter().all(|key| read.of_key(key).len() == 1)
}

/// Reads the topic from the start with kafkajs in a new group, to the high watermark, and
/// checks its committed position gets there.
fn consume_all(broker: &BrokerProcess, topic: &str, group: &str, high_watermark: i64) -> Vec<Message> {
    let end = high_watermark.to_string();
    let run = kafkajs(
        broker,
        "consume",
        &[
            "--topic",
            topic,
            "--group",
            group,
            "--end",
            &end,
            "--timeout-ms",
            "150000",
        ],
    );
    assert_eq!(run.event("committed")["offset"], json!(high_watermark), "{run}");
    let consumed = messages_of(&run, "consumed");
    let offsets: Vec<i64> = consumed.iter().map(|message| message.0).collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "kafkajs saw offsets out of order or twice: {offsets:?}"
    );
    consumed
}

/// What kafkajs consumed of the history keys is exactly `expected`; of the fence key, records
/// as produced at their offsets, ending with the latest (the cleaner may run while kafkajs
/// reads, so which older fence records it still meets is not fixed).
fn assert_consumed(consumed: &[Message], expected: &[Message], fences_produced: &[Message]) {
    let history: Vec<Message> = consumed
        .iter()
        .filter(|message| message.1 != FENCE)
        .cloned()
        .collect();
    assert_eq!(
        history, expected,
        "the history keys, as kafkajs read them from the start"
    );
    let produced: BTreeMap<i64, &Message> = fences_produced
        .iter()
        .map(|message| (message.0, message))
        .collect();
    let fences: Vec<&Message> = consumed.iter().filter(|message| message.1 == FENCE).collect();
    for fence in &fences {
        assert_eq!(
            produced.get(&fence.0),
            Some(fence),
            "a fence record kafkajs read is the one produced there"
        );
    }
    assert_eq!(
        fences.last().copied(),
        fences_produced.last(),
        "the fence's latest record stays"
    );
}

#[test]
fn kafkajs_reads_the_latest_value_per_key_and_the_tombstones_of_a_compacted_topic() {
    let dir = TestDir::new("kafka_compaction_latest");
    let broker = start(&dir);
    let topic = "compacted-orders";
    create_compacted(&broker, topic, 3_600_000);
    let produced = produce(&broker, topic, &history());
    let fence_produced = produce(&broker, topic, &fence("first"));

    let read = wait_until_cleaned(
        &broker,
        topic,
        "the cleaner to compact the history keys",
        |read| one_record_per_key(read, &KEYS),
    );
    let expected: Vec<Message> = {
        let mut last: Vec<Message> = latest(&produced).into_values().collect();
        last.sort();
        last
    };
    // k3's latest is its tombstone, kept inside delete.retention.ms with its horizon set.
    let tombstone = read.of_key("k3")[0].clone();
    assert_eq!(tombstone.value, None, "k3's tombstone stays: {tombstone:?}");
    let holder = read
        .batches
        .iter()
        .find(|header| header.base_offset <= tombstone.offset && tombstone.offset <= header.last_offset())
        .expect("the tombstone's batch was served");
    let horizon = holder
        .delete_horizon_ms()
        .expect("the tombstone's batch carries a delete horizon (KIP-534)");
    assert!(
        horizon > now_ms() + 3_000_000,
        "horizon {horizon} is about now + delete.retention.ms"
    );
    assert!(
        read.batches.iter().any(|header| header.record_count == 0),
        "the cleaned segments end with header-only batches, which kafkajs must read past: {:?}",
        read.batches
    );

    let consumed = consume_all(&broker, topic, "compaction-readers", read.high_watermark);
    assert_consumed(&consumed, &expected, &fence_produced);
    assert!(
        consumed
            .iter()
            .any(|message| message.1 == "k3" && message.2.is_none()),
        "kafkajs sees k3's tombstone as a null value"
    );
}

#[test]
fn kafkajs_no_longer_sees_tombstones_once_their_delete_horizon_passed() {
    let dir = TestDir::new("kafka_compaction_horizon");
    let broker = start(&dir);
    let topic = "compacted-short-retention";
    let retention_ms = 2_000;
    create_compacted(&broker, topic, retention_ms);
    let produced = produce(&broker, topic, &history());
    let first_fence = produce(&broker, topic, &fence("first"));

    let first = wait_until_cleaned(&broker, topic, "the first clean", |read| {
        one_record_per_key(read, &KEYS)
    });
    let tombstone = first.of_key("k3")[0].clone();
    assert_eq!(tombstone.value, None, "the first clean keeps k3's tombstone");
    let horizon = first
        .batches
        .iter()
        .find(|header| header.base_offset <= tombstone.offset && tombstone.offset <= header.last_offset())
        .and_then(|header| header.delete_horizon_ms())
        .expect("the tombstone's batch carries a delete horizon");

    // Past the horizon, new dirty segments make the log due again; that clean drops k3.
    poll_until(
        Duration::from_millis(retention_ms as u64 * 10),
        "the delete horizon to pass",
        || (now_ms() > horizon).then_some(()),
    );
    let second_fence = produce(&broker, topic, &fence("second"));
    let second = wait_until_cleaned(
        &broker,
        topic,
        "a clean after the horizon to drop k3's tombstone",
        |read| read.of_key("k3").is_empty() && one_record_per_key(read, &["k0", "k1", "k2", "k4"]),
    );

    let expected: Vec<Message> = {
        let mut last: Vec<Message> = latest(&produced)
            .into_values()
            .filter(|message| message.2.is_some())
            .collect();
        last.sort();
        last
    };
    let consumed = consume_all(&broker, topic, "after-the-horizon", second.high_watermark);
    let fences_produced: Vec<Message> = first_fence.into_iter().chain(second_fence).collect();
    assert_consumed(&consumed, &expected, &fences_produced);
    assert!(
        consumed.iter().all(|message| message.2.is_some()),
        "no tombstone is left"
    );
}
