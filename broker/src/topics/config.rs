//! Topic configuration by name: the Kafka config names a topic's settings go by (in Kafka's
//! admin APIs and `tidelog topic alter --config`), how a named change updates a topic's
//! overrides, the floors a client's settings must clear, and the effective configuration of a
//! topic or of the broker as named entries. Knows no wire format: front ends turn these
//! entries into their own responses.

use crate::config::{Limits, LogDefaults};
use crate::error::TopicError;
use crate::metadata::TopicOverrides;
use crate::storage::LogConfig;

/// What kind of value a config holds (Kafka's `ConfigType`, DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

/// Where an entry's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (create or alter).
    TopicOverride,
    /// The broker's configuration (its file or flags), the default of every topic.
    Broker,
    /// Fixed by what Tidelog is (`compression.type=producer`, ...): reported, never changed.
    Fixed,
}

/// One named setting with its value, as an admin client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub kind: ConfigKind,
    pub documentation: &'static str,
    /// For a topic entry: the broker setting it defaults to, and that setting's value (Kafka's
    /// synonyms).
    pub broker_default: Option<(&'static str, String)>,
}

/// A change to one setting of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Sets `name` to `value` (text, as Kafka sends every value).
    Set { name: String, value: String },
    /// Drops the topic's own value: the broker's default applies again.
    Unset { name: String },
}

/// The alterable settings: Kafka name, broker-wide name, kind, documentation.
const TOPIC_KEYS: [(&str, &str, ConfigKind, &str); 11] = [
    ("retention.ms", "log.retention.ms", ConfigKind::Long, "Delete closed segments whose newest record is older than this; -1 keeps them forever."),
    ("retention.bytes", "log.retention.bytes", ConfigKind::Long, "Delete the oldest closed segments while a partition is larger than this; -1: no size limit."),
    ("segment.bytes", "log.segment.bytes", ConfigKind::Int, "Roll a new segment when the active one would grow past this size."),
    ("segment.ms", "log.roll.ms", ConfigKind::Long, "Roll a new segment when the active one's first record is older than this."),
    ("index.interval.bytes", "log.index.interval.bytes", ConfigKind::Int, "Bytes of batches between two entries of the offset and time indexes."),
    (FLUSH_POLICY, "flush", ConfigKind::String, "Tidelog's flush policy: always (durable before acknowledged), interval:<ms> or never. Set at create; an open topic keeps its policy."),
    ("cleanup.policy", "log.cleanup.policy", ConfigKind::List, "delete: retention deletes closed segments; compact: the cleaner keeps the latest record of every key (keyless records are refused); compact,delete: both."),
    ("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", ConfigKind::Double, "Compact once the closed segments not yet cleaned are at least this share of all closed bytes (0 to 1)."),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", ConfigKind::Long, "A record stays uncompacted at least this long after it was written."),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", ConfigKind::Long, "A log whose oldest uncleaned record is older than this is compacted whatever its dirty ratio."),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms", ConfigKind::Long, "A tombstone is kept this long after the cleaner first sees it (its batch's delete horizon)."),
];

/// Tidelog's flush policy has no Kafka name (Kafka's flush.ms/flush.messages are counts and
/// intervals, not a durability contract); this one is ours.
pub const FLUSH_POLICY: &str = "tidelog.flush.policy";

/// Settings Tidelog reports with fixed values (clients and tools ask for them); a change to
/// the same value is accepted, any other refused.
fn fixed_entries(limits: &Limits) -> [(&'static str, String, ConfigKind, &'static str); 4] {
    [
        (
            "compression.type",
            "producer".into(),
            ConfigKind::String,
            "Batches are stored as the producer compressed them.",
        ),
        (
            "max.message.bytes",
            limits.batch_bytes_max.to_string(),
            ConfigKind::Int,
            "The largest record batch accepted (limits.batch_bytes_max).",
        ),
        (
            "message.timestamp.type",
            "CreateTime".into(),
            ConfigKind::String,
            "Records keep the producer's timestamps.",
        ),
        (
            "min.insync.replicas",
            "1".into(),
            ConfigKind::Int,
            "One broker, no replication yet.",
        ),
    ]
}

fn invalid(message: String) -> TopicError {
    TopicError::InvalidConfig(message)
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, TopicError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|error| invalid(format!("{name}={value:?} is not a valid value: {error}")))
}

