//! A produce's expectations (issue 8 §1) in domain terms: those a native request carries as
//! fields, and those an unmodified Kafka client carries in record headers, checked for sense
//! and merged into the one `AppendConditions` the partition's append checks.
//!
//! * `tidelog-expect` on the first record of a key in the append: `any`, `none`, `exists` or
//!   a decimal offset (the key's expected version; -1 means `none`).
//! * `tidelog-expect-end-offset` on the append's first record: the decimal log end offset.
//!
//! Headers are read only when a record has some (the validation walk says so), so a produce
//! without headers costs what it did before. A malformed header refuses the partition's append
//! with INVALID_RECORD; a key expected twice (header and field) with INVALID_REQUEST.

use std::collections::HashSet;

use bytes::Bytes;
use tidelog_proto::batch::RecordBatch;

use super::{CoreError, ErrorCode};
use crate::storage::{printable_key, AppendConditions, Expected, KeyCondition};

/// The record header with a key's expected version.
pub(crate) const EXPECT_HEADER: &str = "tidelog-expect";
/// The record header with the partition's expected log end offset.
pub(crate) const EXPECT_END_OFFSET_HEADER: &str = "tidelog-expect-end-offset";

/// `any`, `none`, `exists` or a decimal version >= -1, as the header and the CLI spell it.
pub(crate) fn parse_expected(text: &str) -> Option<Expected> {
    match text {
        "any" => Some(Expected::Any),
        "none" => Some(Expected::NoStream),
        "exists" => Some(Expected::Exists),
        number => match number.parse::<i64>().ok()? {
            -1 => Some(Expected::NoStream),
            version if version >= 0 => Some(Expected::Exact(version)),
            _ => None,
        },
    }
}

/// The conditions of one partition's append: `native` (checked for sense) merged with those
/// in the batches' headers (read only if `has_headers`).
///
/// # Errors
/// INVALID_RECORD for a malformed or misplaced expectation header, INVALID_REQUEST for a bad
/// native condition or one key (or the end offset) expected twice.
pub(crate) fn resolve(
    native: AppendConditions,
    batches: &[RecordBatch],
    has_headers: bool,
    decompressed_bytes_max: usize,
) -> Result<AppendConditions, CoreError> {
    check_native(&native)?;
    if !has_headers {
        return Ok(native);
    }
    let carried = from_headers(batches, decompressed_bytes_max)?;
    merge(native, carried)
}

fn check_native(conditions: &AppendConditions) -> Result<(), CoreError> {
    if let Some(offset) = conditions.expected_end_offset {
        if offset < 0 {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!("expected end offset {offset} is negative"),
            ));
        }
    }
    let mut keys = HashSet::with_capacity(conditions.keys.len());
    for condition in &conditions.keys {
        if let Expected::Exact(version) = condition.expected {
            if version < -1 {
                return Err(CoreError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "key {}: expected version {version} is below -1",
                        printable_key(&condition.key)
                    ),
                ));
            }
        }
        if !keys.insert(&condition.key) {
            return Err(twice(&condition.key));
        }
    }
    Ok(())
}

fn twice(key: &[u8]) -> CoreError {
    CoreError::new(
        ErrorCode::InvalidRequest,
        format!("key {} has two expectations", printable_key(key)),
    )
}

fn invalid_record(index: usize, detail: String) -> CoreError {
    CoreError::new(ErrorCode::InvalidRecord, format!("record {index}: {detail}"))
}

/// The conditions the records' headers carry.
fn from_headers(
    batches: &[RecordBatch],
    decompressed_bytes_max: usize,
) -> Result<AppendConditions, CoreError> {
    let mut conditions = AppendConditions::default();
    // Keys of the records before the one at hand: an expectation belongs on a key's first.
    let mut seen: HashSet<Bytes> = HashSet::new();
    let mut index = 0usize;
    for batch in batches {
        for record in batch.records_bounded(decompressed_bytes_max) {
            // The batch passed validation with the same bound, so it decodes.
            let record =
                record.map_err(|error| CoreError::new(ErrorCode::CorruptMessage, error.to_string()))?;
            let mut expected = None;
            for header in &record.headers {
                let name = header.key.as_str();
                if name != EXPECT_HEADER && name != EXPECT_END_OFFSET_HEADER {
                    continue;
                }
                let text = header
                    .value
                    .as_deref()
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .unwrap_or("<null or not UTF-8>");
                if name == EXPECT_END_OFFSET_HEADER {
                    if index != 0 {
                        return Err(invalid_record(
                            index,
                            format!("{EXPECT_END_OFFSET_HEADER} belongs on the first record of the append"),
                        ));
                    }
                    let offset = text.parse::<i64>().ok().filter(|offset| *offset >= 0);
                    let Some(offset) = offset else {
                        return Err(invalid_record(
                            index,
                            format!("{EXPECT_END_OFFSET_HEADER} {text:?} is not a decimal offset"),
                        ));
                    };
                    if conditions.expected_end_offset.replace(offset).is_some() {
                        return Err(invalid_record(
                            index,
                            format!("{EXPECT_END_OFFSET_HEADER} given twice"),
                        ));
                    }
                    continue;
                }
                let Some(key) = &record.key else {
                    return Err(invalid_record(
                        index,
                        format!("{EXPECT_HEADER} on a record without a key"),
                    ));
                };
                if seen.contains(key) {
                    return Err(invalid_record(
                        index,
                        format!(
                            "{EXPECT_HEADER} belongs on the first record of key {} in the append",
                            printable_key(key)
                        ),
                    ));
                }
                let Some(parsed) = parse_expected(text) else {
                    return Err(invalid_record(
                        index,
                        format!("{EXPECT_HEADER} {text:?} is none of any, none, exists or an offset"),
                    ));
                };
                if expected.replace(parsed).is_some() {
                    return Err(invalid_record(index, format!("{EXPECT_HEADER} given twice")));
                }
            }
            if let Some(key) = record.key {
                if let Some(expected) = expected {
                    conditions.keys.push(KeyCondition {
                        key: key.clone(),
                        expected,
                    });
                }
                seen.insert(key);
            }
            index += 1;
        }
    }
    Ok(conditions)
}

