//! File descriptors as a managed resource. At start the soft `RLIMIT_NOFILE` is raised to the
//! hard limit and split into shares: one descriptor per allowed connection
//! (`limits.connections_max`), a fixed reserve for everything else the process opens
//! (`limits.descriptors_reserved`), and the rest for segment files. Of the segment files' share,
//! each partition keeps one descriptor (its active segment's data file) and the broker-wide file
//! cache (`storage::FileCache`) gets what is left, never less than
//! `limits.open_segment_files_min`. So a partition count that cannot fit is refused when a topic
//! is created, instead of surfacing as EMFILE in the middle of an append.
//!
//! The budget is per process: one broker per process (as `tidelogd` runs it) is what it models.

use std::sync::Arc;

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use crate::config::Limits;
use crate::error::{BrokerError, TopicError};
use crate::storage::{Disk, FileCache, FileCacheLimits, OsDisk};

/// Descriptors each partition keeps open for as long as it exists: its active segment's data
/// file. Everything else of a partition is opened on demand through the file cache.
pub const DESCRIPTORS_PER_PARTITION: usize = 1;

/// Used when the hard limit is "unlimited": Linux never grants more descriptors than its
/// `fs.nr_open` default of 2^20 anyway.
const UNLIMITED_DESCRIPTORS: u64 = 1 << 20;

/// How the process's descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft `RLIMIT_NOFILE` the broker runs with.
    pub limit: u64,
    /// The soft limit before the broker raised it, when it did.
    pub raised_from: Option<u64>,
    /// Kept for connections (`limits.connections_max`).
    pub connections: usize,
    /// Kept for everything else (`limits.descriptors_reserved`).
    pub reserved: usize,
    /// Left for segment files: kept-open active data files plus the file cache.
    pub segment_files: usize,
    /// Partitions that fit: the segment files' share minus the file cache's minimum.
    pub partitions: usize,
}

impl DescriptorBudget {
    /// Shares out `limit` descriptors.
    ///
    /// # Errors
    /// `Config` when the limit cannot hold the connections, the reserve and the file cache's
    /// minimum, with what to change.
    pub fn from_limit(limit: u64, raised_from: Option<u64>, limits: &Limits) -> Result<Self, BrokerError> {
        let available = usize::try_from(limit).unwrap_or(usize::MAX);
        let fixed = limits
            .connections_max
            .saturating_add(limits.descriptors_reserved)
            .saturating_add(limits.open_segment_files_min);
        if available <= fixed {
            return Err(BrokerError::Config(format!(
                "the file descriptor limit (RLIMIT_NOFILE) is {limit}, which leaves no room for partitions after \
                 limits.connections_max ({}) + limits.descriptors_reserved ({}) + limits.open_segment_files_min ({}); \
                 raise the limit (ulimit -n) or lower those settings",
                limits.connections_max, limits.descriptors_reserved, limits.open_segment_files_min
            )));
        }
        let segment_files = available - limits.connections_max - limits.descriptors_reserved;
        Ok(Self {
            limit,
            raised_from,
            connections: limits.connections_max,
            reserved: limits.descriptors_reserved,
            segment_files,
            partitions: (segment_files - limits.open_segment_files_min) / DESCRIPTORS_PER_PARTITION,
        })
    }

    /// The file cache's bounds under this budget.
    pub fn cache_limits(&self, limits: &Limits) -> FileCacheLimits {
        FileCacheLimits {
            descriptors_max: self.segment_files,
            open_files_max: limits.open_segment_files_max.unwrap_or(usize::MAX),
            open_files_min: limits.open_segment_files_min,
            segment_files_max: limits.segment_files_max,
        }
    }

