//! InitProducerId: the native request translated into `Core::init_producer_id`, which holds
//! the epoch rules.

use std::sync::Arc;

use tidelog_proto::batch::NO_PRODUCER_ID;
use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::producer_ids::ProducerIdAndEpoch;
use crate::core::{CoreError, Decided};
use crate::native::error::error_code;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::InitProducerIdRequest) -> Outcome {
    match context
        .core
        .init_producer_id(request.producer_id, request.producer_epoch)
    {
        Decided::Ready(ready) => Outcome::Reply(response(ready)),
        Decided::Pending(pending) => {
            Outcome::Deferred(Box::pin(async move { Some(response(pending.await)) }))
        }
    }
}

fn response(answer: Result<ProducerIdAndEpoch, CoreError>) -> pb::response::Body {
    pb::response::Body::InitProducerId(match answer {
        Ok(ids) => pb::InitProducerIdResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            producer_id: ids.producer_id,
            producer_epoch: i32::from(ids.producer_epoch),
        },
        Err(error) => pb::InitProducerIdResponse {
            error: error_code(error.code) as i32,
            message: error.message,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
        },
    })
}
