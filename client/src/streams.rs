//! Event streams, the write side (issue 8 §1, §2): conditional appends to one key's stream,
//! with exact idempotent retries by event id.
//!
//! A **stream** is the records of one key in one topic; it lives in the key's partition
//! (murmur2, as Kafka partitions). Its **version** is the offset of its last record, -1 when it
//! has none. An append may expect a version ([`Expected`]); the broker checks it under the
//! partition's writer lock, so of two writers expecting the same version exactly one wins.
//!
//! Give events ids ([`EventData::event_id`], written as the `tidelog-event-id` header): a
//! retry of an append that did land (a timeout, a lost connection, a restarted service) is
//! then answered with the original offsets instead of a conflict, for as long as the records
//! are retained.
//!
//! ```no_run
//! use bytes::Bytes;
//! use tidelog_client::{Client, ClientConfig, Error, EventData, Expected};
//! # async fn demo() -> tidelog_client::Result<()> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7171"])).await?;
//! let event = EventData::new("created").event_id("order-7/1");
//! match client.append_stream("orders", Bytes::from("order-7"), Expected::NoStream, vec![event]).await {
//!     Ok(appended) => println!("version {}", appended.offsets[0]),
//!     Err(Error::ExpectationFailed { failures }) => println!("conflict: {failures:?}"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::types::{ErrorCode, PartitionId};
use crate::wire;

/// The record header an event id is written as (the broker compares it byte for byte).
pub const EVENT_ID_HEADER: &str = "tidelog-event-id";

/// How long the broker may wait for an append to be durable before it answers with a timeout:
/// half the default request timeout, so its answer arrives before the client gives up.
pub const APPEND_DURABILITY_WAIT_MS: u32 = 15_000;

/// What an append expects of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream has no record.
    NoStream,
    /// The stream has at least one record.
    Exists,
    /// The stream's last record is at this offset.
    Exact(i64),
}

impl fmt::Display for Expected {
    /// `any`, `none`, `exists` or the offset: the CLI's `--expect` and the `tidelog-expect`
    /// header spell it so.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("none"),
            Expected::Exists => f.write_str("exists"),
            Expected::Exact(offset) => write!(f, "{offset}"),
        }
    }
}

impl FromStr for Expected {
    type Err = String;

    /// `any`, `none`, `exists` or a decimal offset (-1 means `none`).
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "any" => Ok(Expected::Any),
            "none" => Ok(Expected::NoStream),
            "exists" => Ok(Expected::Exists),
            number => match number.parse::<i64>() {
                Ok(-1) => Ok(Expected::NoStream),
                Ok(offset) if offset >= 0 => Ok(Expected::Exact(offset)),
                _ => Err(format!("{text:?} is none of any, none, exists or an offset")),
            },
        }
    }
}

/// One event to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventData {
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// Names the event for exact retries; written as the `tidelog-event-id` header.
    pub event_id: Option<Bytes>,
}

impl EventData {
    pub fn new(value: impl Into<Bytes>) -> Self {
        EventData {
            value: value.into(),
            headers: Vec::new(),
            event_id: None,
        }
    }

    pub fn event_id(mut self, id: impl Into<Bytes>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub partition: u32,
    /// One offset per event, in order.
    pub offsets: Vec<i64>,
    /// The append was a retry of one already in the log: nothing was written again, and the
    /// offsets are the original ones.
    pub deduplicated: bool,
}

/// The conditions of a general conditional append ([`Client::append_conditional`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendConditions {
    /// KIP-27: the partition's log end offset must equal this.
    pub expected_end_offset: Option<i64>,
    /// One expectation per key: keys the records write, and check-only keys they do not.
    pub keys: Vec<(Bytes, Expected)>,
}

/// One failed check of a refused append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectationFailure {
    /// `None`: the expected end offset failed.
    pub key: Option<Bytes>,
    pub expected: Expected,
    /// The stream's version (or the log end offset); -1: no stream.
    pub actual: i64,
}

