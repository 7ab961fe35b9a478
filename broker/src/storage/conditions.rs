//! Conditional appends (issue 8 §1) and exact idempotent retries (§2): the expectations an
//! append carries, and the one check of them, which `PartitionLog::append` runs under the
//! writer lock, beside the idempotent-producer check and before offsets are assigned.
//!
//! The check reads the key's state through [`StreamLookup`], which sees every earlier append
//! (synced or not), so two writers racing on one key are decided here, one after the other:
//! the first wins, the second sees the first's record as the key's version.
//!
//! A failed check is not always a conflict. A writer that timed out does not know whether its
//! append landed, and retries it. When every failed check failed because the log moved past
//! what was expected, and the records after the expected point are exactly the append's own
//! records (same keys, same `tidelog-event-id` headers, same order, at consecutive offsets: one
//! earlier append), the retry is answered with the original offsets and nothing is written.
//! That reads the log, not a cache: it holds after restarts and for a new producer, for as long
//! as the records are retained.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use tidelog_proto::batch::RecordBatch;

use super::error::StorageError;
use super::key_index::{StreamLookup, StreamRecord};

/// The record header that names an event, compared byte for byte by the retry match. It is
/// the one representation on both protocols (the native client writes it too).
pub const EVENT_ID_HEADER: &str = "tidelog-event-id";

/// What an append expects of one key's stream (its version is the offset of its last record,
/// -1 when it has none retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    Any,
    /// The key has no record in the partition.
    NoStream,
    /// The key has at least one record.
    Exists,
    /// The key's last record is at this offset (-1: the key has none, as `NoStream`).
    Exact(i64),
}

impl fmt::Display for Expected {
    /// The spelling of the `tidelog-expect` header and of the CLI's `--expect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("none"),
            Expected::Exists => f.write_str("exists"),
            Expected::Exact(offset) => write!(f, "{offset}"),
        }
    }
}

impl Expected {
    /// Whether a key whose last record is `actual` (-1: none) meets this expectation.
    pub fn holds(&self, actual: i64) -> bool {
        match self {
            Expected::Any => true,
            Expected::NoStream => actual < 0,
            Expected::Exists => actual >= 0,
            Expected::Exact(offset) => actual == *offset,
        }
    }

    /// The offset after which a retry of the append must find exactly its own records of the
    /// key: the expected version. `None` for expectations that name no version.
    fn point(&self) -> Option<i64> {
        match self {
            Expected::NoStream => Some(-1),
            Expected::Exact(offset) => Some(*offset),
            Expected::Any | Expected::Exists => None,
        }
    }
}

/// One key's expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCondition {
    pub key: Bytes,
    pub expected: Expected,
}

/// Conditions one append must meet, all of them, or nothing is appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendConditions {
    /// KIP-27: the log end offset must equal this.
    pub expected_end_offset: Option<i64>,
    /// One entry per key (keys the batches write, and check-only keys); at most one per key.
    pub keys: Vec<KeyCondition>,
}

impl AppendConditions {
    /// No condition at all: the append is an ordinary one.
    pub fn is_empty(&self) -> bool {
        self.expected_end_offset.is_none() && self.keys.is_empty()
    }
}

/// One failed check of a refused append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionFailure {
    /// None: the partition's `expected_end_offset` failed.
    pub key: Option<Bytes>,
    /// `Exact(n)` for `expected_end_offset`.
    pub expected: Expected,
    /// The key's version (or the log end offset): -1 = no stream.
    pub actual: i64,
    /// Index (within the append, counting records across batches) of the first record that
    /// writes this key, if any: Kafka's per-record error index.
    pub record_index: Option<u32>,
}

impl fmt::Display for ConditionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            None => write!(
                f,
                "end offset: expected {}, actual {}",
                self.expected, self.actual
            ),
            Some(key) => write!(
                f,
                "key {}: expected {}, actual {}",
                printable_key(key),
                self.expected,
                self.actual
            ),
        }
    }
}

/// A key for messages: UTF-8 as it is (cut at 64 bytes), anything else as hex.
pub fn printable_key(key: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    let shown = &key[..key.len().min(SHOWN_BYTES_MAX)];
    let ellipsis = if key.len() > SHOWN_BYTES_MAX { "..." } else { "" };
    match std::str::from_utf8(shown) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}{ellipsis}"),
        _ => {
            let hex: String = shown.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("0x{hex}{ellipsis}")
        }
    }
}

/// What the append should do once its conditions are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every condition holds: append.
    Append,
    /// The append is a retry of one already in the log, whose records sit at these offsets:
    /// answer with them and write nothing.
    Retry { base_offset: i64, last_offset: i64 },
}

/// Checks `conditions` for an append of `batches` to a log whose end offset is `end_offset`.
///
/// # Errors
/// `ConditionFailed` listing every failed check (nothing may be appended), `InvalidConditions`
/// for two conditions on one key, and whatever the lookup returns.
pub(crate) fn check(
    conditions: &AppendConditions,
    batches: &[RecordBatch],
    end_offset: i64,
    lookup: &mut dyn StreamLookup,
) -> Result<Verdict, StorageError> {
    let mut failures = Vec::new();
    if let Some(expected) = conditions.expected_end_offset {
        if expected != end_offset {
            failures.push(ConditionFailure {
                key: None,
                expected: Expected::Exact(expected),
                actual: end_offset,
                record_index: None,
            });
        }
    }
    for (index, condition) in conditions.keys.iter().enumerate() {
        if conditions.keys[..index]
            .iter()
            .any(|other| other.key == condition.key)
        {
            return Err(StorageError::InvalidConditions(format!(
                "two conditions on key {}",
                printable_key(&condition.key)
            )));
        }
        if condition.expected == Expected::Any {
            continue;
        }
        let actual = lookup.last_offset(&condition.key)?.unwrap_or(-1);
        if !condition.expected.holds(actual) {
            failures.push(ConditionFailure {
                key: Some(condition.key.clone()),
                expected: condition.expected.clone(),
                actual,
                record_index: None,
            });
        }
    }
    if failures.is_empty() {
        return Ok(Verdict::Append);
    }
    // Records are decoded only now, for a refused append: a check that holds costs lookups only.
    let records = AppendRecords::decode(batches)?;
    for failure in &mut failures {
        if let Some(key) = &failure.key {
            failure.record_index = records.first_index(key);
        }
    }
    if let Some(verdict) = match_retry(conditions, &failures, &records, lookup)? {
        return Ok(verdict);
    }
    Err(StorageError::ConditionFailed { failures })
}