    /// Whether `requested` more partitions fit beside `existing` ones, under
    /// `limits.partitions_max` and this budget.
    ///
    /// # Errors
    /// `TooManyPartitions` or `DescriptorBudget`, saying which bound and by how much.
    pub fn check_partitions(
        &self,
        limits: &Limits,
        existing: usize,
        requested: usize,
    ) -> Result<(), TopicError> {
        let total = existing.saturating_add(requested);
        if total > limits.partitions_max {
            return Err(TopicError::TooManyPartitions {
                requested,
                existing,
                max: limits.partitions_max,
            });
        }
        if total > self.partitions {
            return Err(TopicError::DescriptorBudget {
                requested,
                existing,
                fit: self.partitions,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force after
/// the attempt and the one before it when it changed. A refusal is logged and the old limit
/// kept: the budget then works with what there is.
pub fn raise_descriptor_limit() -> (u64, Option<u64>) {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read RLIMIT_NOFILE; assuming 1024 file descriptors");
            return (1024, None);
        }
    };
    let target = if hard == RLIM_INFINITY {
        UNLIMITED_DESCRIPTORS
    } else {
        hard
    };
    if soft != RLIM_INFINITY && soft >= target {
        return (soft, None);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => (target, Some(soft)),
        Err(error) => {
            tracing::warn!(%error, soft, hard, "cannot raise the soft RLIMIT_NOFILE to the hard limit; keeping it");
            (soft, None)
        }
    }
}

/// What the broker's storage shares: the descriptor budget and the file cache every
/// partition opens its files through.
#[derive(Debug, Clone)]
pub struct StorageResources {
    pub budget: DescriptorBudget,
    pub file_cache: Arc<FileCache>,
    /// The cache's disk, handed to every partition log.
    pub disk: Arc<dyn Disk>,
}

impl StorageResources {
    /// Raises the descriptor limit, computes the budget, logs it at INFO and builds the cache.
    ///
    /// # Errors
    /// `Config` when the descriptor limit is too small for the configured reserves.
    pub fn start(limits: &Limits) -> Result<Self, BrokerError> {
        let (limit, raised_from) = raise_descriptor_limit();
        let budget = DescriptorBudget::from_limit(limit, raised_from, limits)?;
        let cache_limits = budget.cache_limits(limits);
        tracing::info!(
            limit,
            raised_from = ?raised_from,
            connections = budget.connections,
            reserved = budget.reserved,
            segment_files = budget.segment_files,
            partitions_fit = budget.partitions,
            partitions_max = limits.partitions_max,
            open_segment_files_max = ?limits.open_segment_files_max,
            open_segment_files_min = limits.open_segment_files_min,
            "file descriptor budget"
        );
        let file_cache = FileCache::new(Arc::new(OsDisk), cache_limits);
        let disk = file_cache.disk();
        Ok(Self {
            budget,
            file_cache,
            disk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_fit_ten_thousand_partitions_in_twenty_thousand_descriptors() {
        let limits = Limits::default();
        let budget = DescriptorBudget::from_limit(20_000, None, &limits).unwrap();
        assert_eq!(
            budget.segment_files,
            20_000 - limits.connections_max - limits.descriptors_reserved
        );
        assert!(budget.partitions >= 10_000, "{budget:?}");
        budget.check_partitions(&limits, 0, 10_000).unwrap();
        budget
            .check_partitions(&limits, 10_000, budget.partitions - 10_000)
            .unwrap();
        let refused = budget
            .check_partitions(&limits, 10_000, budget.partitions - 10_000 + 1)
            .unwrap_err();
        assert!(
            matches!(refused, TopicError::DescriptorBudget { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("RLIMIT_NOFILE 20000"), "{refused}");
    }

    #[test]
    fn partitions_max_bounds_the_broker_whatever_the_budget() {
        let limits = Limits {
            partitions_max: 100,
            ..Limits::default()
        };
        let budget = DescriptorBudget::from_limit(1 << 20, None, &limits).unwrap();
        budget.check_partitions(&limits, 60, 40).unwrap();
        let refused = budget.check_partitions(&limits, 60, 41).unwrap_err();
        assert!(
            matches!(refused, TopicError::TooManyPartitions { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("limits.partitions_max"), "{refused}");
    }

    #[test]
    fn a_limit_too_small_for_the_reserves_is_a_clear_config_error() {
        let error = DescriptorBudget::from_limit(1_024, None, &Limits::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("RLIMIT_NOFILE) is 1024"), "{text}");
        assert!(text.contains("limits.connections_max (4096)"), "{text}");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (limit, _) = raise_descriptor_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, limit);
        if hard != RLIM_INFINITY {
            assert_eq!(soft, hard);
        }
    }
}
