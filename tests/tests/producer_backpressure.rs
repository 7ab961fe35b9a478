//! The producer's buffer is a bound, also with the buffer bytes its batches take ahead for
//! their next records: against a broker stopped with SIGSTOP (a stuck broker), `send` accepts
//! records until their bytes fill `buffer_bytes` and then waits; once the broker runs again,
//! every record is stored exactly once and in send order.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use tidelog_client::{Client, ClientConfig, Offset, PartitionId, Producer, ProducerConfig, ProducerRecord};
use tidelog_e2e::records::read_partition;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};

const BUFFER_BYTES: usize = 256 * 1024;
const VALUE_BYTES: usize = 100;
/// Records sent after the broker resumes.
const AFTER: u64 = 2_000;
/// How long a `send` may take before it counts as waiting for buffer room: a send with room
/// completes on its first poll, and nothing can free room while the broker is stopped.
const BLOCKED_AFTER: Duration = Duration::from_secs(1);

fn value(i: u64) -> Vec<u8> {
    let mut value = format!("{i:020}").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

fn record(i: u64) -> ProducerRecord {
    ProducerRecord::new("bp", value(i)).partition(PartitionId::new(0))
}

/// Resumes the broker when dropped, so a failing assertion does not leave it stopped.
struct Stopped(nix::unistd::Pid);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn send_waits_while_a_stopped_broker_holds_the_buffer_and_every_record_lands_once_it_resumes() {
    let dir = TestDir::new("producer-backpressure");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut raw = RawClient::connect_or_panic(broker.addr());
    raw.create_topic("bp", 1, None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = broker.addr().to_string();
    let pid = broker.pid();
    let (accepted, total) = runtime.block_on(async move {
        let client = Client::connect(ClientConfig::new([addr]))
            .await
            .expect("client connects");
        let config = ProducerConfig::default()
            .batch_size_bytes(16 * 1024)
            .max_request_bytes(64 * 1024)
            .buffer_bytes(BUFFER_BYTES)
            .linger(Duration::from_millis(1));
        let producer = Producer::new(client, config).expect("producer");
        // The producer id and the topic's partitions are known before the broker stops.
        producer
            .send(record(0))
            .await
            .expect("send")
            .await
            .expect("delivered");

        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the broker");
        let stopped = Stopped(pid);
        let mut next = 1u64;
        loop {
            // Bounded: every accepted record holds at least its value's bytes of the buffer.
            assert!(
                next <= (BUFFER_BYTES / VALUE_BYTES) as u64 + 1,
                "send accepted {next} records of {VALUE_BYTES} bytes into a {BUFFER_BYTES}-byte buffer"
            );
            match tokio::time::timeout(BLOCKED_AFTER, producer.send(record(next))).await {
                Ok(sent) => {
                    drop(sent.expect("send"));
                    next += 1;
                }
                // The waiting send is dropped; its record is sent again below.
                Err(_) => break,
            }
        }
        let accepted = next - 1;
        drop(stopped);

        let total = next + AFTER;
        let mut last = None;
        for i in next..total {
            last = Some(
                producer
                    .send(record(i))
                    .await
                    .expect("send after the broker resumed"),
            );
        }
        producer.flush().await;
        let last = last
            .expect("records were sent")
            .await
            .expect("the last record is delivered");
        assert_eq!(last.offset(), Some(Offset::new(total as i64 - 1)));
        assert_eq!(producer.metrics().records_delivered(), total);
        assert_eq!(producer.metrics().records_failed(), 0);
        producer.close().await;
        (accepted, total)
    });
    assert!(
        accepted as usize * VALUE_BYTES >= BUFFER_BYTES / 3,
        "send waited after only {accepted} records: the buffer should fill first"
    );
    let (records, high_watermark) = read_partition(&mut raw, "bp", 0, 0);
    assert_eq!(high_watermark, total as i64);
    assert_eq!(records.len() as u64, total);
    for (i, stored) in records.iter().enumerate() {
        assert_eq!(stored.offset, i as i64);
        assert_eq!(
            stored.value.as_deref(),
            Some(&value(i as u64)[..]),
            "record at offset {i}"
        );
    }
}
