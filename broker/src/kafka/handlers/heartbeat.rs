//! Heartbeat 0-4: a classic member's session stays alive; REBALANCE_IN_PROGRESS tells it to
//! rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_common::{core_of, error_code, text};
use super::{Core, Reply, Request};
use crate::groups::classic::MemberRef;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: HeartbeatRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    Reply::encode(&answer(&core, &asked), version)
}

pub(crate) fn answer(core: &Core, request: &HeartbeatRequest) -> HeartbeatResponse {
    let member = MemberRef {
        member_id: text(&request.member_id),
        instance_id: request.group_instance_id.as_ref().map(text),
    };
    let outcome = core.classic_heartbeat(request.group_id.0.as_str(), &member, request.generation_id);
    let mut response = HeartbeatResponse::default();
    if let Err(error) = outcome {
        response.error_code = error_code(&error);
    }
    response
}