/// The keys and event ids of an append's records, in order.
struct AppendRecords {
    /// `(key, event id)` per record, counting across batches.
    records: Vec<(Option<Bytes>, Option<Bytes>)>,
}

impl AppendRecords {
    fn decode(batches: &[RecordBatch]) -> Result<AppendRecords, StorageError> {
        let mut records = Vec::new();
        for batch in batches {
            for record in batch.records() {
                // The caller validated every batch; a failure here is a broken invariant, and
                // refusing the append is the safe answer.
                let record = record.map_err(|error| StorageError::Corrupt {
                    path: std::path::PathBuf::new(),
                    detail: "a validated batch of a conditional append did not decode".to_string(),
                    source: Some(error),
                })?;
                let event_id = record
                    .headers
                    .into_iter()
                    .find(|header| header.key == EVENT_ID_HEADER)
                    .and_then(|header| header.value);
                records.push((record.key, event_id));
            }
        }
        Ok(AppendRecords { records })
    }

    fn first_index(&self, key: &[u8]) -> Option<u32> {
        self.records
            .iter()
            .position(|(record_key, _)| record_key.as_deref() == Some(key))
            .and_then(|index| u32::try_from(index).ok())
    }
}

/// Whether a refused append is an exact retry of an append already in the log (see the module
/// comment). `None`: it is not, and the failures stand.
fn match_retry(
    conditions: &AppendConditions,
    failures: &[ConditionFailure],
    records: &AppendRecords,
    lookup: &mut dyn StreamLookup,
) -> Result<Option<Verdict>, StorageError> {
    // Only a log that moved past the expected point can hold the retried append; any other
    // failure (a key behind what was expected, `exists` without records) is a conflict.
    let moved_past = |failure: &ConditionFailure| match failure.expected {
        Expected::NoStream => failure.actual >= 0,
        Expected::Exact(expected) => failure.actual > expected,
        Expected::Any | Expected::Exists => false,
    };
    if !failures.iter().all(moved_past) {
        return Ok(None);
    }
    // Every record must say what it is: a key to find it by, an id to compare it with.
    let mut by_key: HashMap<&[u8], Vec<(usize, &Bytes)>> = HashMap::new();
    for (index, (key, event_id)) in records.records.iter().enumerate() {
        let (Some(key), Some(event_id)) = (key, event_id) else {
            return Ok(None);
        };
        by_key.entry(&key[..]).or_default().push((index, event_id));
    }
    let mut base = None;
    // The append started at the end offset it expected.
    if let Some(expected) = conditions.expected_end_offset {
        base = Some(expected);
    }
    let expected_of = |key: &[u8]| {
        conditions
            .keys
            .iter()
            .find(|condition| &condition.key[..] == key)
            .map(|condition| &condition.expected)
    };
    // Keys with an expected version: their records after it must be exactly the append's.
    let mut unanchored = Vec::new();
    for (key, written) in &by_key {
        let Some(point) = expected_of(key).and_then(Expected::point) else {
            unanchored.push((*key, written));
            continue;
        };
        let found = lookup.records_after(key, point, written.len() + 1)?;
        let Some(key_base) = consecutive_base(&found, written, base) else {
            return Ok(None);
        };
        base = Some(key_base);
    }
    let Some(base) = base else {
        return Ok(None);
    };
    // Keys without one: their records from the append's base on must be the append's.
    for (key, written) in unanchored {
        let found = lookup.records_after(key, base - 1, written.len())?;
        if consecutive_base(&found, written, Some(base)).is_none() {
            return Ok(None);
        }
    }
    let count = i64::try_from(records.records.len()).unwrap_or(i64::MAX);
    Ok(Some(Verdict::Retry {
        base_offset: base,
        last_offset: base.saturating_add(count - 1),
    }))
}

/// The base offset of the earlier append that wrote `found` as the records `written` (their
/// indexes in the append and event ids): same count, same ids in order, record `i` of the
/// append at `base + i`. `None` when they are not that, or the base differs from `base`.
fn consecutive_base(found: &[StreamRecord], written: &[(usize, &Bytes)], base: Option<i64>) -> Option<i64> {
    if found.len() != written.len() {
        return None;
    }
    let (first_index, _) = written.first()?;
    let found_base = found.first()?.offset - i64::try_from(*first_index).ok()?;
    if base.is_some_and(|base| base != found_base) {
        return None;
    }
    for (record, (index, event_id)) in found.iter().zip(written) {
        let event_id_found = record
            .headers
            .iter()
            .find(|(name, _)| name == EVENT_ID_HEADER)
            .and_then(|(_, value)| value.as_ref());
        if event_id_found != Some(*event_id) || record.offset != found_base + i64::try_from(*index).ok()? {
            return None;
        }
    }
    Some(found_base)
}
