//! Idempotent producers over the raw protocol: batches stamped with a producer id, epoch and
//! sequence, and InitProducerId.

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, ProducerStamp, RecordBatchBuilder};
use tidelog_proto::pb::{self, ErrorCode};

use crate::records::now_ms;
use crate::RawClient;

/// A batch of `values` stamped with a producer id, epoch and base sequence, timestamped now.
pub fn stamped_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[String]) -> Bytes {
    stamped_batch_at(producer_id, epoch, base_sequence, values, now_ms())
}

/// The same with every record's timestamp set to `timestamp` (client time).
pub fn stamped_batch_at(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    values: &[String],
    timestamp: i64,
) -> Bytes {
    let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    });
    for value in values {
        builder.push(&NewRecord {
            timestamp,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Vec::new(),
        });
    }
    builder.build().expect("at least one record")
}

/// Sends InitProducerId (`producer_id` -1 for a new producer) and returns the answer.
pub fn init_producer_id_response(
    client: &mut RawClient,
    producer_id: i64,
    producer_epoch: i32,
) -> pb::InitProducerIdResponse {
    let (correlation_id, mut request) =
        client.request(pb::request::Body::InitProducerId(pb::InitProducerIdRequest {
            producer_id,
            producer_epoch,
        }));
    // The raw client's API table predates InitProducerId: name the API here.
    if let Some(header) = request.header.as_mut() {
        header.api = pb::ApiKey::InitProducerId as i32;
    }
    client.send(&request).expect("sending InitProducerId");
    let response = client.wait_for(correlation_id).expect("InitProducerId");
    match response.body.clone() {
        Some(pb::response::Body::InitProducerId(body)) => body,
        other => panic!(
            "InitProducerId answered with {other:?}: {:?} {}",
            response.error(),
            response.error_message
        ),
    }
}

/// A new producer's id and epoch; panics unless the broker hands one out.
pub fn init_producer_id(client: &mut RawClient) -> (i64, i16) {
    let body = init_producer_id_response(client, -1, -1);
    assert_eq!(body.error(), ErrorCode::None, "{body:?}");
    (
        body.producer_id,
        i16::try_from(body.producer_epoch).expect("epoch fits i16"),
    )
}
