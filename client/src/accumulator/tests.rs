//! Tests of the accumulator: batching, partitioning, buffer budget and completion.

use super::*;
use crate::error::Error;
use crate::types::Offset;
use rand::SeedableRng;
use tidelog_proto::batch::RecordBatch;

fn accumulator(batch_size_bytes: usize, linger_ms: u64) -> Accumulator {
    let mut acc = Accumulator::new(
        BatchLimits {
            batch_size_bytes,
            linger: Duration::from_millis(linger_ms),
        },
        StdRng::seed_from_u64(7),
    );
    acc.set_partition_count(&TopicName::new("t"), 4);
    acc
}

fn append(acc: &mut Accumulator, record: ProducerRecord, now: Instant) -> DeliveryFuture {
    match acc.append(&record, 10, 1_000, || now, Reserve::Held, Track::Future) {
        Appended::Done {
            batch: Some(batch),
            index,
            ..
        } => DeliveryFuture { batch, index },
        other => panic!("metadata is known and the bytes held: {other:?}"),
    }
}

fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

#[test]
fn unknown_topic_asks_for_metadata() {
    let mut acc = accumulator(1024, 5);
    let record = ProducerRecord::new("other", value(1));
    assert!(matches!(
        acc.append(&record, 1, 0, Instant::now, Reserve::Held, Track::Future),
        Appended::NeedMetadata
    ));
}

#[test]
fn explicit_partition_out_of_range_is_an_error() {
    let mut acc = accumulator(1024, 5);
    let record = ProducerRecord::new("t", value(1)).partition(PartitionId::new(4));
    assert!(matches!(
        acc.append(&record, 1, 0, Instant::now, Reserve::Held, Track::Future),
        Appended::NoSuchPartition(partition) if partition.get() == 4
    ));
}

#[test]
fn records_batch_until_the_size_limit_then_a_new_batch_starts() {
    let mut acc = accumulator(1000, 1_000);
    let now = Instant::now();
    let p0 = PartitionId::new(0);
    for _ in 0..20 {
        drop(append(
            &mut acc,
            ProducerRecord::new("t", value(100)).partition(p0),
            now,
        ));
    }
    let (ready, next) = acc.drain(now);
    assert!(next.is_some(), "the last batch is still open");
    assert!(!ready.is_empty());
    let mut total = 0;
    for batch in &ready {
        assert!(
            batch.records.len() <= 1000,
            "batch of {} bytes",
            batch.records.len()
        );
        let (parsed, _) = RecordBatch::split_first(&batch.records).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.header().record_count as usize, batch.record_count);
        total += batch.record_count;
    }
    acc.seal_all();
    let (rest, _) = acc.drain(now);
    total += rest.iter().map(|b| b.record_count).sum::<usize>();
    assert_eq!(total, 20);
}

#[test]
fn open_batch_is_sent_only_after_its_linger() {
    let mut acc = accumulator(1 << 20, 5);
    let start = Instant::now();
    drop(append(
        &mut acc,
        ProducerRecord::new("t", value(10)).partition(PartitionId::new(1)),
        start,
    ));
    let (ready, next) = acc.drain(start + Duration::from_millis(4));
    assert!(ready.is_empty());
    assert_eq!(next, Some(start + Duration::from_millis(5)));
    let (ready, next) = acc.drain(start + Duration::from_millis(5));
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].partition, PartitionId::new(1));
    assert_eq!(next, None);
    assert!(!acc.has_open_or_ready());
}

#[test]
fn keyed_records_follow_murmur2() {
    let mut acc = accumulator(1 << 20, 5);
    for key in ["a", "b", "foobar", "21", "kafka"] {
        let delivery = append(
            &mut acc,
            ProducerRecord::new("t", value(1)).key(key),
            Instant::now(),
        );
        assert_eq!(delivery.partition().get(), partition_for_key(key.as_bytes(), 4));
    }
}

