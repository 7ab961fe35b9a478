//! SaveSnapshot: the native request translated into `Core::save_snapshot` (the stream and
//! offset checks, the companion topic created on first use, the durable append) and where the
//! snapshot landed back.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::snapshots::{SaveSnapshotInput, SavedSnapshot};
use crate::core::CoreError;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::SaveSnapshotRequest) -> Outcome {
    let core = context.core.clone();
    let input = SaveSnapshotInput {
        topic: request.topic,
        key: request.key,
        at_offset: request.at_offset,
        snapshot: request.snapshot,
    };
    Outcome::Deferred(Box::pin(async move {
        let saved = core.save_snapshot(input).await;
        Some(pb::response::Body::SaveSnapshot(answer(saved)))
    }))
}

fn answer(saved: Result<SavedSnapshot, CoreError>) -> pb::SaveSnapshotResponse {
    match saved {
        Ok(saved) => pb::SaveSnapshotResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            snapshot_topic: saved.snapshot_topic,
            partition: saved.partition,
            offset: saved.offset,
        },
        Err(error) => {
            let (code, message) = wire(error);
            pb::SaveSnapshotResponse {
                error: code as i32,
                message,
                offset: -1,
                ..pb::SaveSnapshotResponse::default()
            }
        }
    }
}
