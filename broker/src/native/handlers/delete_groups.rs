//! DeleteGroups: delete empty groups together with their committed offsets
//! (`Core::delete_groups`).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DeleteGroupsRequest) -> Outcome {
    let core = context.core.clone();
    Outcome::Deferred(Box::pin(async move {
        // Err: the blocking task failed (logged); the client's request times out, as before.
        let deleted = core.delete_groups(request.group_ids).await.ok()?;
        let results = deleted
            .into_iter()
            .map(|(group_id, deleted)| {
                let (code, message) = match deleted {
                    Ok(()) => (ErrorCode::None, String::new()),
                    Err(error) => wire(error),
                };
                pb::delete_groups_response::Result {
                    group_id,
                    error: code as i32,
                    message,
                }
            })
            .collect();
        Some(pb::response::Body::DeleteGroups(pb::DeleteGroupsResponse {
            results,
        }))
    }))
}
