//! InitProducerId: gives an idempotent producer its id and epoch. A new producer (id -1) gets
//! an id never handed out before (see `metadata::ProducerIdAllocator`) with epoch 0; a producer
//! that passes its id and epoch gets the next epoch, which fences its older incarnations on
//! every partition it then writes to. Past `i16::MAX` epochs it gets a fresh id instead. An id
//! not handed out yet cannot be bumped (it would collide with the producer that gets it).
//!
//! The broker keeps no per-producer record here: fencing happens in each partition's log
//! (`PartitionLog::append` refuses an epoch older than the newest it has seen).

use std::sync::Arc;

use tidelog_proto::batch::NO_PRODUCER_ID;
use tidelog_proto::pb::{self, ErrorCode};

use super::{blocking, without_paths, Outcome};
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::InitProducerIdRequest) -> Outcome {
    let reply = |error: ErrorCode, message: String, producer_id: i64, producer_epoch: i32| {
        pb::response::Body::InitProducerId(pb::InitProducerIdResponse {
            error: error as i32,
            message,
            producer_id,
            producer_epoch,
        })
    };
    if request.producer_id != NO_PRODUCER_ID {
        let valid_epoch = (0..=i32::from(i16::MAX)).contains(&request.producer_epoch);
        if request.producer_id < 0 || !valid_epoch {
            return Outcome::Reply(reply(
                ErrorCode::InvalidRequest,
                format!(
                    "producer id {} with epoch {} cannot be bumped",
                    request.producer_id, request.producer_epoch
                ),
                NO_PRODUCER_ID,
                -1,
            ));
        }
        if !context.core.producer_ids.may_have_handed_out(request.producer_id) {
            // A bump of an id this broker has not handed out yet would collide with the
            // producer that later gets it.
            return Outcome::Reply(reply(
                ErrorCode::InvalidRequest,
                format!(
                    "producer id {} was never handed out by this broker",
                    request.producer_id
                ),
                NO_PRODUCER_ID,
                -1,
            ));
        }
        if request.producer_epoch < i32::from(i16::MAX) {
            return Outcome::Reply(reply(
                ErrorCode::None,
                String::new(),
                request.producer_id,
                request.producer_epoch + 1,
            ));
        }
        // Epochs exhausted: like Kafka, start over with a new id.
    }
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let allocated = blocking(move || context.core.producer_ids.allocate()).await;
        Some(match allocated {
            Some(Ok(id)) => reply(ErrorCode::None, String::new(), id, 0),
            Some(Err(error)) => {
                tracing::error!(%error, "could not allocate a producer id");
                reply(
                    ErrorCode::KafkaStorageError,
                    without_paths(&error.to_string()),
                    NO_PRODUCER_ID,
                    -1,
                )
            }
            None => reply(
                ErrorCode::UnknownServerError,
                "producer id allocation failed".into(),
                NO_PRODUCER_ID,
                -1,
            ),
        })
    }))
}
