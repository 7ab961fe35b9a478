//! JoinGroup 0-9: a classic member joins (or rejoins) a group; the answer may wait for the
//! rest of the group (bounded by the rebalance timeout, see `groups::classic`).

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::group_common::{client_of, core_of, error_code, later, str_bytes, text, ClientInfo};
use super::{Core, Reply, Request};
use crate::error::GroupError;
use crate::groups::classic::{JoinRequest, JoinResponse, Protocol};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: JoinGroupRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    let client = client_of(&request);
    later(version, answer(core, client, version, asked))
}

pub(crate) async fn answer(
    core: Arc<Core>,
    client: ClientInfo,
    version: i16,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let member_id = text(&request.member_id);
    // A negative timeout is out of range, as is 0 (the coordinator refuses both).
    let session_timeout_ms = u32::try_from(request.session_timeout_ms).unwrap_or(0);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout_ms = if version >= 1 {
        u32::try_from(request.rebalance_timeout_ms).unwrap_or(session_timeout_ms)
    } else {
        session_timeout_ms
    };
    let join = JoinRequest {
        group_id: text(&request.group_id.0),
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.as_ref().map(text),
        protocol_type: text(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|protocol| Protocol {
                name: text(&protocol.name),
                metadata: protocol.metadata.to_vec(),
            })
            .collect(),
        session_timeout_ms,
        rebalance_timeout_ms,
        require_known_member: version >= 4,
        client_id: client.client_id,
        client_host: client.host,
    };
    match core.classic_join(join).await {
        Ok(reply) => response(version, reply),
        Err(GroupError::MemberIdRequired { member_id }) => failed(
            version,
            error_code(&GroupError::MemberIdRequired {
                member_id: String::new(),
            }),
            member_id,
        ),
        Err(error) => {
            tracing::debug!(%error, "join group refused");
            failed(version, error_code(&error), member_id)
        }
    }
}

fn response(version: i16, reply: JoinResponse) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.generation_id = reply.generation;
    // Nullable from v7; before it, Kafka sends an empty string.
    response.protocol_name = match (reply.protocol_name, version >= 7) {
        (Some(name), _) => Some(str_bytes(name)),
        (None, true) => None,
        (None, false) => Some(str_bytes("")),
    };
    if version >= 7 {
        response.protocol_type = reply.protocol_type.map(str_bytes);
    }
    response.leader = str_bytes(reply.leader_id);
    response.member_id = str_bytes(reply.member_id);
    response.skip_assignment = version >= 9 && reply.skip_assignment;
    response.members = reply
        .members
        .into_iter()
        .map(|member| {
            let mut out = JoinGroupResponseMember::default();
            out.member_id = str_bytes(member.member_id);
            if version >= 5 {
                out.group_instance_id = member.instance_id.map(str_bytes);
            }
            out.metadata = member.metadata.into();
            out
        })
        .collect();
    response
}

fn failed(version: i16, code: i16, member_id: String) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = code;
    response.generation_id = -1;
    response.protocol_name = (version < 7).then(|| str_bytes(""));
    response.leader = str_bytes("");
    response.member_id = str_bytes(member_id);
    response
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;
    use crate::groups::classic::JoinedMember;

    #[test]
    fn answers_encode_at_every_version() {
        for version in 0..=9 {
            let reply = JoinResponse {
                generation: 3,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader_id: "a".into(),
                member_id: "a".into(),
                members: vec![JoinedMember {
                    member_id: "a".into(),
                    instance_id: Some("i".into()),
                    metadata: vec![1, 2],
                }],
                skip_assignment: true,
            };
            let mut buffer = BytesMut::new();
            response(version, reply)
                .encode(&mut buffer, version)
                .unwrap_or_else(|error| panic!("v{version}: {error}"));
            let mut buffer = BytesMut::new();
            failed(version, 79, "m".into())
                .encode(&mut buffer, version)
                .unwrap_or_else(|error| panic!("v{version} failure: {error}"));
        }
    }
}
