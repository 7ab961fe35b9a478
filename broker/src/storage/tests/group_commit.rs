//! Group commit under `FlushPolicy::Always`: concurrent appenders share fdatasyncs.

use std::sync::Arc;
use std::time::Duration;

use super::super::sim_disk::SimDisk;
use super::super::{FlushPolicy, PartitionLog, SyncOn};
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

/// Polls (yielding, never sleeping) until the disk has seen a blocking operation begin: a
/// sync's start, since the log was opened before recording began. Bounded by `within`.
async fn until_a_sync_starts(disk: &SimDisk, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if !disk.blocking_threads().is_empty() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_sync_in_place_hands_the_workers_other_tasks_to_another_thread() {
    // One worker: if the in-place sync held it, no other task could run until the sync ends.
    let disk = SimDisk::with_sync_delay(Duration::from_millis(1500));
    let log = Arc::new(sim_open(&disk, config(FlushPolicy::Always)));
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    disk.record_blocking_threads();
    let leader = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            log.wait_durable_on(outcome.last_offset + 1, SyncOn::CallerThread)
                .await
        })
    };
    let other = {
        let disk = disk.clone();
        tokio::spawn(async move { until_a_sync_starts(&disk, Duration::from_secs(10)).await })
    };
    assert!(other.await.unwrap(), "the sync never started");
    assert!(
        !leader.is_finished(),
        "another task ran only after the in-place sync had ended"
    );
    leader.await.unwrap().expect("durable");
    assert_eq!(log.high_watermark(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_waiter_syncs_on_its_own_thread_and_others_on_the_pool() {
    let disk = SimDisk::new();
    let log = Arc::new(sim_open(&disk, config(FlushPolicy::Always)));
    for (round, sync_on) in [SyncOn::CallerThread, SyncOn::BlockingPool]
        .into_iter()
        .enumerate()
    {
        let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
        disk.record_blocking_threads();
        let log = Arc::clone(&log);
        let (waiter, result) = tokio::spawn(async move {
            let waiter = std::thread::current().id();
            (
                waiter,
                log.wait_durable_on(outcome.last_offset + 1, sync_on).await,
            )
        })
        .await
        .unwrap();
        result.expect("durable");
        let syncs = disk.blocking_threads();
        assert!(!syncs.is_empty(), "round {round}: no sync ran");
        let on_waiter = syncs.iter().filter(|thread| **thread == waiter).count();
        match sync_on {
            SyncOn::CallerThread => assert_eq!(on_waiter, syncs.len(), "{sync_on:?}: {syncs:?}"),
            SyncOn::BlockingPool => assert_eq!(on_waiter, 0, "{sync_on:?}: {syncs:?}"),
        }
    }
    assert_eq!(log.high_watermark(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_in_place_fails_the_leader_and_every_follower() {
    let disk = SimDisk::with_sync_delay(Duration::from_millis(300));
    let log = Arc::new(sim_open(&disk, config(FlushPolicy::Always)));
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    disk.fail_syncs(true);
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                log.wait_durable_on(outcome.last_offset + 1, SyncOn::CallerThread)
                    .await
            })
        })
        .collect();
    for waiter in waiters {
        let result = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("every waiter is answered")
            .unwrap();
        assert!(result.is_err(), "a waiter was told a failed sync succeeded");
    }
    assert_eq!(log.high_watermark(), 0, "data whose fsync failed is never shown");
}

#[tokio::test]
async fn on_a_current_thread_runtime_an_in_place_sync_runs_on_the_pool() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Always));
    let outcome = log.append(&[simple_batch(1, 0, 1)], 0).unwrap();
    disk.record_blocking_threads();
    log.wait_durable_on(outcome.last_offset + 1, SyncOn::CallerThread)
        .await
        .expect("durable");
    let syncs = disk.blocking_threads();
    let here = std::thread::current().id();
    assert!(!syncs.is_empty());
    assert!(syncs.iter().all(|thread| *thread != here), "{syncs:?}");
}
