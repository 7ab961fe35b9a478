//! InitProducerId (0-4): an idempotent producer's id and epoch, from the same producer-id
//! state as native producers (`Core::init_producer_id` holds the epoch rules). A
//! `transactional_id` gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED: transactions do not exist
//! yet, and this tells a transactional client so at once.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{encode_response, Reply, Request};
use crate::core::ErrorCode;
use crate::kafka::error::kafka_code;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: InitProducerIdRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let refused = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if asked.transactional_id.is_some() {
        let response = refused.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
        return Reply::encode(&response, version);
    }
    // v0-2 carry no id: always a new producer.
    let (producer_id, producer_epoch) = if version >= 3 {
        (asked.producer_id.0, i32::from(asked.producer_epoch))
    } else {
        (-1, -1)
    };
    let decided = request
        .context
        .net
        .core
        .init_producer_id(producer_id, producer_epoch);
    Reply::Later(Box::pin(async move {
        let response = match decided.answer().await {
            Ok(granted) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(granted.producer_id))
                .with_producer_epoch(granted.producer_epoch),
            Err(error) => refused.with_error_code(kafka_code(error.code)),
        };
        encode_response(&response, version)
    }))
}
