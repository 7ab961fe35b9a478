//! [`CleanerStatus`]: the log cleaner's view of one partition, as Metadata reports it.

use std::fmt;

use tidelog_proto::pb;

/// What the log cleaner is doing with a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanerState {
    Idle,
    Cleaning,
    /// The cleaner failed on this partition and skips it for a while (it keeps cleaning the
    /// others); [`CleanerStatus::error`] says why.
    Uncleanable,
}

impl fmt::Display for CleanerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanerState::Idle => "idle",
            CleanerState::Cleaning => "cleaning",
            CleanerState::Uncleanable => "uncleanable",
        })
    }
}

/// The log cleaner's view of one partition (compacted topics, or pending erasures).
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerStatus {
    pub(crate) state: CleanerState,
    pub(crate) error: Option<String>,
    pub(crate) dirty_bytes: u64,
    pub(crate) dirty_ratio: f64,
    pub(crate) last_cleaned_ms: Option<i64>,
    pub(crate) erasures_pending: u32,
}

impl CleanerStatus {
    pub fn state(&self) -> CleanerState {
        self.state
    }

    /// Why the partition is uncleanable.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Bytes of closed segments not cleaned since they were written.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Dirty bytes as a share of all closed bytes (0 to 1).
    pub fn dirty_ratio(&self) -> f64 {
        self.dirty_ratio
    }

    /// When the last clean finished (ms since the epoch); `None`: never since the broker
    /// started.
    pub fn last_cleaned_ms(&self) -> Option<i64> {
        self.last_cleaned_ms
    }

    /// Stream erasures not yet complete on the partition.
    pub fn erasures_pending(&self) -> u32 {
        self.erasures_pending
    }

    pub(crate) fn from_wire(status: pb::CleanerStatus) -> Option<Self> {
        let state = match status.state.as_str() {
            "idle" => CleanerState::Idle,
            "cleaning" => CleanerState::Cleaning,
            "uncleanable" => CleanerState::Uncleanable,
            // "": nothing for the cleaner to do (a topic that neither compacts nor erases).
            _ => return None,
        };
        Some(Self {
            state,
            error: (!status.error.is_empty()).then_some(status.error),
            dirty_bytes: status.dirty_bytes,
            dirty_ratio: status.dirty_ratio,
            last_cleaned_ms: (status.last_cleaned_ms > 0).then_some(status.last_cleaned_ms),
            erasures_pending: status.erasures_pending,
        })
    }
}

impl fmt::Display for CleanerStatus {
    /// `idle (dirty 0.42)`, `cleaning (dirty 0.80)`, `uncleanable: <error> (dirty 0.10)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.state)?;
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        write!(f, " (dirty {:.2}", self.dirty_ratio)?;
        if self.erasures_pending > 0 {
            write!(f, ", {} erasures pending", self.erasures_pending)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_status_maps_to_a_state_and_prints_as_the_describe_column() {
        assert_eq!(CleanerStatus::from_wire(pb::CleanerStatus::default()), None);
        let status = CleanerStatus::from_wire(pb::CleanerStatus {
            state: "uncleanable".into(),
            error: "cannot read segment 0: permission denied".into(),
            dirty_bytes: 10,
            dirty_ratio: 0.5,
            last_cleaned_ms: 0,
            erasures_pending: 2,
        })
        .unwrap();
        assert_eq!(status.state(), CleanerState::Uncleanable);
        assert_eq!(status.last_cleaned_ms(), None);
        assert_eq!(
            status.to_string(),
            "uncleanable: cannot read segment 0: permission denied (dirty 0.50, 2 erasures pending)"
        );
        let idle = CleanerStatus::from_wire(pb::CleanerStatus {
            state: "idle".into(),
            last_cleaned_ms: 5,
            dirty_ratio: 0.125,
            ..pb::CleanerStatus::default()
        })
        .unwrap();
        assert_eq!(idle.to_string(), "idle (dirty 0.12)");
        assert_eq!(idle.last_cleaned_ms(), Some(5));
    }
}