impl fmt::Display for ExpectationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, actual {}", self.expected, self.actual)
    }
}

impl Client {
    /// Appends `events` to the stream `key` of `topic` as one atomic batch, if the stream
    /// meets `expected`.
    ///
    /// # Errors
    /// [`Error::ExpectationFailed`] with the stream's actual version when it does not (nothing
    /// was appended); [`Error::StreamErased`] when the stream is erased; [`Error::Config`] for
    /// no events; the errors of any request.
    pub async fn append_stream(
        &self,
        topic: &str,
        key: Bytes,
        expected: Expected,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        let partitions = self.topic(topic).await?.partition_count();
        if partitions == 0 {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: None,
            });
        }
        let partition = partition_for_key(&key, partitions);
        let conditions = AppendConditions {
            expected_end_offset: None,
            keys: vec![(key.clone(), expected)],
        };
        let records = events.into_iter().map(|event| (key.clone(), event)).collect();
        self.append_conditional(topic, partition, records, conditions)
            .await
    }

    /// Appends keyed `records` to one partition as one atomic batch, if every one of
    /// `conditions` holds (several keys, check-only keys, the log end offset).
    ///
    /// # Errors
    /// [`Error::ExpectationFailed`] listing every failed check (nothing was appended);
    /// [`Error::Config`] for no records or an event id given twice; the errors of any request.
    pub async fn append_conditional(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<(Bytes, EventData)>,
        conditions: AppendConditions,
    ) -> Result<AppendResult> {
        let count = records.len();
        // The stream an erased-stream refusal names: the key, if every record has the same.
        let conditions_key = records
            .first()
            .map(|(key, _)| key.clone())
            .filter(|first| records.iter().all(|(key, _)| key == first));
        let batch = build_batch(records)?;
        let request = pb::ProduceRequest {
            acks: pb::Acks::Leader as i32,
            timeout_ms: APPEND_DURABILITY_WAIT_MS,
            topics: vec![pb::produce_request::Topic {
                name: topic.to_owned(),
                partitions: vec![pb::produce_request::Partition {
                    partition,
                    records: batch,
                    expected_end_offset: conditions.expected_end_offset,
                    expectations: conditions.keys.into_iter().map(expectation).collect(),
                }],
            }],
        };
        let connection = self.leader_connection(topic, PartitionId::new(partition)).await?;
        let body = connection.request(pb::request::Body::Produce(request)).await?;
        let pb::response::Body::Produce(response) = body else {
            return Err(Error::Protocol {
                addr: connection.addr().to_owned(),
                reason: "produce request answered with another body".into(),
            });
        };
        let answer = response
            .topics
            .into_iter()
            .flat_map(|answered| answered.partitions)
            .find(|answered| answered.partition == partition)
            .ok_or_else(|| Error::Protocol {
                addr: connection.addr().to_owned(),
                reason: format!("no produce result for {topic}/{partition}"),
            })?;
        match wire::error_code(answer.error) {
            None => {}
            Some(ErrorCode::ExpectationFailed) => {
                return Err(Error::ExpectationFailed {
                    failures: answer.failures.into_iter().map(failure).collect(),
                })
            }
            Some(ErrorCode::StreamErased) => {
                // The erased key is the append's only one or, for several, named in the message.
                let key =
                    conditions_key.map_or_else(String::new, |key| String::from_utf8_lossy(&key).into_owned());
                return Err(Error::StreamErased {
                    topic: topic.to_owned(),
                    key,
                    message: answer.message,
                });
            }
            Some(ErrorCode::UnknownTopicOrPartition) => {
                self.invalidate_topic(topic);
                return Err(Error::UnknownTopicOrPartition {
                    topic: topic.to_owned(),
                    partition: Some(PartitionId::new(partition)),
                });
            }
            Some(code) => {
                return Err(Error::Broker {
                    code,
                    message: answer.message,
                })
            }
        }
        let landed = usize::try_from(answer.last_offset - answer.base_offset + 1).unwrap_or(0);
        if landed != count {
            return Err(Error::Protocol {
                addr: connection.addr().to_owned(),
                reason: format!(
                    "{count} records appended at offsets {}..={}",
                    answer.base_offset, answer.last_offset
                ),
            });
        }
        Ok(AppendResult {
            partition,
            offsets: (answer.base_offset..=answer.last_offset).collect(),
            deduplicated: answer.duplicate,
        })
    }
}

