//! OffsetForLeaderEpoch (0-4): where a leader epoch ends. Until replication exists every
//! partition has one epoch, 0, which ends at the log end offset; asking for any later epoch
//! gets Kafka's "undefined" answer (-1, -1), and a client that believes the current epoch is
//! above 0 gets UNKNOWN_LEADER_EPOCH. kafka-protocol lacks v0-1: their hand codec is in
//! `legacy`.

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::legacy::{decode_offset_for_leader_epoch_v0_v1, encode_offset_for_leader_epoch_v0_v1};
use super::{Reply, Request, Response};
use crate::core::ErrorCode;
use crate::kafka::error::kafka_code;

/// The only leader epoch there is until replication exists.
const LEADER_EPOCH: i32 = 0;
/// Kafka's answer for an epoch it knows nothing of.
const UNDEFINED: i32 = -1;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked = if version < 2 {
        match decode_offset_for_leader_epoch_v0_v1(request.body.clone()) {
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
            chunks: vec![encode_offset_for_leader_epoch_v0_v1(&response, version)],
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn legacy_requests_decode_and_responses_encode_field_by_field() {
        let mut body = BytesMut::new();
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"t");
        body.put_i32(1);
        body.put_i32(3);
        body.put_i32(0);
        let request = decode_offset_for_leader_epoch_v0_v1(body.freeze()).unwrap();
        assert_eq!(request.topics[0].topic.as_str(), "t");
        assert_eq!(request.topics[0].partitions[0].partition, 3);
        assert_eq!(request.topics[0].partitions[0].leader_epoch, 0);
        assert!(
            decode_offset_for_leader_epoch_v0_v1(bytes::Bytes::from_static(&[0, 0, 0, 1, 0, 1])).is_err()
        );

        let response =
            OffsetForLeaderEpochResponse::default().with_topics(vec![OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![EpochEndOffset::default()
                    .with_partition(3)
                    .with_leader_epoch(0)
                    .with_end_offset(42)])]);
        let v0 = encode_offset_for_leader_epoch_v0_v1(&response, 0);
        assert_eq!(
            &v0[..],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 42]
        );
        let v1 = encode_offset_for_leader_epoch_v0_v1(&response, 1);
        assert_eq!(v1.len(), v0.len() + 4);
    }
}