/// Applies `change` to `overrides`. Only checks that the name is known and the value parses;
/// [`check`] and the registry's `log_config` judge the result.
pub fn apply(
    overrides: &mut TopicOverrides,
    change: &ConfigChange,
    limits: &Limits,
) -> Result<(), TopicError> {
    let (name, value) = match change {
        ConfigChange::Set { name, value } => (name.as_str(), Some(value.as_str())),
        ConfigChange::Unset { name } => (name.as_str(), None),
    };
    match name {
        "retention.ms" => overrides.retention_ms = value.map(|v| parse(name, v)).transpose()?,
        "retention.bytes" => overrides.retention_bytes = value.map(|v| parse(name, v)).transpose()?,
        "segment.bytes" => overrides.segment_bytes = value.map(|v| parse(name, v)).transpose()?,
        "segment.ms" => overrides.segment_ms = value.map(|v| parse(name, v)).transpose()?,
        "index.interval.bytes" => {
            overrides.index_interval_bytes = value.map(|v| parse(name, v)).transpose()?;
        }
        FLUSH_POLICY => {
            overrides.flush = value
                .map(|v| {
                    v.parse::<crate::storage::FlushPolicy>()
                        .map(|policy| policy.to_string())
                        .map_err(invalid)
                })
                .transpose()?;
        }
        "cleanup.policy" => {
            overrides.cleanup_policy = value
                .map(|v| {
                    v.parse::<crate::storage::CleanupPolicy>()
                        .map(|policy| policy.to_string())
                        .map_err(invalid)
                })
                .transpose()?;
        }
        "min.cleanable.dirty.ratio" => {
            overrides.min_cleanable_dirty_ratio = value.map(|v| parse(name, v)).transpose()?;
        }
        "min.compaction.lag.ms" => {
            overrides.min_compaction_lag_ms = value.map(|v| parse(name, v)).transpose()?;
        }
        "max.compaction.lag.ms" => {
            overrides.max_compaction_lag_ms = value.map(|v| parse(name, v)).transpose()?;
        }
        "delete.retention.ms" => {
            overrides.delete_retention_ms = value.map(|v| parse(name, v)).transpose()?;
        }
        other => {
            let fixed = fixed_entries(limits);
            match fixed.iter().find(|(fixed_name, ..)| *fixed_name == other) {
                // Unset, or set to what it is anyway: nothing changes.
                Some((_, fixed_value, ..)) if value.is_none_or(|v| v.trim() == fixed_value) => {}
                Some((_, fixed_value, ..)) => {
                    return Err(invalid(format!(
                        "{other} is fixed at {fixed_value:?} in Tidelog and cannot be changed"
                    )))
                }
                None => return Err(invalid(format!("unknown topic config {other:?}"))),
            }
        }
    }
    Ok(())
}

/// Overrides from `name = value` pairs (a create, or Kafka's AlterConfigs, which replaces a
/// topic's whole configuration). A pair without a value means the broker default.
pub fn from_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    limits: &Limits,
) -> Result<TopicOverrides, TopicError> {
    let mut overrides = TopicOverrides::default();
    for (name, value) in pairs {
        let change = match value {
            Some(value) => ConfigChange::Set {
                name: name.to_owned(),
                value: value.to_owned(),
            },
            None => ConfigChange::Unset {
                name: name.to_owned(),
            },
        };
        apply(&mut overrides, &change, limits)?;
    }
    Ok(overrides)
}

/// Refuses settings a client could use to make the broker roll a segment (three new files)
/// every few requests. Only what the client asks for is held to the floors: the broker's own
/// defaults are the operator's choice.
pub fn check_floors(overrides: &TopicOverrides, limits: &Limits) -> Result<(), TopicError> {
    if let Some(bytes) = overrides.segment_bytes {
        if bytes < limits.segment_bytes_min {
            return Err(invalid(format!(
                "segment_bytes {bytes} is below the broker's minimum of {} (limits.segment_bytes_min)",
                limits.segment_bytes_min
            )));
        }
    }
    if let Some(ms) = overrides.segment_ms {
        if ms < limits.segment_ms_min {
            return Err(invalid(format!(
                "segment_ms {ms} is below the broker's minimum of {} (limits.segment_ms_min)",
                limits.segment_ms_min
            )));
        }
    }
    Ok(())
}

