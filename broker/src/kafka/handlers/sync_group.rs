//! SyncGroup 0-5: the leader hands in the assignment; every member gets its part (followers
//! wait for the leader, bounded by the rebalance timeout).

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::group_common::{core_of, error_code, later, str_bytes, text};
use super::{Core, Reply, Request};
use crate::groups::classic::SyncRequest;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: SyncGroupRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    later(version, answer(core, version, asked))
}

pub(crate) async fn answer(core: Arc<Core>, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        instance_id: request.group_instance_id.as_ref().map(text),
        generation: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(text),
        protocol_name: request.protocol_name.as_ref().map(text),
        assignments: request
            .assignments
            .iter()
            .map(|assignment| (text(&assignment.member_id), assignment.assignment.to_vec()))
            .collect(),
    };
    let synced = core.classic_sync(sync).await;
    let mut response = SyncGroupResponse::default();
    match synced {
        Ok(reply) => {
            if version >= 5 {
                response.protocol_type = reply.protocol_type.map(str_bytes);
                response.protocol_name = reply.protocol_name.map(str_bytes);
            }
            response.assignment = reply.assignment.into();
        }
        Err(error) => {
            tracing::debug!(%error, "sync group refused");
            response.error_code = error_code(&error);
        }
    }
    response
}
