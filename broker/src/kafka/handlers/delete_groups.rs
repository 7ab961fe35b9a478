//! DeleteGroups 0-2: deletes groups without members, with their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_common::{error_code, text};
use super::Core;
use crate::error::GroupError;

pub(crate) async fn handle(core: Arc<Core>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let ids: Vec<String> = request.groups_names.iter().map(|id| text(&id.0)).collect();
    let writer = core.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        ids.iter().map(|id| writer.groups.delete(id)).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|error| {
        (0..request.groups_names.len())
            .map(|_| {
                Err(GroupError::InvalidRequest(format!(
                    "the delete did not finish: {error}"
                )))
            })
            .collect()
    });
    let mut response = DeleteGroupsResponse::default();
    response.results = request
        .groups_names
        .into_iter()
        .zip(outcomes)
        .map(|(group_id, outcome)| {
            let mut result = DeletableGroupResult::default();
            result.group_id = group_id;
            if let Err(error) = outcome {
                result.error_code = error_code(&error);
            }
            result
        })
        .collect();
    response
}