/// The settings `after` sets differently from `before`: what a change asks for, held to the
/// floors (a topic whose old settings predate a raised floor can still change others).
pub fn changed(before: &TopicOverrides, after: &TopicOverrides) -> TopicOverrides {
    fn pick<T: PartialEq + Clone>(before: &Option<T>, after: &Option<T>) -> Option<T> {
        if before == after {
            None
        } else {
            after.clone()
        }
    }
    TopicOverrides {
        retention_ms: pick(&before.retention_ms, &after.retention_ms),
        retention_bytes: pick(&before.retention_bytes, &after.retention_bytes),
        segment_bytes: pick(&before.segment_bytes, &after.segment_bytes),
        segment_ms: pick(&before.segment_ms, &after.segment_ms),
        flush: pick(&before.flush, &after.flush),
        index_interval_bytes: pick(&before.index_interval_bytes, &after.index_interval_bytes),
        cleanup_policy: pick(&before.cleanup_policy, &after.cleanup_policy),
        min_cleanable_dirty_ratio: pick(
            &before.min_cleanable_dirty_ratio,
            &after.min_cleanable_dirty_ratio,
        ),
        min_compaction_lag_ms: pick(&before.min_compaction_lag_ms, &after.min_compaction_lag_ms),
        max_compaction_lag_ms: pick(&before.max_compaction_lag_ms, &after.max_compaction_lag_ms),
        delete_retention_ms: pick(&before.delete_retention_ms, &after.delete_retention_ms),
    }
}

/// A topic's effective configuration as named entries: its alterable settings, then the fixed
/// ones.
pub fn topic_entries(
    overrides: &TopicOverrides,
    effective: &LogConfig,
    defaults: &LogDefaults,
    broker_flush: crate::storage::FlushPolicy,
    limits: &Limits,
) -> Vec<ConfigEntry> {
    let values = [
        (
            overrides.retention_ms.is_some(),
            effective.retention_ms.to_string(),
            defaults.retention_ms.to_string(),
        ),
        (
            overrides.retention_bytes.is_some(),
            effective.retention_bytes.to_string(),
            defaults.retention_bytes.to_string(),
        ),
        (
            overrides.segment_bytes.is_some(),
            effective.segment_bytes.to_string(),
            defaults.segment_bytes.to_string(),
        ),
        (
            overrides.segment_ms.is_some(),
            effective.segment_ms.to_string(),
            defaults.segment_ms.to_string(),
        ),
        (
            overrides.index_interval_bytes.is_some(),
            effective.index_interval_bytes.to_string(),
            defaults.index_interval_bytes.to_string(),
        ),
        (
            overrides.flush.is_some(),
            effective.flush.to_string(),
            broker_flush.to_string(),
        ),
        (
            overrides.cleanup_policy.is_some(),
            effective.cleanup_policy.to_string(),
            defaults.cleanup_policy.to_string(),
        ),
        (
            overrides.min_cleanable_dirty_ratio.is_some(),
            effective.compaction.min_cleanable_dirty_ratio.to_string(),
            defaults.min_cleanable_dirty_ratio.to_string(),
        ),
        (
            overrides.min_compaction_lag_ms.is_some(),
            effective.compaction.min_compaction_lag_ms.to_string(),
            defaults.min_compaction_lag_ms.to_string(),
        ),
        (
            overrides.max_compaction_lag_ms.is_some(),
            effective.compaction.max_compaction_lag_ms.to_string(),
            defaults.max_compaction_lag_ms.to_string(),
        ),
        (
            overrides.delete_retention_ms.is_some(),
            effective.compaction.delete_retention_ms.to_string(),
            defaults.delete_retention_ms.to_string(),
        ),
    ];
    let mut entries: Vec<ConfigEntry> = TOPIC_KEYS
        .iter()
        .zip(values)
        .map(
            |((name, broker_name, kind, documentation), (overridden, value, default))| ConfigEntry {
                name,
                value,
                source: if overridden {
                    ConfigSource::TopicOverride
                } else {
                    ConfigSource::Broker
                },
                read_only: false,
                kind: *kind,
                documentation,
                broker_default: Some((broker_name, default)),
            },
        )
        .collect();
    entries.extend(fixed(limits));
    entries
}