#[test]
fn keyless_records_stick_to_a_partition_until_its_batch_is_sealed() {
    let mut acc = accumulator(1 << 20, 5);
    let now = Instant::now();
    let first = append(&mut acc, ProducerRecord::new("t", value(1)), now).partition();
    for _ in 0..50 {
        assert_eq!(
            append(&mut acc, ProducerRecord::new("t", value(1)), now).partition(),
            first
        );
    }
    let (ready, _) = acc.drain(now + Duration::from_millis(5));
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].record_count, 51);
    let second = append(&mut acc, ProducerRecord::new("t", value(1)), now).partition();
    assert_ne!(
        second, first,
        "a new batch moves keyless records to another partition"
    );
}

#[test]
fn full_keyless_batch_moves_on_to_another_partition() {
    let mut acc = accumulator(1000, 1_000);
    let now = Instant::now();
    let first = append(&mut acc, ProducerRecord::new("t", value(300)), now).partition();
    let mut moved = None;
    for _ in 0..5 {
        let partition = append(&mut acc, ProducerRecord::new("t", value(300)), now).partition();
        if partition != first {
            moved = Some(partition);
            break;
        }
    }
    assert!(
        moved.is_some(),
        "the sticky partition changes once its batch is full"
    );
}

#[tokio::test]
async fn delivery_futures_resolve_to_base_offset_plus_index() {
    let mut acc = accumulator(1 << 20, 0);
    let now = Instant::now();
    let p2 = PartitionId::new(2);
    let futures: Vec<DeliveryFuture> = (0..3)
        .map(|_| append(&mut acc, ProducerRecord::new("t", value(5)).partition(p2), now))
        .collect();
    let (ready, _) = acc.drain(now);
    assert_eq!(ready.len(), 1);
    ready[0].complete(Ok(Some(Offset::new(40))));
    for (index, future) in futures.into_iter().enumerate() {
        let delivery = future.await.unwrap();
        assert_eq!(delivery.partition(), p2);
        assert_eq!(delivery.offset(), Some(Offset::new(40 + index as i64)));
    }
}

#[tokio::test]
async fn a_failed_batch_fails_every_record_with_the_shared_cause() {
    let mut acc = accumulator(1 << 20, 0);
    let now = Instant::now();
    let a = append(
        &mut acc,
        ProducerRecord::new("t", value(5)).partition(PartitionId::new(0)),
        now,
    );
    let b = append(
        &mut acc,
        ProducerRecord::new("t", value(5)).partition(PartitionId::new(0)),
        now,
    );
    let (ready, _) = acc.drain(now);
    let waiting = tokio::spawn(b);
    ready[0].complete(Err(Arc::new(Error::ProducerClosed)));
    // A second completion is ignored: a batch completes once.
    ready[0].complete(Ok(Some(Offset::new(1))));
    for result in [a.await, waiting.await.unwrap()] {
        match result {
            Err(Error::Delivery { source, .. }) => assert!(matches!(*source, Error::ProducerClosed)),
            other => panic!("expected a delivery error, got {other:?}"),
        }
    }
}

/// Appends with `Reserve::Take`, counting what is taken from a budget of `budget` bytes.
struct Budget {
    left: usize,
    taken: usize,
    takes: usize,
}

impl Budget {
    fn append(&mut self, acc: &mut Accumulator, record: &ProducerRecord, reserved: usize) -> Appended {
        let mut take = |bytes: usize| {
            self.takes += 1;
            if bytes > self.left {
                return false;
            }
            self.left -= bytes;
            self.taken += bytes;
            true
        };
        acc.append(
            record,
            reserved,
            1_000,
            Instant::now,
            Reserve::Take(&mut take),
            Track::Future,
        )
    }
}

#[test]
fn batches_take_buffer_ahead_in_bounded_steps_and_release_exactly_what_they_took() {
    let mut acc = accumulator(64 * 1024, 1_000);
    let mut budget = Budget {
        left: usize::MAX,
        taken: 0,
        takes: 0,
    };
    let records = 20_000;
    for i in 0..records {
        let record = ProducerRecord::new("t", value(100)).partition(PartitionId::new(i % 2));
        assert!(matches!(
            budget.append(&mut acc, &record, 124),
            Appended::Done { .. }
        ));
    }
    acc.seal_all();
    let (ready, _) = acc.drain(Instant::now());
    let released: usize = ready.iter().map(|batch| batch.reserved_bytes).sum();
    assert_eq!(
        released, budget.taken,
        "every byte taken is released with a batch"
    );
    for batch in &ready {
        let used = batch.record_count * 124;
        let ahead = batch.reserved_bytes - used;
        assert!(
            ahead <= RESERVE_AHEAD_MAX_BYTES && ahead <= used / 2,
            "a batch of {used} bytes of records holds {ahead} more"
        );
    }
    assert!(
        budget.takes * 20 < records as usize,
        "{} takes for {records} records: the buffer should be taken many records at a time",
        budget.takes
    );
}