/// The records as one batch: one batch is appended whole or not at all.
fn build_batch(records: Vec<(Bytes, EventData)>) -> Result<Bytes> {
    // A clock before 1970 stamps 0; the broker's own clock decides retention and rolls.
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
    });
    let mut builder = RecordBatchBuilder::new();
    for (key, event) in records {
        let mut headers: Vec<RecordHeader> = Vec::with_capacity(event.headers.len() + 1);
        for (name, value) in event.headers {
            if name == EVENT_ID_HEADER && event.event_id.is_some() {
                return Err(Error::Config(format!(
                    "an event has both an event id and a {EVENT_ID_HEADER} header"
                )));
            }
            headers.push(RecordHeader {
                key: name,
                value: Some(value),
            });
        }
        if let Some(id) = event.event_id {
            headers.push(RecordHeader {
                key: EVENT_ID_HEADER.to_owned(),
                value: Some(id),
            });
        }
        builder.push(&NewRecord {
            timestamp: now_ms,
            key: Some(key),
            value: Some(event.value),
            headers,
        });
    }
    builder
        .build()
        .ok_or_else(|| Error::Config("an append needs at least one event".into()))
}

fn expectation((key, expected): (Bytes, Expected)) -> pb::KeyExpectation {
    use pb::key_expectation::Expected as Kind;
    let kind = match expected {
        Expected::Any => Kind::Any(true),
        Expected::NoStream => Kind::NoStream(true),
        Expected::Exists => Kind::Exists(true),
        Expected::Exact(offset) => Kind::Exact(offset),
    };
    pb::KeyExpectation {
        key,
        expected: Some(kind),
    }
}

fn failure(failure: pb::ExpectationFailure) -> ExpectationFailure {
    ExpectationFailure {
        key: (!failure.end_offset).then_some(failure.key),
        // The broker writes what it checked, spelled as `Expected` displays.
        expected: failure.expected.parse().unwrap_or(Expected::Any),
        actual: failure.actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_parse_as_the_cli_and_headers_spell_them() {
        for (text, expected) in [
            ("any", Expected::Any),
            ("none", Expected::NoStream),
            ("exists", Expected::Exists),
            ("41", Expected::Exact(41)),
            ("0", Expected::Exact(0)),
        ] {
            assert_eq!(text.parse::<Expected>(), Ok(expected));
            assert_eq!(expected.to_string(), text);
        }
        assert_eq!("-1".parse::<Expected>(), Ok(Expected::NoStream));
        assert!("-2".parse::<Expected>().is_err());
        assert!("latest".parse::<Expected>().is_err());
    }

    #[test]
    fn event_ids_become_the_header_and_a_second_one_is_refused() {
        let batch = build_batch(vec![(
            Bytes::from("k"),
            EventData::new("v").header("a", "b").event_id("id-1"),
        )])
        .unwrap();
        let (batch, _) = tidelog_proto::batch::RecordBatch::split_first(&batch).unwrap();
        let record = batch.records().next().unwrap().unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|header| (header.key.as_str(), header.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(headers, vec![("a", &b"b"[..]), (EVENT_ID_HEADER, &b"id-1"[..])]);
        let twice = EventData::new("v").header(EVENT_ID_HEADER, "x").event_id("y");
        assert!(matches!(
            build_batch(vec![(Bytes::from("k"), twice)]),
            Err(Error::Config(_))
        ));
        assert!(matches!(build_batch(Vec::new()), Err(Error::Config(_))));
    }
}