/// The broker's settings that clients may ask about, all read-only at run time.
pub fn broker_entries(
    defaults: &LogDefaults,
    broker_flush: crate::storage::FlushPolicy,
    limits: &Limits,
    broker_id: u32,
    auto_create_topics: bool,
) -> Vec<ConfigEntry> {
    let entry = |name, value: String, kind, documentation| ConfigEntry {
        name,
        value,
        source: ConfigSource::Broker,
        read_only: true,
        kind,
        documentation,
        broker_default: None,
    };
    let mut entries: Vec<ConfigEntry> = TOPIC_KEYS
        .iter()
        .zip([
            defaults.retention_ms.to_string(),
            defaults.retention_bytes.to_string(),
            defaults.segment_bytes.to_string(),
            defaults.segment_ms.to_string(),
            defaults.index_interval_bytes.to_string(),
            broker_flush.to_string(),
            defaults.cleanup_policy.to_string(),
            defaults.min_cleanable_dirty_ratio.to_string(),
            defaults.min_compaction_lag_ms.to_string(),
            defaults.max_compaction_lag_ms.to_string(),
            defaults.delete_retention_ms.to_string(),
        ])
        .map(|((_, broker_name, kind, documentation), value)| {
            entry(*broker_name, value, *kind, *documentation)
        })
        .collect();
    entries.push(entry(
        "broker.id",
        broker_id.to_string(),
        ConfigKind::Int,
        "This broker's id.",
    ));
    entries.push(entry(
        "num.partitions",
        defaults.partitions.to_string(),
        ConfigKind::Int,
        "Partitions of a topic created without a count.",
    ));
    entries.push(entry(
        "auto.create.topics.enable",
        auto_create_topics.to_string(),
        ConfigKind::Boolean,
        "Whether Metadata (allow_auto_topic_creation) and Produce create unknown topics (auto_create_topics).",
    ));
    entries.push(entry(
        "message.max.bytes",
        limits.batch_bytes_max.to_string(),
        ConfigKind::Int,
        "The largest record batch accepted (limits.batch_bytes_max).",
    ));
    entries.push(entry(
        "default.replication.factor",
        "1".into(),
        ConfigKind::Int,
        "One broker, no replication yet.",
    ));
    entries
}

