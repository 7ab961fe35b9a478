//! The steps every real Kafka client goes through against Tidelog's Kafka listener (issue 7
//! §3), shared by the per-client tests: each step runs one subcommand of the client's driver
//! script (tests/clients/node/kafka.js, python/confluent.py, python/kafka_python.py; they all
//! print the same JSON lines) and checks what it printed against what was produced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde_json::Value;

use crate::kafka_clients::{run_node, run_python, ScriptRun, SCRIPT_TIMEOUT, SCRIPT_WAIT_MS};

/// A client driver script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// kafkajs (tests/clients/node/kafka.js).
    Kafkajs,
    /// confluent-kafka on librdkafka (tests/clients/python/confluent.py); `kip848` puts its
    /// group members on `group.protocol=consumer`.
    Confluent { kip848: bool },
    /// kafka-python (tests/clients/python/kafka_python.py).
    KafkaPython,
}

impl Driver {
    /// Runs `COMMAND --bootstrap ADDR ARGS...`; does not check the exit status.
    pub fn run(&self, bootstrap: SocketAddr, command: &str, args: &[&str]) -> ScriptRun {
        let bootstrap = bootstrap.to_string();
        let mut full = vec![command, "--bootstrap", bootstrap.as_str()];
        full.extend_from_slice(args);
        if matches!(command, "group" | "consume") {
            full.extend_from_slice(&["--timeout-ms", SCRIPT_WAIT_MS]);
        }
        match self {
            Driver::Kafkajs => run_node("kafka.js", &full, SCRIPT_TIMEOUT),
            Driver::Confluent { kip848 } => {
                if *kip848 && matches!(command, "group" | "consume") {
                    full.extend_from_slice(&["--group-protocol", "consumer"]);
                }
                run_python("confluent.py", &full, SCRIPT_TIMEOUT)
            }
            Driver::KafkaPython => run_python("kafka_python.py", &full, SCRIPT_TIMEOUT),
        }
    }

    /// Runs a command that must succeed (exit 0, no `error` event). A group leader that
    /// assigned without the topic's metadata fails it first: that is why such a run times out
    /// when it does.
    pub fn run_ok(&self, bootstrap: SocketAddr, command: &str, args: &[&str]) -> ScriptRun {
        let run = self.run(bootstrap, command, args);
        check_assigned_with_metadata(*self, &run);
        run.assert_success();
        assert!(
            run.events_named("error").is_empty(),
            "{self:?} {command} printed an error:\n{run}"
        );
        run
    }

    /// The compression codecs this client can produce with.
    pub fn codecs(&self) -> &'static [&'static str] {
        match self {
            // kafkajs has gzip built in; snappy comes from the kafkajs-snappy codec package.
            Driver::Kafkajs => &["gzip", "snappy"],
            Driver::Confluent { .. } | Driver::KafkaPython => &["gzip", "snappy", "lz4", "zstd"],
        }
    }
}

/// A group's leader must never assign without the subscribed topic's metadata. kafka-python
/// reports each time it does as an `assignor_warning` (tests/clients/python/kafka_python.py).
/// Such an assignment gives every member nothing, and the metadata-triggered rejoin that
/// follows is one kafka-python can lose, stranding a member. The broker's initial rebalance
/// delay (`groups.initial_rebalance_delay_ms`) is what gives a new group's leader time to
/// fetch the metadata.
fn check_assigned_with_metadata(driver: Driver, run: &ScriptRun) {
    assert!(
        run.events_named("assignor_warning").is_empty(),
        "{driver:?}: the group's leader assigned partitions without the topic's metadata:\n{run}"
    );
}

/// One record a produce run reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub key: String,
    pub value: String,
    pub partition: u32,
    pub offset: i64,
}

/// One record a consumer printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub member: String,
    pub partition: u32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
}

fn int(event: &Value, field: &str) -> i64 {
    event[field]
        .as_i64()
        .unwrap_or_else(|| panic!("event has no integer {field:?}: {event}"))
}

fn string(event: &Value, field: &str) -> Option<String> {
    event[field].as_str().map(str::to_owned)
}