fn merge(mut native: AppendConditions, carried: AppendConditions) -> Result<AppendConditions, CoreError> {
    if let Some(offset) = carried.expected_end_offset {
        if native.expected_end_offset.replace(offset).is_some() {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "the end offset is expected both in the request and in a header",
            ));
        }
    }
    for condition in carried.keys {
        if native.keys.iter().any(|other| other.key == condition.key) {
            return Err(twice(&condition.key));
        }
        native.keys.push(condition);
    }
    Ok(native)
}

#[cfg(test)]
mod tests {
    use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};

    use super::*;

    /// A record: its key and its headers (name, value).
    type Spec<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)]);

    fn batch(records: &[Spec<'_>]) -> RecordBatch {
        let mut builder = RecordBatchBuilder::new();
        for (key, headers) in records {
            builder.push(&NewRecord {
                timestamp: 0,
                key: key.map(|key| Bytes::from(key.to_string())),
                value: Some(Bytes::from_static(b"v")),
                headers: headers
                    .iter()
                    .map(|(name, value)| RecordHeader {
                        key: (*name).to_string(),
                        value: Some(Bytes::from(value.to_string())),
                    })
                    .collect(),
            });
        }
        let bytes = builder.build().expect("records");
        RecordBatch::split_first(&bytes).expect("parses").0
    }

    fn on(key: &str, expected: Expected) -> KeyCondition {
        KeyCondition {
            key: Bytes::from(key.to_string()),
            expected,
        }
    }

    fn resolved(batches: &[RecordBatch]) -> Result<AppendConditions, CoreError> {
        resolve(AppendConditions::default(), batches, true, 1 << 20)
    }

    #[test]
    fn headers_on_first_records_become_conditions() {
        let batches = [
            batch(&[
                (
                    Some("a"),
                    &[("tidelog-expect-end-offset", "7"), ("tidelog-expect", "41")],
                ),
                (Some("b"), &[("other", "x"), ("tidelog-expect", "none")]),
                (None, &[]),
            ]),
            batch(&[
                (Some("a"), &[]),
                (Some("c"), &[("tidelog-expect", "exists")]),
                (Some("d"), &[("tidelog-expect", "-1")]),
            ]),
        ];
        let conditions = resolved(&batches).unwrap();
        assert_eq!(conditions.expected_end_offset, Some(7));
        assert_eq!(
            conditions.keys,
            vec![
                on("a", Expected::Exact(41)),
                on("b", Expected::NoStream),
                on("c", Expected::Exists),
                on("d", Expected::NoStream)
            ]
        );
        assert_eq!(parse_expected("any"), Some(Expected::Any));
        assert_eq!(parse_expected("-2"), None);
        assert_eq!(parse_expected(" 4"), None);
    }

    #[test]
    fn malformed_or_misplaced_headers_are_invalid_records() {
        let cases: [(&str, Vec<RecordBatch>); 6] = [
            (
                "not a number",
                vec![batch(&[(Some("a"), &[("tidelog-expect", "forty")])])],
            ),
            (
                "negative version",
                vec![batch(&[(Some("a"), &[("tidelog-expect", "-5")])])],
            ),
            ("keyless", vec![batch(&[(None, &[("tidelog-expect", "none")])])]),
            (
                "not the key's first record",
                vec![batch(&[
                    (Some("a"), &[]),
                    (Some("a"), &[("tidelog-expect", "none")]),
                ])],
            ),
            (
                "end offset not on the first record",
                vec![batch(&[
                    (Some("a"), &[]),
                    (Some("b"), &[("tidelog-expect-end-offset", "3")]),
                ])],
            ),
            (
                "bad end offset",
                vec![batch(&[(Some("a"), &[("tidelog-expect-end-offset", "x")])])],
            ),
        ];
        for (case, batches) in cases {
            let error = resolved(&batches).expect_err(case);
            assert_eq!(error.code, ErrorCode::InvalidRecord, "{case}: {error}");
            assert!(error.message.starts_with("record "), "{case}: {error}");
        }
    }

    #[test]
    fn a_key_expected_in_the_request_and_a_header_is_an_invalid_request() {
        let native = AppendConditions {
            expected_end_offset: None,
            keys: vec![on("a", Expected::Any)],
        };
        let batches = [batch(&[(Some("a"), &[("tidelog-expect", "none")])])];
        let error = resolve(native.clone(), &batches, true, 1 << 20).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        // Without headers the batches are not read at all.
        assert_eq!(resolve(native.clone(), &batches, false, 1 << 20).unwrap(), native);
        let twice = AppendConditions {
            expected_end_offset: None,
            keys: vec![on("a", Expected::Any), on("a", Expected::Exists)],
        };
        assert_eq!(
            resolve(twice, &[], false, 1 << 20).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }
}
