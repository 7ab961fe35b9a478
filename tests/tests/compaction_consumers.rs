//! Tidelog's own consumers on a compacted topic (issue 9 §1, "a fetch from a removed offset
//! returns the next remaining record"): once the real `tidelogd`'s cleaner has cleaned the
//! closed segments, `tidelog consume` (the client's `Consumer`, moving by whole batches past
//! offset gaps and header-only batches) prints exactly the latest value per key, at the offsets
//! they were produced at, and `tidelog consume --group` commits the partition's end.

use std::collections::BTreeMap;
use std::time::Duration;

use tidelog_e2e::cli::run_cli_with_timeout;
use tidelog_e2e::compacted::{fast_cleaner_config as config, read_compacted, CompactedRead};
use tidelog_e2e::groups::{committed_offsets, parse_offset_line};
use tidelog_e2e::records::keyed_batch;
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb;

const CLEAN_TIMEOUT: Duration = Duration::from_secs(120);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
const FENCE: &str = "fence";

fn create_compacted(client: &mut RawClient, topic: &str) {
    client.create_topic(
        topic,
        1,
        Some(pb::TopicConfig {
            cleanup_policy: Some("compact".into()),
            min_cleanable_dirty_ratio: Some(0.01),
            ..Default::default()
        }),
    );
}

/// Produces `rounds` batches of one value per key (then `fence` batches of one more key, so
/// the segment holding the last value closes); returns offset → (key, value) of all of it.
fn produce(
    client: &mut RawClient,
    topic: &str,
    rounds: usize,
    fence: usize,
) -> BTreeMap<i64, (String, String)> {
    let mut produced = BTreeMap::new();
    let mut send = |client: &mut RawClient, records: Vec<(String, String)>| {
        let pairs: Vec<(Option<&[u8]>, &[u8])> = records
            .iter()
            .map(|(key, value)| (Some(key.as_bytes()), value.as_bytes()))
            .collect();
        let base = client.produce_ok(topic, 0, keyed_batch(&pairs));
        for (index, record) in records.into_iter().enumerate() {
            produced.insert(base + index as i64, record);
        }
    };
    for round in 0..rounds {
        let records = KEYS
            .iter()
            .map(|key| (key.to_string(), format!("{key}-{round:03}-{}", "x".repeat(40))))
            .collect();
        send(client, records);
    }
    for index in 0..fence {
        let records = (0..5)
            .map(|part| {
                (
                    FENCE.to_owned(),
                    format!("fence-{index:03}-{part}-{}", "f".repeat(40)),
                )
            })
            .collect();
        send(client, records);
    }
    produced
}

fn cleaned(client: &mut RawClient, topic: &str) -> CompactedRead {
    poll_until(CLEAN_TIMEOUT, "the cleaner to compact the keys", || {
        let read = read_compacted(client, topic, 0, 0);
        KEYS.iter().all(|key| read.of_key(key).len() == 1).then_some(read)
    })
}

#[test]
fn tidelog_consume_reads_a_compacted_topic_by_whole_batches_and_commits_its_end() {
    let dir = TestDir::new("compaction_consumers");
    let config = config(&dir);
    let broker = BrokerProcess::start(
        &dir.data_dir(),
        &["--config", config.to_str().expect("UTF-8 path")],
    );
    let topic = "compacted-accounts";
    let mut client = RawClient::connect_or_panic(broker.addr());
    create_compacted(&mut client, topic);
    let produced = produce(&mut client, topic, 40, 30);
    let read = cleaned(&mut client, topic);
    assert!(
        read.batches.iter().any(|header| header.record_count == 0),
        "the cleaned segments end with header-only batches: {:?}",
        read.batches
    );

    let output = run_cli_with_timeout(
        Some(broker.addr()),
        &[
            "consume",
            topic,
            "--group",
            "compacted-readers",
            "--from-beginning",
            "--print-offset",
            "--timeout-ms",
            "3000",
        ],
        b"",
        CLI_TIMEOUT,
    );
    output.assert_success();
    let lines: Vec<_> = output.stdout_lines().into_iter().map(parse_offset_line).collect();
    let offsets: Vec<i64> = lines.iter().map(|line| line.offset).collect();
    assert!(
        offsets.windows(2).all(|pair| pair[0] < pair[1]),
        "printed offsets go up: {offsets:?}"
    );
    for line in &lines {
        assert_eq!(
            produced.get(&line.offset).map(|(_, value)| value),
            Some(&line.value),
            "printed {line:?}, not what was produced there"
        );
    }
    // Every key's latest value, at its offset; of the others only fence records (the cleaner
    // may still be at work on the fence's segments while the consumer reads).
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, (key, _)) in &produced {
        latest.insert(key.as_str(), *offset);
    }
    for key in KEYS {
        let printed: Vec<i64> = lines
            .iter()
            .filter(|line| produced[&line.offset].0 == key)
            .map(|line| line.offset)
            .collect();
        assert_eq!(printed, [latest[key]], "{key}: only its latest value is printed");
    }
    assert_eq!(
        offsets.last(),
        Some(&(read.high_watermark - 1)),
        "the last record is printed"
    );
    let committed = committed_offsets(&mut client, "compacted-readers", topic, [0]);
    assert_eq!(
        committed[&0], read.high_watermark,
        "the group committed the partition's end"
    );
}
