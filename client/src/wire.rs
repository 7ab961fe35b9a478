//! The edge between the domain types and the protobuf messages: building request frames and
//! turning response messages into domain values. The only client module besides
//! `connection.rs` that names `tidelog_proto::pb`.
//!
//! Produce frames are encoded by hand around the record batches (see [`ProduceFrame`]): the
//! batches are large and already in their final form, so the frame is handed to the socket as
//! a list of buffers and the batch bytes are never copied into a frame buffer.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use tidelog_proto::frame::{encode_frame, FRAME_HEADER_BYTES};
use tidelog_proto::pb;

use crate::error::{Error, Result};
use crate::types::{Acks, ErrorCode};

/// Batches shorter than this are copied into the frame's header buffer: a separate I/O slice
/// per tiny batch costs more than the copy.
const INLINE_RECORDS_BYTES_MAX: usize = 4096;

/// The API key a request body is sent under.
pub(crate) fn api_key(body: &pb::request::Body) -> pb::ApiKey {
    body.api_key()
}

fn header(api: pb::ApiKey, correlation_id: u64, client_id: &str) -> pb::RequestHeader {
    pb::RequestHeader {
        api: api as i32,
        version: tidelog_proto::PROTOCOL_VERSION,
        correlation_id,
        client_id: client_id.to_owned(),
    }
}

/// Encodes a whole request frame (length prefix included).
pub(crate) fn encode_request(
    correlation_id: u64,
    client_id: &str,
    body: pb::request::Body,
    max_frame_bytes: usize,
) -> Result<Bytes> {
    let request = pb::Request {
        header: Some(header(api_key(&body), correlation_id, client_id)),
        body: Some(body),
    };
    let mut out = BytesMut::new();
    encode_frame(&request, &mut out, max_frame_bytes).map_err(|_| Error::RequestTooLarge {
        length: request.encoded_len(),
        max: max_frame_bytes,
    })?;
    Ok(out.freeze())
}

/// Converts a code from the wire, where 0 means no error.
pub(crate) fn error_code(code: i32) -> Option<ErrorCode> {
    ErrorCode::from_code(code)
}

/// One partition's batch in a produce request.
#[derive(Debug, Clone)]
pub(crate) struct ProducePartition {
    pub partition: u32,
    pub records: Bytes,
}

/// One topic's partitions in a produce request.
#[derive(Debug, Clone)]
pub(crate) struct ProduceTopic<'a> {
    pub name: &'a str,
    pub partitions: Vec<ProducePartition>,
}

/// A produce request frame, encoded as a sequence of buffers that, concatenated, are exactly
/// the bytes prost would write for the same `pb::Request` (a unit test holds this).
#[derive(Debug)]
pub(crate) struct ProduceFrame {
    pub parts: Vec<Bytes>,
    /// Total bytes of the frame; the parts' lengths add up to it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub length: usize,
}

