//! The Fetch response encoder (v4-12) that never copies record data: every field is written
//! into small header buffers, and each partition's record set stays the `Bytes` the log read
//! returned, a chunk of its own for the connection's vectored write. kafka-protocol's encoder
//! would copy every record set into one buffer; this one writes the same bytes (a test
//! compares the two) without that copy.
//!
//! Tagged fields are never written with default values: the flexible version (12) gets empty
//! tagged-field sections only.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;

use crate::kafka::codec::EncodeError;

/// Encodes `response` in `version` as chunks: field bytes, and each non-empty record set as it
/// is.
///
/// # Errors
/// A version outside 4-12, or a field the version cannot carry (a bug of the handler).
pub(crate) fn encode(response: &FetchResponse, version: i16) -> Result<Vec<Bytes>, EncodeError> {
    if !(4..=12).contains(&version) {
        return Err(EncodeError(format!("Fetch v{version} is not encoded here")));
    }
    let flexible = version >= 12;
    let mut out = Chunks::default();
    out.head.put_i32(response.throttle_time_ms);
    if version >= 7 {
        out.head.put_i16(response.error_code);
        out.head.put_i32(response.session_id);
    } else if response.session_id != 0 || response.error_code != 0 {
        return Err(EncodeError(format!(
            "Fetch v{version} has no session id or top-level error"
        )));
    }
    out.array_length(response.responses.len(), flexible);
    for topic in &response.responses {
        out.string(topic.topic.as_str(), flexible);
        out.array_length(topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            out.head.put_i32(partition.partition_index);
            out.head.put_i16(partition.error_code);
            out.head.put_i64(partition.high_watermark);
            out.head.put_i64(partition.last_stable_offset);
            if version >= 5 {
                out.head.put_i64(partition.log_start_offset);
            }
            match &partition.aborted_transactions {
                None => out.null_array(flexible),
                Some(aborted) => {
                    out.array_length(aborted.len(), flexible);
                    for transaction in aborted {
                        out.head.put_i64(transaction.producer_id.0);
                        out.head.put_i64(transaction.first_offset);
                        if flexible {
                            out.no_tagged_fields();
                        }
                    }
                }
            }
            if version >= 11 {
                out.head.put_i32(partition.preferred_read_replica.0);
            } else if partition.preferred_read_replica.0 != -1 {
                return Err(EncodeError(format!(
                    "Fetch v{version} has no preferred read replica"
                )));
            }
            out.records(partition.records.as_ref(), flexible)?;
            if flexible {
                // diverging_epoch, current_leader, snapshot_id: never set by this broker.
                out.no_tagged_fields();
            }
        }
        if flexible {
            out.no_tagged_fields();
        }
    }
    if flexible {
        out.no_tagged_fields();
    }
    Ok(out.finish())
}

/// Field bytes gathered into one buffer until a record set interrupts them.
#[derive(Default)]
struct Chunks {
    done: Vec<Bytes>,
    head: BytesMut,
}

impl Chunks {
    fn uvarint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.head.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.head.put_u8(value as u8);
    }

    fn array_length(&mut self, length: usize, flexible: bool) {
        if flexible {
            self.uvarint(length as u64 + 1);
        } else {
            // Bounded by the request's own counts, which fit an i32.
            self.head.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
        }
    }

    fn null_array(&mut self, flexible: bool) {
        if flexible {
            self.uvarint(0);
        } else {
            self.head.put_i32(-1);
        }
    }

    fn string(&mut self, value: &str, flexible: bool) {
        if flexible {
            self.uvarint(value.len() as u64 + 1);
        } else {
            // Topic names are at most 249 bytes.
            self.head.put_i16(i16::try_from(value.len()).unwrap_or(i16::MAX));
        }
        self.head.put_slice(value.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        self.head.put_u8(0);
    }

    fn records(&mut self, records: Option<&Bytes>, flexible: bool) -> Result<(), EncodeError> {
        let Some(records) = records else {
            if flexible {
                self.uvarint(0);
            } else {
                self.head.put_i32(-1);
            }
            return Ok(());
        };
        let length = i32::try_from(records.len())
            .map_err(|_| EncodeError(format!("a record set of {} bytes", records.len())))?;
        if flexible {
            self.uvarint(records.len() as u64 + 1);
        } else {
            self.head.put_i32(length);
        }
        if !records.is_empty() {
            let head = std::mem::take(&mut self.head).freeze();
            self.done.push(head);
            self.done.push(records.clone());
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.done.push(self.head.freeze());
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn sample(version: i16) -> FetchResponse {
        let records = Bytes::from(vec![7u8; 300]);
        let partition = |index: i32, records: Option<Bytes>| {
            let partition = PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(1_000 + i64::from(index))
                .with_last_stable_offset(1_000)
                .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                .with_records(records);
            if index == 1 {
                partition.with_aborted_transactions(Some(vec![AbortedTransaction::default()
                    .with_producer_id(ProducerId(9))
                    .with_first_offset(4)]))
            } else {
                partition
            }
        };
        let topic = |name: &'static str| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str(name)))
                .with_partitions(vec![
                    partition(0, Some(records.clone())),
                    partition(1, Some(Bytes::new())),
                    partition(2, None),
                ])
        };
        let mut response = FetchResponse::default().with_responses(vec![topic("alpha"), topic("beta")]);
        if version >= 7 {
            response = response.with_session_id(0).with_error_code(0);
        }
        response
    }

    #[test]
    fn chunks_are_byte_for_byte_what_kafka_protocol_encodes() {
        for version in 4..=12 {
            let response = sample(version);
            let chunks = encode(&response, version).unwrap();
            let ours: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect();
            let mut theirs = BytesMut::new();
            response.encode(&mut theirs, version).unwrap();
            assert_eq!(ours, theirs.to_vec(), "v{version}");
        }
    }

    #[test]
    fn record_sets_are_the_same_allocation_not_copies() {
        let response = sample(12);
        let stored = response.responses[0].partitions[0].records.clone().unwrap();
        let chunks = encode(&response, 12).unwrap();
        assert!(
            chunks
                .iter()
                .any(|chunk| chunk.as_ptr() == stored.as_ptr() && chunk.len() == stored.len()),
            "the record set must be written from the bytes the read returned"
        );
    }

    #[test]
    fn versions_outside_the_served_range_are_refused() {
        assert!(encode(&sample(4), 3).is_err());
        assert!(encode(&sample(12), 13).is_err());
    }
}