#[test]
fn a_full_buffer_leaves_no_empty_batch_and_still_hands_over_the_sealed_one() {
    let mut acc = accumulator(1000, 1_000);
    let mut budget = Budget {
        left: 0,
        taken: 0,
        takes: 0,
    };
    let p0 = PartitionId::new(0);
    let record = ProducerRecord::new("t", value(100)).partition(p0);
    assert!(matches!(
        budget.append(&mut acc, &record, 124),
        Appended::NeedBuffer { wake_sender: false }
    ));
    assert!(
        !acc.has_open_or_ready(),
        "no batch is opened without its record's bytes"
    );
    // Fill partition 0's batch with bytes the caller holds: a 100-byte keyless record takes
    // 109 bytes, so 61 + 8 * 109 = 933 fit in 1000 and a ninth overflows.
    for _ in 0..8 {
        drop(append(&mut acc, record.clone(), Instant::now()));
    }
    assert!(acc.drain(Instant::now()).0.is_empty(), "the batch is still open");
    assert!(matches!(
        budget.append(&mut acc, &record, 124),
        Appended::NeedBuffer { wake_sender: true }
    ));
    let (ready, _) = acc.drain(Instant::now());
    assert_eq!(ready.len(), 1, "the full batch was sealed for the sender");
    assert!(!acc.has_open_or_ready());
    // With room again, the record goes into a fresh batch.
    budget.left = 124;
    assert!(matches!(
        budget.append(&mut acc, &record, 124),
        Appended::Done { new_batch: true, .. }
    ));
    assert_eq!(budget.left, 0);
}

#[test]
fn records_keep_their_own_timestamps_within_a_batch() {
    let mut acc = accumulator(1 << 20, 1_000);
    let now = Instant::now();
    let p0 = PartitionId::new(0);
    let stamps = [
        1_700_000_000_000i64,
        1_700_000_000_007,
        1_700_000_000_003,
        1_700_000_123_456,
    ];
    for stamp in stamps {
        let record = ProducerRecord::new("t", value(10)).partition(p0);
        match acc.append(&record, 34, stamp, || now, Reserve::Held, Track::Future) {
            Appended::Done { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    acc.seal_all();
    let (ready, _) = acc.drain(now);
    let (batch, _) = RecordBatch::split_first(&ready[0].records).unwrap();
    batch.validate().unwrap();
    let found: Vec<i64> = batch.records().map(|r| r.unwrap().timestamp).collect();
    assert_eq!(found, stamps);
    assert_eq!(batch.header().max_timestamp, 1_700_000_123_456);
}

#[tokio::test]
async fn counted_records_share_the_batch_with_tracked_ones_and_get_their_offsets() {
    let mut acc = accumulator(1 << 20, 1_000);
    let now = Instant::now();
    let record = ProducerRecord::new("t", value(10)).partition(PartitionId::new(2));
    let mut deliveries = Vec::new();
    for i in 0..6 {
        let track = if i % 3 == 2 { Track::Future } else { Track::Count };
        match acc.append(&record, 34, 1_000, || now, Reserve::Held, track) {
            Appended::Done { batch, index, .. } => {
                assert_eq!(batch.is_some(), track == Track::Future);
                deliveries.extend(Appended::delivery(batch, index));
            }
            other => panic!("{other:?}"),
        }
    }
    acc.seal_all();
    let (ready, _) = acc.drain(now);
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].record_count, 6, "counted records are in the batch too");
    ready[0].complete(Ok(Some(Offset::new(100))));
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset());
    }
    assert_eq!(offsets, [Some(Offset::new(102)), Some(Offset::new(105))]);
}

#[test]
fn the_append_answer_fits_two_registers() {
    assert!(
        std::mem::size_of::<Appended>() <= 16,
        "Appended is {} bytes",
        std::mem::size_of::<Appended>()
    );
}
