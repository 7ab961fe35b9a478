//! A CI-sized version of the 10,000-partition measurement (benches/partitions-10k.sh): the real
//! `tidelogd` creates a few thousand partitions, writes to every one, stops gracefully, restarts
//! and serves every record, within the harness's start and stop timeouts, while holding about
//! one descriptor per partition (closed and index files go through the bounded file cache).

use std::time::Instant;

use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};

const TOPICS: u32 = 4;
const PARTITIONS: u32 = 500;
/// The file cache's size in this test: small, so the descriptor count shows what is pinned.
const CACHE_FILES: usize = 256;

fn open_descriptors(broker: &BrokerProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("listing /proc/PID/fd")
        .count()
}

fn value(topic: u32, partition: u32) -> String {
    format!("topic-{topic}-partition-{partition}")
}

#[test]
fn thousands_of_partitions_are_created_written_restarted_and_served_with_one_descriptor_each() {
    let dir = TestDir::new("many-partitions");
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(
        &config,
        format!("[limits]\nopen_segment_files_max = {CACHE_FILES}\nopen_segment_files_min = {CACHE_FILES}\n"),
    )
    .unwrap();
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    let started = Instant::now();
    for topic in 0..TOPICS {
        client.create_topic(&format!("t{topic}"), PARTITIONS, None);
    }
    eprintln!(
        "created {} partitions in {:?}",
        TOPICS * PARTITIONS,
        started.elapsed()
    );
    let started = Instant::now();
    for topic in 0..TOPICS {
        for partition in 0..PARTITIONS {
            client.produce_ok(
                &format!("t{topic}"),
                partition,
                batch_of(&[value(topic, partition)]),
            );
        }
    }
    eprintln!("wrote to every partition in {:?}", started.elapsed());
    let partitions = (TOPICS * PARTITIONS) as usize;
    let open = open_descriptors(&broker);
    // Three files per segment, all kept open, would be 6,000.
    assert!(
        open < partitions + CACHE_FILES + 200,
        "{open} descriptors open for {partitions} partitions"
    );
    drop(client);

    let started = Instant::now();
    let status = broker.terminate_and_wait();
    assert!(status.success(), "graceful stop: {status}");
    eprintln!("stopped in {:?}", started.elapsed());
    let started = Instant::now();
    broker.restart();
    eprintln!("restarted in {:?}", started.elapsed());
    let open = open_descriptors(&broker);
    assert!(
        open < partitions + CACHE_FILES + 200,
        "{open} descriptors after the restart"
    );

    let mut client = RawClient::connect_or_panic(broker.addr());
    for topic in 0..TOPICS {
        for partition in 0..PARTITIONS {
            let (records, high_watermark) = read_partition(&mut client, &format!("t{topic}"), partition, 0);
            assert_eq!(high_watermark, 1, "t{topic}/{partition}");
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].value_text(), value(topic, partition));
        }
    }
    // Still writable everywhere after the restart.
    for partition in [0, PARTITIONS - 1] {
        let offset = client.produce_ok("t0", partition, batch_of(&["again"]));
        assert_eq!(offset, 1);
    }
    broker.assert_alive("serving every partition after the restart");
}
