//! Runs independent blocking jobs (opening or closing partitions) on a bounded number of
//! threads. Partition opens and closes are dominated by fsync waits, not CPU, so a handful of
//! threads overlap them even on two cores; the bound keeps 10,000 partitions from meaning
//! 10,000 threads.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Applies `work` to every item on at most `threads` threads; results come back in the
/// items' order. If no thread can be spawned the work runs on the calling thread.
pub(crate) fn map_bounded<T, R, F>(items: &[T], threads: usize, work: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&work).collect();
    }
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        // Bounded: each pass claims a distinct index below items.len().
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                return done;
            };
            done.push((index, work(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .filter_map(|number| {
                std::thread::Builder::new()
                    .name(format!("partition-io-{number}"))
                    .spawn_scoped(scope, worker)
                    .map_err(|error| tracing::warn!(%error, "could not start a partition I/O thread"))
                    .ok()
            })
            .collect();
        // Whatever the spawned threads leave (all of it, when none could start) runs here.
        let mut results = worker();
        for handle in handles {
            match handle.join() {
                Ok(done) => results.extend(done),
                // A panic in `work` is a bug; carry it to the caller as std::thread::scope would.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_and_every_item_runs_once() {
        let items: Vec<u64> = (0..1_000).collect();
        for threads in [0, 1, 3, 64] {
            let doubled = map_bounded(&items, threads, |item| item * 2);
            assert_eq!(doubled, items.iter().map(|item| item * 2).collect::<Vec<_>>());
        }
        assert!(map_bounded(&Vec::<u64>::new(), 4, |item| *item).is_empty());
    }
}
