//! WaitGroupOffset: the native request translated into `Core::wait_for_group_offset` (woken
//! by the group's commit, bounded in time and in waiters) and the answer back.

use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::WaitGroupOffsetRequest) -> Outcome {
    let core = context.core.clone();
    Outcome::Deferred(Box::pin(async move {
        let waited = core
            .wait_for_group_offset(
                request.group_id,
                request.topic,
                request.partition,
                request.offset,
                Duration::from_millis(u64::from(request.timeout_ms)),
            )
            .await;
        let response = match waited {
            Ok(outcome) => pb::WaitGroupOffsetResponse {
                error: ErrorCode::None as i32,
                message: String::new(),
                committed: outcome.committed,
                reached: outcome.reached,
            },
            Err(error) => {
                let (code, message) = wire(error);
                pb::WaitGroupOffsetResponse {
                    error: code as i32,
                    message,
                    committed: -1,
                    reached: false,
                }
            }
        };
        Some(pb::response::Body::WaitGroupOffset(response))
    }))
}
