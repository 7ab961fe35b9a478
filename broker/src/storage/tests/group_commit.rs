//! Group commit under `FlushPolicy::Always`: concurrent appenders share fdatasyncs.

use std::sync::Arc;
use std::time::Duration;

use super::super::sim_disk::SimDisk;
use super::super::{FlushPolicy, PartitionLog};
use super::{config, read_all, sim_open, simple_batch};

const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 40;

async fn run_appenders(log: Arc<PartitionLog>) {
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for round in 0..APPENDS_EACH {
                let batch = simple_batch(2, (appender * 1000 + round) as i64, 64);
                let outcome = log.append(&[batch], 0).unwrap();
                log.wait_durable(outcome.last_offset + 1).await.unwrap();
                // Acknowledged means visible.
                assert!(log.high_watermark() > outcome.last_offset);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_fsyncs_on_a_slow_disk() {
    // Each fdatasync takes 2 ms, as on a real SSD: appenders arriving meanwhile must join the
    // next sync rather than each paying for their own.
    let disk = SimDisk::with_sync_delay(Duration::from_millis(2));
    let log = Arc::new(sim_open(&disk, config(FlushPolicy::Always)));
    let syncs_before = log.log_sync_count();
    run_appenders(Arc::clone(&log)).await;
    let appends = (APPENDERS * APPENDS_EACH) as u64;
    let syncs = log.log_sync_count() - syncs_before;
    eprintln!("{appends} appends, {syncs} data-file fdatasyncs");
    assert!(
        syncs * 3 <= appends,
        "{syncs} fsyncs for {appends} appends: no group commit"
    );
    assert_eq!(log.high_watermark(), appends as i64 * 2);
    assert_eq!(
        read_all(&log, 1 << 20).len(),
        appends as usize * simple_batch(2, 0, 64).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_fsyncs_on_the_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config(FlushPolicy::Always)).unwrap());
    let syncs_before = log.log_sync_count();
    run_appenders(Arc::clone(&log)).await;
    let appends = (APPENDERS * APPENDS_EACH) as u64;
    let syncs = log.log_sync_count() - syncs_before;
    eprintln!("real disk: {appends} appends, {syncs} data-file fdatasyncs");
    assert!(syncs < appends, "{syncs} fsyncs for {appends} appends");
    assert_eq!(log.high_watermark(), appends as i64 * 2);
}

#[tokio::test]
async fn a_dropped_waiter_does_not_strand_the_others() {
    let disk = SimDisk::with_sync_delay(Duration::from_millis(5));
    let log = Arc::new(sim_open(&disk, config(FlushPolicy::Always)));
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    // Start a leader and drop it mid-sync.
    {
        let waiting = log.wait_durable(outcome.last_offset + 1);
        tokio::pin!(waiting);
        let polled = futures::poll!(waiting.as_mut());
        assert!(polled.is_pending());
    }
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    tokio::time::timeout(Duration::from_secs(10), log.wait_durable(outcome.last_offset + 1))
        .await
        .expect("waiter finishes")
        .unwrap();
    assert_eq!(log.high_watermark(), 2);
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_log() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Always));
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    disk.fail_syncs(true);
    assert!(log.wait_durable(outcome.last_offset + 1).await.is_err());
    assert_eq!(log.high_watermark(), 0, "data whose fsync failed is never shown");
    disk.fail_syncs(false);
    assert!(matches!(
        log.append(&[simple_batch(1, 0, 1)], 0),
        Err(super::super::StorageError::Poisoned { .. })
    ));
}
