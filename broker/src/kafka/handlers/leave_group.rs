//! LeaveGroup 0-5: members leave a classic group (one before v3, a batch by member or
//! instance id from v3); the rest rebalance.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::group_common::{core_of, error_code, later, str_bytes, text};
use super::{Core, Reply, Request};
use crate::groups::classic::MemberRef;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: LeaveGroupRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    later(version, answer(core, version, asked))
}

pub(crate) async fn answer(core: Arc<Core>, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<MemberRef> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| MemberRef {
                member_id: text(&member.member_id),
                instance_id: member.group_instance_id.as_ref().map(text),
            })
            .collect()
    } else {
        vec![MemberRef {
            member_id: text(&request.member_id),
            instance_id: None,
        }]
    };
    let group_id = text(&request.group_id.0);
    let left = core.classic_leave(&group_id, &members).await;
    let mut response = LeaveGroupResponse::default();
    match left {
        Err(error) => response.error_code = error_code(&error),
        Ok(outcomes) if version >= 3 => {
            response.members = members
                .into_iter()
                .zip(outcomes)
                .map(|(member, outcome)| {
                    let mut out = MemberResponse::default();
                    out.member_id = str_bytes(member.member_id);
                    out.group_instance_id = member.instance_id.map(str_bytes);
                    if let Err(error) = outcome {
                        out.error_code = error_code(&error);
                    }
                    out
                })
                .collect();
        }
        Ok(outcomes) => {
            if let Some(Err(error)) = outcomes.first() {
                response.error_code = error_code(error);
            }
        }
    }
    response
}
