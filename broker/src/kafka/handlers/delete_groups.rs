//! DeleteGroups 0-2: deletes groups without members, with their committed offsets
//! (`Core::delete_groups`).

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_common::{core_of, later, text};
use super::{Core, Reply, Request};
use crate::core::CoreError;

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
    let outcomes: Vec<Result<(), CoreError>> = match core.delete_groups(ids).await {
        Ok(outcomes) => outcomes.into_iter().map(|(_, outcome)| outcome).collect(),
        // The whole request failed (logged): every group carries its error.
        Err(error) => vec![Err(error); request.groups_names.len()],
    };
    let mut response = DeleteGroupsResponse::default();
    response.results = request
        .groups_names
        .into_iter()
        .zip(outcomes)
        .map(|(group_id, outcome)| {
            let mut result = DeletableGroupResult::default();
            result.group_id = group_id;
            if let Err(error) = outcome {
                result.error_code = error.code.code();
            }
            result
        })
        .collect();
    response
}
