//! [`TopicConfig`]: a topic's settings by field and by Kafka name, as a create sends them and
//! a describe shows them.

use std::fmt;

use tidelog_proto::pb;

use crate::error::{Error, Result};

/// A topic's settings. Unset values inherit the broker's defaults; a described topic shows its
/// effective values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicConfig {
    pub(crate) retention_ms: Option<i64>,
    pub(crate) retention_bytes: Option<i64>,
    pub(crate) segment_bytes: Option<u64>,
    pub(crate) segment_ms: Option<i64>,
    pub(crate) flush: Option<String>,
    pub(crate) index_interval_bytes: Option<u32>,
    pub(crate) cleanup_policy: Option<String>,
    pub(crate) min_cleanable_dirty_ratio: Option<f64>,
    pub(crate) min_compaction_lag_ms: Option<i64>,
    pub(crate) max_compaction_lag_ms: Option<i64>,
    pub(crate) delete_retention_ms: Option<i64>,
}

/// The config names [`NewTopic::config`] takes: the ones `tidelog topic alter --config` and
/// Kafka's admin APIs use.
pub const TOPIC_CONFIG_NAMES: [&str; 11] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "tidelog.flush.policy",
    "cleanup.policy",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
];

impl TopicConfig {
    /// How long records are kept, in ms; -1 keeps them forever.
    pub fn retention_ms(&self) -> Option<i64> {
        self.retention_ms
    }

    /// Per-partition size limit in bytes; -1 means none.
    pub fn retention_bytes(&self) -> Option<i64> {
        self.retention_bytes
    }

    pub fn segment_bytes(&self) -> Option<u64> {
        self.segment_bytes
    }

    pub fn segment_ms(&self) -> Option<i64> {
        self.segment_ms
    }

    /// `always`, `interval:<ms>` or `never`.
    pub fn flush(&self) -> Option<&str> {
        self.flush.as_deref()
    }

    pub fn index_interval_bytes(&self) -> Option<u32> {
        self.index_interval_bytes
    }

    /// `delete`, `compact` or `compact,delete` (Kafka's `cleanup.policy`).
    pub fn cleanup_policy(&self) -> Option<&str> {
        self.cleanup_policy.as_deref()
    }

    /// Compact once this share of the closed bytes is not yet cleaned (0 to 1).
    pub fn min_cleanable_dirty_ratio(&self) -> Option<f64> {
        self.min_cleanable_dirty_ratio
    }

    /// A record stays uncompacted at least this long, in ms.
    pub fn min_compaction_lag_ms(&self) -> Option<i64> {
        self.min_compaction_lag_ms
    }

    /// A log dirty for longer than this (ms) is compacted whatever its dirty ratio.
    pub fn max_compaction_lag_ms(&self) -> Option<i64> {
        self.max_compaction_lag_ms
    }

    /// How long a tombstone outlives the clean that first saw it, in ms.
    pub fn delete_retention_ms(&self) -> Option<i64> {
        self.delete_retention_ms
    }

    /// Sets one setting by its Kafka name, the value in text as `--config NAME=VALUE` gives it.
    /// Only the name and the value's type are checked here; the broker judges the value.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown name or a value of the wrong type.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<Option<T>>
        where
            T::Err: fmt::Display,
        {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|error| Error::Config(format!("{name}={value:?}: {error}")))
        }
        match name {
            "retention.ms" => self.retention_ms = parse(name, value)?,
            "retention.bytes" => self.retention_bytes = parse(name, value)?,
            "segment.bytes" => self.segment_bytes = parse(name, value)?,
            "segment.ms" => self.segment_ms = parse(name, value)?,
            "index.interval.bytes" => self.index_interval_bytes = parse(name, value)?,
            "tidelog.flush.policy" => self.flush = Some(value.trim().to_owned()),
            "cleanup.policy" => self.cleanup_policy = Some(value.trim().to_owned()),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio = parse(name, value)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse(name, value)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse(name, value)?,
            "delete.retention.ms" => self.delete_retention_ms = parse(name, value)?,
            other => {
                return Err(Error::Config(format!(
                    "unknown topic config {other:?}; known: {}",
                    TOPIC_CONFIG_NAMES.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Name and value of every set entry, for display.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut entries = Vec::new();
        let mut add = |name, value: Option<String>| {
            if let Some(value) = value {
                entries.push((name, value));
            }
        };
        add("retention.ms", self.retention_ms.map(|v| v.to_string()));
        add("retention.bytes", self.retention_bytes.map(|v| v.to_string()));
        add("segment.bytes", self.segment_bytes.map(|v| v.to_string()));
        add("segment.ms", self.segment_ms.map(|v| v.to_string()));
        // The name `tidelog topic alter --config` and Kafka's DescribeConfigs use.
        add("tidelog.flush.policy", self.flush.clone());
        add(
            "index.interval.bytes",
            self.index_interval_bytes.map(|v| v.to_string()),
        );
        add("cleanup.policy", self.cleanup_policy.clone());
        add(
            "min.cleanable.dirty.ratio",
            self.min_cleanable_dirty_ratio.map(|v| v.to_string()),
        );
        add(
            "min.compaction.lag.ms",
            self.min_compaction_lag_ms.map(|v| v.to_string()),
        );
        add(
            "max.compaction.lag.ms",
            self.max_compaction_lag_ms.map(|v| v.to_string()),
        );
        add(
            "delete.retention.ms",
            self.delete_retention_ms.map(|v| v.to_string()),
        );
        entries
    }

    pub(crate) fn to_wire(&self) -> pb::TopicConfig {
        pb::TopicConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            flush: self.flush.clone(),
            index_interval_bytes: self.index_interval_bytes,
            cleanup_policy: self.cleanup_policy.clone(),
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            max_compaction_lag_ms: self.max_compaction_lag_ms,
            delete_retention_ms: self.delete_retention_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_setting_can_be_set_by_its_kafka_name_and_is_shown_back() {
        let mut config = TopicConfig::default();
        for (name, value) in [
            ("retention.ms", "60000"),
            ("retention.bytes", "-1"),
            ("segment.bytes", "1048576"),
            ("segment.ms", "3600000"),
            ("index.interval.bytes", "512"),
            ("tidelog.flush.policy", "never"),
            ("cleanup.policy", "compact,delete"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "20"),
            ("delete.retention.ms", "0"),
        ] {
            config.set(name, value).unwrap();
        }
        assert_eq!(config.cleanup_policy(), Some("compact,delete"));
        assert_eq!(config.min_cleanable_dirty_ratio(), Some(0.25));
        assert_eq!(config.delete_retention_ms(), Some(0));
        let names: Vec<&str> = config.entries().iter().map(|(name, _)| *name).collect();
        let mut expected = TOPIC_CONFIG_NAMES.to_vec();
        expected.sort_unstable();
        let mut shown = names.clone();
        shown.sort_unstable();
        assert_eq!(shown, expected, "every settable name is shown");
        let wire = config.to_wire();
        assert_eq!(wire.cleanup_policy.as_deref(), Some("compact,delete"));
        assert_eq!(wire.max_compaction_lag_ms, Some(20));
    }

    #[test]
    fn unknown_names_and_mistyped_values_are_refused_before_the_broker() {
        let mut config = TopicConfig::default();
        assert!(matches!(config.set("retention.msec", "1"), Err(Error::Config(_))));
        assert!(matches!(
            config.set("min.cleanable.dirty.ratio", "half"),
            Err(Error::Config(_))
        ));
        assert!(matches!(config.set("segment.bytes", "-1"), Err(Error::Config(_))));
        assert_eq!(config, TopicConfig::default());
    }
}