fn field_len(tag: u32, length: usize) -> usize {
    key_len(tag) + encoded_len_varint(length as u64) + length
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_len_delimited_header(tag: u32, length: usize, out: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(length as u64, out);
}

fn put_varint_field(tag: u32, value: u64, out: &mut BytesMut) {
    // proto3 leaves fields at their default out, as prost does.
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

// Field numbers, from proto/tidelog.proto.
const REQUEST_HEADER: u32 = 1;
const REQUEST_PRODUCE: u32 = 13;
const PRODUCE_ACKS: u32 = 1;
const PRODUCE_TIMEOUT_MS: u32 = 2;
const PRODUCE_TOPICS: u32 = 3;
const TOPIC_NAME: u32 = 1;
const TOPIC_PARTITIONS: u32 = 2;
const PARTITION_ID: u32 = 1;
const PARTITION_RECORDS: u32 = 2;

fn partition_len(partition: &ProducePartition) -> usize {
    let records = if partition.records.is_empty() {
        0
    } else {
        field_len(PARTITION_RECORDS, partition.records.len())
    };
    varint_field_len(PARTITION_ID, u64::from(partition.partition)) + records
}

fn topic_len(topic: &ProduceTopic<'_>) -> usize {
    let name = if topic.name.is_empty() {
        0
    } else {
        field_len(TOPIC_NAME, topic.name.len())
    };
    name + topic
        .partitions
        .iter()
        .map(|p| field_len(TOPIC_PARTITIONS, partition_len(p)))
        .sum::<usize>()
}

/// Encodes a produce request around the given batches without copying the large ones.
pub(crate) fn encode_produce(
    correlation_id: u64,
    client_id: &str,
    acks: Acks,
    timeout_ms: u32,
    topics: &[ProduceTopic<'_>],
    max_frame_bytes: usize,
) -> Result<ProduceFrame> {
    let acks_wire = match acks {
        Acks::None => pb::Acks::None,
        Acks::Leader => pb::Acks::Leader,
    } as i32 as u64;
    let request_header = header(pb::ApiKey::Produce, correlation_id, client_id);
    let produce_len = varint_field_len(PRODUCE_ACKS, acks_wire)
        + varint_field_len(PRODUCE_TIMEOUT_MS, u64::from(timeout_ms))
        + topics
            .iter()
            .map(|t| field_len(PRODUCE_TOPICS, topic_len(t)))
            .sum::<usize>();
    let request_len =
        field_len(REQUEST_HEADER, request_header.encoded_len()) + field_len(REQUEST_PRODUCE, produce_len);
    if request_len > max_frame_bytes || u32::try_from(request_len).is_err() {
        return Err(Error::RequestTooLarge {
            length: request_len,
            max: max_frame_bytes,
        });
    }

    let mut parts = Vec::with_capacity(1 + 2 * topics.iter().map(|t| t.partitions.len()).sum::<usize>());
    let mut scratch = BytesMut::with_capacity(256);
    // Checked above: request_len fits in u32.
    scratch.put_u32(request_len as u32);
    put_len_delimited_header(REQUEST_HEADER, request_header.encoded_len(), &mut scratch);
    request_header.encode_raw(&mut scratch);
    put_len_delimited_header(REQUEST_PRODUCE, produce_len, &mut scratch);
    put_varint_field(PRODUCE_ACKS, acks_wire, &mut scratch);
    put_varint_field(PRODUCE_TIMEOUT_MS, u64::from(timeout_ms), &mut scratch);
    for topic in topics {
        put_len_delimited_header(PRODUCE_TOPICS, topic_len(topic), &mut scratch);
        if !topic.name.is_empty() {
            put_len_delimited_header(TOPIC_NAME, topic.name.len(), &mut scratch);
            scratch.put_slice(topic.name.as_bytes());
        }
        for partition in &topic.partitions {
            put_len_delimited_header(TOPIC_PARTITIONS, partition_len(partition), &mut scratch);
            put_varint_field(PARTITION_ID, u64::from(partition.partition), &mut scratch);
            if partition.records.is_empty() {
                continue;
            }
            put_len_delimited_header(PARTITION_RECORDS, partition.records.len(), &mut scratch);
            if partition.records.len() <= INLINE_RECORDS_BYTES_MAX {
                scratch.put_slice(&partition.records);
            } else {
                parts.push(scratch.split().freeze());
                parts.push(partition.records.clone());
            }
        }
    }
    if !scratch.is_empty() {
        parts.push(scratch.freeze());
    }
    Ok(ProduceFrame {
        parts,
        length: FRAME_HEADER_BYTES + request_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Topic name, then (partition, records) pairs.
    type TopicSpec = (String, Vec<(u32, Vec<u8>)>);

    fn reference(correlation_id: u64, acks: Acks, timeout_ms: u32, topics: &[TopicSpec]) -> Bytes {
        let body = pb::request::Body::Produce(pb::ProduceRequest {
            acks: match acks {
                Acks::None => pb::Acks::None as i32,
                Acks::Leader => pb::Acks::Leader as i32,
            },
            timeout_ms,
            topics: topics
                .iter()
                .map(|(name, partitions)| pb::produce_request::Topic {
                    name: name.clone(),
                    partitions: partitions
                        .iter()
                        .map(|(partition, records)| pb::produce_request::Partition {
                            partition: *partition,
                            records: Bytes::from(records.clone()),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
        });
        encode_request(correlation_id, "client-1", body, usize::MAX >> 1).unwrap()
    }

    proptest! {
        #[test]
        fn hand_encoded_produce_frame_equals_prost(
            correlation_id: u64,
            leader in any::<bool>(),
            timeout_ms in prop_oneof![Just(0u32), any::<u32>()],
            topics in proptest::collection::vec(
                ("[a-z]{0,6}", proptest::collection::vec((0u32..5, proptest::collection::vec(any::<u8>(), 0..6000)), 0..4)),
                0..3,
            ),
        ) {
            let acks = if leader { Acks::Leader } else { Acks::None };
            let ours_topics: Vec<ProduceTopic<'_>> = topics
                .iter()
                .map(|(name, partitions)| ProduceTopic {
                    name,
                    partitions: partitions
                        .iter()
                        .map(|(partition, records)| ProducePartition { partition: *partition, records: Bytes::from(records.clone()) })
                        .collect(),
                })
                .collect();
            let frame = encode_produce(correlation_id, "client-1", acks, timeout_ms, &ours_topics, usize::MAX >> 1).unwrap();
            let joined: Vec<u8> = frame.parts.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(joined.len(), frame.length);
            let expected = reference(correlation_id, acks, timeout_ms, &topics);
            prop_assert_eq!(&joined[..], &expected[..]);
        }
    }

    #[test]
    fn produce_frame_over_the_limit_is_refused() {
        let topics = [ProduceTopic {
            name: "t",
            partitions: vec![ProducePartition {
                partition: 0,
                records: Bytes::from(vec![0u8; 2000]),
            }],
        }];
        let result = encode_produce(1, "c", Acks::Leader, 100, &topics, 1000);
        assert!(matches!(result, Err(Error::RequestTooLarge { max: 1000, .. })));
    }
}
