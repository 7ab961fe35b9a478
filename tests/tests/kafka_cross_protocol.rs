//! One broker, two protocols: records produced with kafkajs through the Kafka listener are
//! consumed with the `tidelog` CLI through the native one, and the reverse; `tidelog group
//! describe` shows a kafkajs group's commits and lag.

use std::collections::BTreeMap;

use tidelog_e2e::cli::run_cli;
use tidelog_e2e::groups::described_partitions;
use tidelog_e2e::kafka_scenario::{
    check_contents, check_log, group_of_two, produce, resume, Driver, Produced,
};
use tidelog_e2e::{BrokerProcess, TestDir};

const PARTITIONS: u32 = 3;

fn broker_with_topic(test_name: &str, topic: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    run_cli(
        Some(broker.addr()),
        &["topic", "create", topic, "--partitions", &PARTITIONS.to_string()],
        b"",
    )
    .assert_success();
    (dir, broker)
}

/// `tidelog consume TOPIC --from-beginning --print-offset --print-key` until `records` lines:
/// (partition, offset, key, value).
fn cli_consume_all(broker: &BrokerProcess, topic: &str, records: usize) -> Vec<Produced> {
    let count = records.to_string();
    let output = run_cli(
        Some(broker.addr()),
        &[
            "consume",
            topic,
            "--from-beginning",
            "--print-offset",
            "--print-key",
            "--max-messages",
            &count,
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            assert_eq!(
                fields.len(),
                4,
                "expected PARTITION, OFFSET, KEY, VALUE: {line:?}\n{output}"
            );
            Produced {
                partition: fields[0]
                    .parse()
                    .unwrap_or_else(|_| panic!("partition in {line:?}")),
                offset: fields[1].parse().unwrap_or_else(|_| panic!("offset in {line:?}")),
                key: fields[2].to_owned(),
                value: fields[3].to_owned(),
            }
        })
        .collect()
}

#[test]
fn records_produced_with_kafkajs_are_consumed_by_the_tidelog_cli() {
    const TOPIC: &str = "from-kafkajs";
    let (_dir, broker) = broker_with_topic("cross_kafkajs_to_cli", TOPIC);
    let bootstrap = broker.kafka_addr();
    let mut produced = produce(Driver::Kafkajs, bootstrap, TOPIC, "plain", 15, &["--acks", "-1"]);
    produced.extend(produce(
        Driver::Kafkajs,
        bootstrap,
        TOPIC,
        "gz",
        15,
        &["--acks", "-1", "--compression", "gzip"],
    ));
    check_log(&produced, PARTITIONS);

    let mut consumed = cli_consume_all(&broker, TOPIC, produced.len());
    consumed.sort_by_key(|r| (r.partition, r.offset));
    produced.sort_by_key(|r| (r.partition, r.offset));
    assert_eq!(
        consumed, produced,
        "the CLI must read exactly what kafkajs produced"
    );
}

#[test]
fn records_produced_with_the_tidelog_cli_are_consumed_by_kafkajs() {
    const TOPIC: &str = "from-cli";
    let (_dir, broker) = broker_with_topic("cross_cli_to_kafkajs", TOPIC);
    let mut input = String::new();
    let mut sent = Vec::new();
    for seq in 0..8 {
        for key in ["k0", "k1", "k2", "k3"] {
            let value = format!("cli-{key}-{seq}");
            input.push_str(&format!("{key}:{value}\n"));
            sent.push((key.to_owned(), value));
        }
    }
    let output = run_cli(
        Some(broker.addr()),
        &["produce", TOPIC, "--key-separator", ":", "--print-offsets"],
        input.as_bytes(),
    );
    output.assert_success();
    let produced: Vec<Produced> = output
        .stdout_lines()
        .iter()
        .zip(&sent)
        .map(|(line, (key, value))| {
            let (partition, offset) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("expected PARTITION<TAB>OFFSET: {line:?}"));
            Produced {
                key: key.clone(),
                value: value.clone(),
                partition: partition
                    .parse()
                    .unwrap_or_else(|_| panic!("partition in {line:?}")),
                offset: offset.parse().unwrap_or_else(|_| panic!("offset in {line:?}")),
            }
        })
        .collect();
    assert_eq!(
        produced.len(),
        sent.len(),
        "one offset line per record:\n{output}"
    );
    let end = check_log(&produced, PARTITIONS);

    let consumed = resume(
        Driver::Kafkajs,
        broker.kafka_addr(),
        TOPIC,
        "kafkajs-reads-cli",
        &BTreeMap::new(),
        &end,
        &produced,
    );
    check_contents(Driver::Kafkajs, &consumed, &produced);
    assert_eq!(consumed.len(), produced.len());
}

#[test]
fn tidelog_group_describe_shows_a_kafkajs_group_with_its_commits_and_lag() {
    const TOPIC: &str = "described";
    const GROUP: &str = "kafkajs-described";
    let (_dir, broker) = broker_with_topic("cross_group_describe", TOPIC);
    let bootstrap = broker.kafka_addr();
    let produced = produce(Driver::Kafkajs, bootstrap, TOPIC, "d", 30, &["--acks", "-1"]);
    let end = check_log(&produced, PARTITIONS);
    // Commit all but the last three records of each partition: the lag is 3 everywhere.
    let targets: BTreeMap<u32, i64> = end.iter().map(|(p, high)| (*p, (high - 3).max(0))).collect();
    group_of_two(
        Driver::Kafkajs,
        bootstrap,
        TOPIC,
        GROUP,
        &end,
        &targets,
        &produced,
    );

    let output = run_cli(Some(broker.addr()), &["group", "describe", GROUP], b"");
    output.assert_success();
    let described = described_partitions(&output.stdout, TOPIC);
    let seen: BTreeMap<u32, (Option<i64>, i64, Option<i64>)> = described
        .iter()
        .map(|(p, row)| (*p, (row.committed, row.log_end, row.lag)))
        .collect();
    let expected: BTreeMap<u32, (Option<i64>, i64, Option<i64>)> = end
        .iter()
        .map(|(p, high)| (*p, (Some(targets[p]), *high, Some(high - targets[p]))))
        .collect();
    assert_eq!(
        seen, expected,
        "(committed, log end, lag) per partition:\n{output}"
    );
}