/// `{0: 5, 1: 7}` -> `0:5,1:7`, the scripts' `--end` / `--commit` form.
pub fn partition_arg(offsets: &BTreeMap<u32, i64>) -> String {
    offsets
        .iter()
        .map(|(partition, offset)| format!("{partition}:{offset}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses the `consumed` events of a run.
pub fn consumed(run: &ScriptRun) -> Vec<Consumed> {
    run.events_named("consumed")
        .iter()
        .map(|event| Consumed {
            member: string(event, "member").unwrap_or_default(),
            partition: int(event, "partition") as u32,
            offset: int(event, "offset"),
            key: string(event, "key"),
            value: string(event, "value"),
            headers: event["headers"]
                .as_object()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The `PARTITION -> OFFSET` pairs of the events named `name`.
pub fn partition_offsets(run: &ScriptRun, name: &str) -> BTreeMap<u32, i64> {
    run.events_named(name)
        .iter()
        .map(|event| (int(event, "partition") as u32, int(event, "offset")))
        .collect()
}

/// Metadata and DescribeCluster: exactly one broker, at the Kafka listener's address, which is
/// also the controller.
pub fn check_cluster(driver: Driver, bootstrap: SocketAddr) -> ScriptRun {
    let run = driver.run_ok(bootstrap, "metadata", &[]);
    let cluster = run.event("cluster");
    let brokers = cluster["brokers"].as_array().cloned().unwrap_or_default();
    assert_eq!(brokers.len(), 1, "{driver:?}: expected one broker:\n{run}");
    assert_eq!(
        brokers[0]["host"],
        bootstrap.ip().to_string(),
        "{driver:?}:\n{run}"
    );
    assert_eq!(brokers[0]["port"], bootstrap.port(), "{driver:?}:\n{run}");
    assert_eq!(
        cluster["controller"], brokers[0]["nodeId"],
        "{driver:?}: the controller must be the live broker:\n{run}"
    );
    run
}

/// CreateTopics of `partitions` partitions, each led by the one broker.
pub fn create_topic(driver: Driver, bootstrap: SocketAddr, topic: &str, partitions: u32) {
    let run = driver.run_ok(
        bootstrap,
        "create-topic",
        &["--topic", topic, "--partitions", &partitions.to_string()],
    );
    let created = run.event("created");
    let listed: Vec<(i64, i64)> = created["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| (int(p, "partition"), int(p, "errorCode")))
        .collect();
    let expected: Vec<(i64, i64)> = (0..i64::from(partitions)).map(|p| (p, 0)).collect();
    assert_eq!(
        listed, expected,
        "{driver:?}: partitions of the new topic:\n{run}"
    );
}

/// Produces `records` keyed records tagged `tag` with `options` (e.g. `--acks 1`); returns what
/// the client reported, after checking each has an offset.
pub fn produce(
    driver: Driver,
    bootstrap: SocketAddr,
    topic: &str,
    tag: &str,
    records: u32,
    options: &[&str],
) -> Vec<Produced> {
    let records_text = records.to_string();
    let mut args = vec![
        "--topic",
        topic,
        "--tag",
        tag,
        "--records",
        &records_text,
        "--keys",
        "4",
    ];
    args.extend_from_slice(options);
    let run = driver.run_ok(bootstrap, "produce", &args);
    let produced: Vec<Produced> = run
        .events_named("produced")
        .iter()
        .map(|event| Produced {
            key: string(event, "key").unwrap_or_default(),
            value: string(event, "value").unwrap_or_default(),
            partition: int(event, "partition") as u32,
            offset: event["offset"]
                .as_i64()
                .unwrap_or_else(|| panic!("{driver:?} produce {options:?}: no offset for {event}\n{run}")),
        })
        .collect();
    assert_eq!(
        produced.len(),
        records as usize,
        "{driver:?} produce {options:?}:\n{run}"
    );
    produced
}

/// Checks a topic's log against everything produced into it: per partition the offsets are
/// 0, 1, 2, ... with no gap or reuse, a key always lands in one partition, and each key's
/// records of one tag sit in the order they were sent. Returns the log end per partition.
pub fn check_log(produced: &[Produced], partitions: u32) -> BTreeMap<u32, i64> {
    let mut by_partition: BTreeMap<u32, Vec<&Produced>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    let mut key_partition: BTreeMap<&str, u32> = BTreeMap::new();
    for record in produced {
        by_partition.entry(record.partition).or_default().push(record);
        let first = *key_partition.entry(&record.key).or_insert(record.partition);
        assert_eq!(
            first, record.partition,
            "key {} went to partitions {first} and {}",
            record.key, record.partition
        );
    }
    let mut end = BTreeMap::new();
    for (partition, mut records) in by_partition {
        records.sort_by_key(|record| record.offset);
        let offsets: Vec<i64> = records.iter().map(|record| record.offset).collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}'s offsets have a gap or a reuse"
        );
        let mut last_seq: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for record in &records {
            let (tag, seq) = tag_and_seq(&record.value);
            if let Some(previous) = last_seq.insert((tag, &record.key), seq) {
                assert!(
                    seq > previous,
                    "partition {partition}: {} is stored after a later record of its key",
                    record.value
                );
            }
        }
        end.insert(partition, offsets.len() as i64);
    }
    end
}

/// `TAG-KEY-SEQ` -> (TAG, SEQ).
fn tag_and_seq(value: &str) -> (&str, i64) {
    let (rest, seq) = value
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("value {value} is not TAG-KEY-SEQ"));
    let (tag, _key) = rest
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("value {value} is not TAG-KEY-SEQ"));
    (
        tag,
        seq.parse()
            .unwrap_or_else(|_| panic!("value {value} is not TAG-KEY-SEQ")),
    )
}

/// ListOffsets (earliest, latest): every partition starts at 0 and ends at `end`.
pub fn check_offsets(driver: Driver, bootstrap: SocketAddr, topic: &str, end: &BTreeMap<u32, i64>) {
    let run = driver.run_ok(bootstrap, "offsets", &["--topic", topic]);
    let listed: BTreeMap<u32, (i64, i64)> = run
        .events_named("offsets")
        .iter()
        .map(|event| {
            (
                int(event, "partition") as u32,
                (int(event, "low"), int(event, "high")),
            )
        })
        .collect();
    let expected: BTreeMap<u32, (i64, i64)> = end.iter().map(|(p, high)| (*p, (0, *high))).collect();
    assert_eq!(listed, expected, "{driver:?}: listed offsets (low, high):\n{run}");
    for event in run.events_named("offsets") {
        // confluent-kafka also reports the consumer's watermarks: they must agree.
        if event.get("watermark_high").is_some() {
            assert_eq!(
                event["watermark_high"], event["high"],
                "{driver:?} watermarks:\n{run}"
            );
            assert_eq!(
                event["watermark_low"], event["low"],
                "{driver:?} watermarks:\n{run}"
            );
        }
    }
}

/// Every consumed record is the produced record at its partition and offset: key, value and
/// (where the client sends them) headers.
pub fn check_contents(driver: Driver, consumed: &[Consumed], produced: &[Produced]) {
    let at: BTreeMap<(u32, i64), &Produced> = produced
        .iter()
        .map(|record| ((record.partition, record.offset), record))
        .collect();
    for record in consumed {
        let Some(original) = at.get(&(record.partition, record.offset)) else {
            panic!("{driver:?} consumed {record:?}, at an offset nothing was produced to");
        };
        assert_eq!(
            record.key.as_deref(),
            Some(original.key.as_str()),
            "{driver:?}: key of {record:?}"
        );
        assert_eq!(
            record.value.as_deref(),
            Some(original.value.as_str()),
            "{driver:?}: value of {record:?}"
        );
        let (tag, seq) = tag_and_seq(&original.value);
        if !record.headers.is_empty() {
            assert_eq!(
                record.headers.get("tag").map(String::as_str),
                Some(tag),
                "{driver:?}: {record:?}"
            );
            assert_eq!(
                record.headers.get("seq"),
                Some(&seq.to_string()),
                "{driver:?}: {record:?}"
            );
        }
    }
}

/// Within one member's delivery, a partition's offsets only step forward by one: a member never
/// skips a record. (After a rebalance a member may start again at a committed offset, which
/// is a step back.)
fn check_no_skips(driver: Driver, consumed: &[Consumed]) {
    let mut last: BTreeMap<(&str, u32), i64> = BTreeMap::new();
    for record in consumed {
        if let Some(previous) = last.insert((&record.member, record.partition), record.offset) {
            assert!(
                record.offset <= previous + 1,
                "{driver:?}: member {} skipped from offset {previous} to {} in partition {}",
                record.member,
                record.offset,
                record.partition
            );
        }
    }
}

/// A group of two consumes everything below `end`, committing manually up to `targets`
/// (exclusive offsets); checks the settled assignment, that every record below a target was
/// delivered exactly once and every other at least once, and that the group's committed
/// offsets are exactly the targets. Returns what was consumed.
pub fn group_of_two(
    driver: Driver,
    bootstrap: SocketAddr,
    topic: &str,
    group: &str,
    end: &BTreeMap<u32, i64>,
    targets: &BTreeMap<u32, i64>,
    produced: &[Produced],
) -> Vec<Consumed> {
    let end_arg = partition_arg(end);
    let commit_arg = partition_arg(targets);
    let run = driver.run_ok(
        bootstrap,
        "group",
        &[
            "--topic",
            topic,
            "--group",
            group,
            "--members",
            "2",
            "--end",
            &end_arg,
            "--commit",
            &commit_arg,
        ],
    );
    let settled = run.event("settled");
    let assignments = settled["assignments"]
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("{driver:?}: settled without assignments:\n{run}"));
    assert_eq!(assignments.len(), 2, "{driver:?}: a group of two:\n{run}");
    let mut owned = Vec::new();
    for partitions in assignments.values() {
        let partitions: Vec<i64> = partitions
            .as_array()
            .map(|list| list.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        assert!(
            !partitions.is_empty(),
            "{driver:?}: a member owns nothing:\n{run}"
        );
        owned.extend(partitions);
    }
    owned.sort_unstable();
    let all: Vec<i64> = end.keys().map(|p| i64::from(*p)).collect();
    assert_eq!(
        owned, all,
        "{driver:?}: the members' partitions overlap or miss one:\n{run}"
    );

    let records = consumed(&run);
    check_contents(driver, &records, produced);
    check_no_skips(driver, &records);
    let mut deliveries: BTreeMap<(u32, i64), usize> = BTreeMap::new();
    for record in &records {
        *deliveries.entry((record.partition, record.offset)).or_default() += 1;
    }
    for (partition, high) in end {
        let target = targets.get(partition).copied().unwrap_or(0);
        for offset in 0..*high {
            let count = deliveries.get(&(*partition, offset)).copied().unwrap_or(0);
            assert!(
                count >= 1,
                "{driver:?}: partition {partition} offset {offset} never delivered:\n{run}"
            );
            assert!(
                offset >= target || count == 1,
                "{driver:?}: partition {partition} offset {offset}, below the committed {target}, \
                 delivered {count} times:\n{run}"
            );
        }
    }
    let committed = committed(driver, bootstrap, topic, group);
    let expected: BTreeMap<u32, i64> = targets
        .iter()
        .filter(|(_, t)| **t > 0)
        .map(|(p, t)| (*p, *t))
        .collect();
    assert_eq!(committed, expected, "{driver:?}: the group's committed offsets");
    records
}

/// OffsetFetch of `group` for `topic`, as the client's admin API reports it; partitions with
/// no commit (-1) are left out.
pub fn committed(driver: Driver, bootstrap: SocketAddr, topic: &str, group: &str) -> BTreeMap<u32, i64> {
    let run = driver.run_ok(bootstrap, "committed", &["--topic", topic, "--group", group]);
    partition_offsets(&run, "committed")
        .into_iter()
        .filter(|(_, offset)| *offset >= 0)
        .collect()
}

/// One consumer joins `group` again and must resume exactly at `committed`: per partition it
/// gets the offsets `committed..end`, each once, in order (no gap, no duplicate).
pub fn resume(
    driver: Driver,
    bootstrap: SocketAddr,
    topic: &str,
    group: &str,
    committed: &BTreeMap<u32, i64>,
    end: &BTreeMap<u32, i64>,
    produced: &[Produced],
) -> Vec<Consumed> {
    let end_arg = partition_arg(end);
    let run = driver.run_ok(
        bootstrap,
        "consume",
        &["--topic", topic, "--group", group, "--end", &end_arg],
    );
    let before = partition_offsets(&run, "committed_before");
    for (partition, offset) in committed {
        assert_eq!(
            before.get(partition),
            Some(offset),
            "{driver:?}: the restarted consumer saw another committed offset:\n{run}"
        );
    }
    let records = consumed(&run);
    check_contents(driver, &records, produced);
    let mut got: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for record in &records {
        got.entry(record.partition).or_default().push(record.offset);
    }
    for (partition, high) in end {
        let start = committed.get(partition).copied().unwrap_or(0);
        let expected: Vec<i64> = (start..*high).collect();
        assert_eq!(
            got.remove(partition).unwrap_or_default(),
            expected,
            "{driver:?}: partition {partition} after the restart must be exactly \
             {start}..{high}:\n{run}"
        );
    }
    assert!(
        got.is_empty(),
        "{driver:?}: records of other partitions: {got:?}\n{run}"
    );
    records
}

/// DeleteTopics, after which the topic is no longer listed.
pub fn delete_topic(driver: Driver, bootstrap: SocketAddr, topic: &str) {
    let run = driver.run_ok(bootstrap, "delete-topic", &["--topic", topic]);
    let topics = run.event("topics");
    let names: BTreeSet<&str> = topics["names"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        !names.contains(topic),
        "{driver:?}: {topic} is still listed after its deletion:\n{run}"
    );
}

/// Per-key order in a consumer's delivery: within one member, each key's records of one tag
/// arrive in the order they were sent (re-deliveries after a rebalance start a new run).
pub fn check_key_order(driver: Driver, consumed: &[Consumed]) {
    let mut last: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    for record in consumed {
        let Some(value) = &record.value else { continue };
        let Some(key) = &record.key else { continue };
        let (tag, seq) = tag_and_seq(value);
        if let Some((previous_seq, previous_offset)) =
            last.insert((&record.member, key, tag), (seq, record.offset))
        {
            // A step back in offset is a re-delivery: it may repeat earlier sequence numbers.
            if record.offset > previous_offset {
                assert!(
                    seq > previous_seq,
                    "{driver:?}: member {} got {value} after sequence {previous_seq} of key {key}",
                    record.member
                );
            }
        }
    }
}

/// The whole life of a topic through one client (issue 7 §3): create it with 3 partitions;
/// produce keyed records with acks=1, acks=all, idempotence and each codec; list offsets;
/// consume in a group of two with manual commits; restart a consumer and resume exactly at the
/// committed offsets; check per-key order; delete the topic.
pub fn topic_lifecycle(driver: Driver, bootstrap: SocketAddr, topic: &str, group: &str) {
    const PARTITIONS: u32 = 3;
    check_cluster(driver, bootstrap);
    create_topic(driver, bootstrap, topic, PARTITIONS);

    let mut produced = Vec::new();
    produced.extend(produce(driver, bootstrap, topic, "acks1", 12, &["--acks", "1"]));
    produced.extend(produce(
        driver,
        bootstrap,
        topic,
        "acksall",
        12,
        &["--acks", "-1"],
    ));
    produced.extend(produce(
        driver,
        bootstrap,
        topic,
        "idem",
        12,
        &["--acks", "-1", "--idempotent"],
    ));
    for codec in driver.codecs() {
        let tag = format!("z{codec}");
        produced.extend(produce(
            driver,
            bootstrap,
            topic,
            &tag,
            12,
            &["--acks", "-1", "--compression", codec],
        ));
    }
    let end = check_log(&produced, PARTITIONS);
    check_offsets(driver, bootstrap, topic, &end);

    // Commit all but the last two records of each partition.
    let targets: BTreeMap<u32, i64> = end.iter().map(|(p, high)| (*p, (high - 2).max(0))).collect();
    let first = group_of_two(driver, bootstrap, topic, group, &end, &targets, &produced);
    check_key_order(driver, &first);

    produced.extend(produce(driver, bootstrap, topic, "after", 9, &["--acks", "-1"]));
    let end = check_log(&produced, PARTITIONS);
    let again = resume(driver, bootstrap, topic, group, &targets, &end, &produced);
    check_key_order(driver, &again);
    check_offsets(driver, bootstrap, topic, &end);

    delete_topic(driver, bootstrap, topic);
}

/// The group part alone: a topic of 3 partitions with records from acks=all, a group of two
/// with manual commits, then a restarted consumer resuming exactly at the commits. The group
/// forms moments after the topic is created. Used for group protocols the full
/// [`topic_lifecycle`] already covers otherwise (KIP-848), and for that race.
pub fn group_lifecycle(driver: Driver, bootstrap: SocketAddr, topic: &str, group: &str) {
    const PARTITIONS: u32 = 3;
    create_topic(driver, bootstrap, topic, PARTITIONS);
    let mut produced = produce(driver, bootstrap, topic, "before", 30, &["--acks", "-1"]);
    let end = check_log(&produced, PARTITIONS);
    let targets: BTreeMap<u32, i64> = end.iter().map(|(p, high)| (*p, (high - 2).max(0))).collect();
    let first = group_of_two(driver, bootstrap, topic, group, &end, &targets, &produced);
    check_key_order(driver, &first);
    produced.extend(produce(driver, bootstrap, topic, "after", 9, &["--acks", "-1"]));
    let end = check_log(&produced, PARTITIONS);
    let again = resume(driver, bootstrap, topic, group, &targets, &end, &produced);
    check_key_order(driver, &again);
}

/// CreateTopics of 3 partitions, Metadata lists the topic, DeleteTopics, Metadata no longer
/// does.
pub fn create_and_delete_topic(driver: Driver, bootstrap: SocketAddr, topic: &str) {
    create_topic(driver, bootstrap, topic, 3);
    let run = driver.run_ok(bootstrap, "metadata", &[]);
    let names = run.event("topics")["names"].clone();
    assert!(
        names
            .as_array()
            .is_some_and(|names| names.iter().any(|name| name == topic)),
        "{driver:?}: Metadata does not list the new topic {topic}:\n{run}"
    );
    delete_topic(driver, bootstrap, topic);
}