fn fixed(limits: &Limits) -> impl Iterator<Item = ConfigEntry> {
    fixed_entries(limits)
        .into_iter()
        .map(|(name, value, kind, documentation)| ConfigEntry {
            name,
            value,
            source: ConfigSource::Fixed,
            read_only: true,
            kind,
            documentation,
            broker_default: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> ConfigChange {
        ConfigChange::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn kafka_names_set_and_unset_the_overrides() {
        let limits = Limits::default();
        let mut overrides = TopicOverrides::default();
        for change in [
            set("retention.ms", "60000"),
            set("retention.bytes", "-1"),
            set("segment.bytes", "1048576"),
            set("segment.ms", "3600000"),
            set("index.interval.bytes", "512"),
            set(FLUSH_POLICY, "interval:250"),
            set("cleanup.policy", "delete , compact"),
            set("min.cleanable.dirty.ratio", "0.25"),
            set("min.compaction.lag.ms", "100"),
            set("max.compaction.lag.ms", "60000"),
            set("delete.retention.ms", "0"),
            set("compression.type", "producer"),
        ] {
            apply(&mut overrides, &change, &limits).unwrap();
        }
        assert_eq!(overrides.cleanup_policy.as_deref(), Some("compact,delete"));
        assert_eq!(overrides.min_cleanable_dirty_ratio, Some(0.25));
        assert_eq!(overrides.min_compaction_lag_ms, Some(100));
        assert_eq!(overrides.max_compaction_lag_ms, Some(60_000));
        assert_eq!(overrides.delete_retention_ms, Some(0));
        assert_eq!(overrides.retention_ms, Some(60_000));
        assert_eq!(overrides.retention_bytes, Some(-1));
        assert_eq!(overrides.segment_bytes, Some(1 << 20));
        assert_eq!(overrides.segment_ms, Some(3_600_000));
        assert_eq!(overrides.index_interval_bytes, Some(512));
        assert_eq!(overrides.flush.as_deref(), Some("interval:250"));
        apply(
            &mut overrides,
            &ConfigChange::Unset {
                name: "retention.ms".into(),
            },
            &limits,
        )
        .unwrap();
        assert_eq!(overrides.retention_ms, None);
    }

    #[test]
    fn unknown_names_bad_values_and_changes_to_fixed_settings_are_refused() {
        let limits = Limits::default();
        let mut overrides = TopicOverrides::default();
        for change in [
            set("retention.msec", "1"),
            set("retention.ms", "soon"),
            set("segment.bytes", "-5"),
            set(FLUSH_POLICY, "sometimes"),
            set("cleanup.policy", "shred"),
            set("cleanup.policy", ""),
            set("min.cleanable.dirty.ratio", "half"),
            set("delete.retention.ms", "1.5"),
            set("compression.type", "zstd"),
        ] {
            assert!(
                matches!(
                    apply(&mut overrides, &change, &limits),
                    Err(TopicError::InvalidConfig(_))
                ),
                "{change:?}"
            );
        }
        assert_eq!(overrides, TopicOverrides::default());
    }

    #[test]
    fn segment_settings_below_the_floors_are_refused_and_only_changed_ones_are_judged() {
        let limits = Limits::default();
        let with = |segment_bytes, segment_ms| TopicOverrides {
            segment_bytes,
            segment_ms,
            ..TopicOverrides::default()
        };
        assert!(check_floors(&with(None, None), &limits).is_ok());
        assert!(check_floors(
            &with(Some(limits.segment_bytes_min), Some(limits.segment_ms_min)),
            &limits
        )
        .is_ok());
        assert!(check_floors(&with(None, Some(1)), &limits).is_err());
        assert!(check_floors(&with(Some(limits.segment_bytes_min - 1), None), &limits).is_err());
        let old = with(Some(1), None);
        let new = TopicOverrides {
            retention_ms: Some(5),
            ..old.clone()
        };
        assert!(check_floors(&changed(&old, &new), &limits).is_ok());
    }

    #[test]
    fn entries_say_what_is_overridden_and_name_the_broker_default() {
        let limits = Limits::default();
        let defaults = LogDefaults::default();
        let overrides = TopicOverrides {
            retention_ms: Some(1_000),
            ..TopicOverrides::default()
        };
        let effective = LogConfig {
            retention_ms: 1_000,
            ..LogConfig::default()
        };
        let entries = topic_entries(
            &overrides,
            &effective,
            &defaults,
            crate::storage::FlushPolicy::Always,
            &limits,
        );
        let retention = entries.iter().find(|entry| entry.name == "retention.ms").unwrap();
        assert_eq!(retention.value, "1000");
        assert_eq!(retention.source, ConfigSource::TopicOverride);
        assert_eq!(
            retention.broker_default,
            Some(("log.retention.ms", defaults.retention_ms.to_string()))
        );
        let segment = entries
            .iter()
            .find(|entry| entry.name == "segment.bytes")
            .unwrap();
        assert_eq!(segment.source, ConfigSource::Broker);
        let policy = entries
            .iter()
            .find(|entry| entry.name == "cleanup.policy")
            .unwrap();
        assert!(!policy.read_only);
        assert_eq!(policy.value, "delete");
        assert_eq!(policy.kind, ConfigKind::List);
        assert_eq!(
            policy.broker_default,
            Some(("log.cleanup.policy", "delete".to_string()))
        );
        let ratio = entries
            .iter()
            .find(|entry| entry.name == "min.cleanable.dirty.ratio")
            .unwrap();
        assert_eq!(ratio.value, "0.5");
        assert_eq!(
            ratio.broker_default,
            Some(("log.cleaner.min.cleanable.ratio", "0.5".to_string()))
        );
        assert!(entries
            .iter()
            .any(|entry| entry.name == "compression.type" && entry.read_only));
        let broker = broker_entries(&defaults, crate::storage::FlushPolicy::Always, &limits, 0, false);
        assert!(broker
            .iter()
            .any(|entry| entry.name == "auto.create.topics.enable" && entry.value == "false"));
        assert!(broker
            .iter()
            .any(|entry| entry.name == "log.cleaner.delete.retention.ms" && entry.value == "86400000"));
    }
}
