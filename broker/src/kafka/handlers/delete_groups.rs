//! DeleteGroups 0-2: deletes groups without members, with their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_common::{core_of, error_code, later, text};
use super::{Core, Reply, Request};
use crate::error::GroupError;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: DeleteGroupsRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    later(version, answer(core, asked))
}

pub(crate) async fn answer(core: Arc<Core>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
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
