//! OffsetForLeaderEpoch (0-4): where a leader epoch ends. Until replication exists every
//! partition has one epoch, 0, which ends at the log end offset; asking for any later epoch
//! gets Kafka's "undefined" answer (-1, -1), and a client that believes the current epoch is
//! above 0 gets UNKNOWN_LEADER_EPOCH. kafka-protocol lacks v0-1: they have a hand codec here.

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Reply, Request, Response};
use crate::core::ErrorCode;
use crate::kafka::error::kafka_code;
use crate::kafka::legacy::{LegacyError, Reader, Writer};

/// The only leader epoch there is until replication exists.
const LEADER_EPOCH: i32 = 0;
/// Kafka's answer for an epoch it knows nothing of.
const UNDEFINED: i32 = -1;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked = if version < 2 {
        match decode_legacy(request.body.clone()) {
            Ok(asked) => asked,
            Err(error) => {
                return Reply::Close(format!("undecodable OffsetForLeaderEpoch v{version}: {error}"))
            }
        }
    } else {
        match request.decode::<OffsetForLeaderEpochRequest>() {
            Ok(asked) => asked,
            Err(reply) => return reply,
        }
    };
    let topics = asked
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| end_offset(&request, topic.topic.as_str(), asked))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
    if version < 2 {
        return Reply::Now(Response {
            chunks: vec![encode_legacy(&response, version)],
            held: None,
        });
    }
    Reply::encode(&response, version)
}

fn end_offset(request: &Request<'_>, topic: &str, asked: &OffsetForLeaderPartition) -> EpochEndOffset {
    let answer = EpochEndOffset::default()
        .with_partition(asked.partition)
        .with_leader_epoch(UNDEFINED)
        .with_end_offset(i64::from(UNDEFINED));
    let Ok(partition) = u32::try_from(asked.partition) else {
        return answer.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
    };
    let log = match request.context.core().partition(topic, partition) {
        Ok(log) => log,
        Err(error) => return answer.with_error_code(kafka_code(error.code)),
    };
    // -1: the client does not know the current epoch (v0-1 never send one).
    if asked.current_leader_epoch > LEADER_EPOCH {
        return answer.with_error_code(ErrorCode::UnknownLeaderEpoch.code());
    }
    if asked.leader_epoch != LEADER_EPOCH {
        return answer;
    }
    answer
        .with_leader_epoch(LEADER_EPOCH)
        .with_end_offset(log.high_watermark())
}

/// v0 and v1 requests (identical): `[topic [partition leader_epoch]]`.
pub(crate) fn decode_legacy(body: bytes::Bytes) -> Result<OffsetForLeaderEpochRequest, LegacyError> {
    let mut reader = Reader::new(body);
    // A topic is at least a string length and a count; a partition two int32s.
    let topic_count = reader.count(6)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = reader.string()?;
        let partition_count = reader.count(8)?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let partition = reader.i32()?;
            let leader_epoch = reader.i32()?;
            partitions.push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(leader_epoch),
            );
        }
        topics.push(
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions),
        );
    }
    reader.finish()?;
    Ok(OffsetForLeaderEpochRequest::default().with_topics(topics))
}

/// v0 responses: `[topic [error_code partition end_offset]]`; v1 adds `leader_epoch` before
/// `end_offset`.
fn encode_legacy(response: &OffsetForLeaderEpochResponse, version: i16) -> bytes::Bytes {
    let mut writer = Writer::default();
    writer.count(response.topics.len());
    for topic in &response.topics {
        writer.string(topic.topic.as_str());
        writer.count(topic.partitions.len());
        for partition in &topic.partitions {
            writer.i16(partition.error_code);
            writer.i32(partition.partition);
            if version >= 1 {
                writer.i32(partition.leader_epoch);
            }
            writer.i64(partition.end_offset);
        }
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn legacy_requests_decode_and_responses_encode_field_by_field() {
        let mut body = BytesMut::new();
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"t");
        body.put_i32(1);
        body.put_i32(3);
        body.put_i32(0);
        let request = decode_legacy(body.freeze()).unwrap();
        assert_eq!(request.topics[0].topic.as_str(), "t");
        assert_eq!(request.topics[0].partitions[0].partition, 3);
        assert_eq!(request.topics[0].partitions[0].leader_epoch, 0);
        assert!(decode_legacy(bytes::Bytes::from_static(&[0, 0, 0, 1, 0, 1])).is_err());

        let response =
            OffsetForLeaderEpochResponse::default().with_topics(vec![OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![EpochEndOffset::default()
                    .with_partition(3)
                    .with_leader_epoch(0)
                    .with_end_offset(42)])]);
        let v0 = encode_legacy(&response, 0);
        assert_eq!(
            &v0[..],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 42]
        );
        let v1 = encode_legacy(&response, 1);
        assert_eq!(v1.len(), v0.len() + 4);
    }
}
