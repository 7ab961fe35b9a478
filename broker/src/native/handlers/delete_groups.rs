//! DeleteGroups: delete empty groups together with their committed offsets.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::{blocking, group_error, Outcome};
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DeleteGroupsRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let results = blocking(move || {
            request
                .group_ids
                .into_iter()
                .map(|group_id| match context.core.groups.delete(&group_id) {
                    Ok(()) => {
                        tracing::info!(group = %group_id, "consumer group deleted");
                        pb::delete_groups_response::Result {
                            group_id,
                            error: ErrorCode::None as i32,
                            message: String::new(),
                        }
                    }
                    Err(error) => {
                        let (code, message) = group_error(&error);
                        pb::delete_groups_response::Result {
                            group_id,
                            error: code as i32,
                            message,
                        }
                    }
                })
                .collect()
        })
        .await?;
        Some(pb::response::Body::DeleteGroups(pb::DeleteGroupsResponse {
            results,
        }))
    }))
}
