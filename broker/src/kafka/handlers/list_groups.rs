//! ListGroups 0-4: every group this broker coordinates (v4: only those in the states asked
//! for, matched case-insensitively as Kafka does).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::group_common::{core_of, kafka_state, protocol_type, str_bytes};
use super::{Core, Reply, Request};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: ListGroupsRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    Reply::encode(&answer(&core, version, &asked), version)
}

pub(crate) fn answer(core: &Core, version: i16, request: &ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        request
            .states_filter
            .iter()
            .map(|state| state.as_str().to_ascii_lowercase())
            .collect()
    } else {
        Vec::new()
    };
    let mut response = ListGroupsResponse::default();
    response.groups = core.groups.with(|coordinator| {
        coordinator
            .groups()
            .filter(|group| states.is_empty() || states.contains(&kafka_state(group).to_ascii_lowercase()))
            .map(|group| {
                let mut listed = ListedGroup::default();
                listed.group_id = GroupId(str_bytes(group.id.clone()));
                listed.protocol_type = str_bytes(protocol_type(group));
                if version >= 4 {
                    listed.group_state = str_bytes(kafka_state(group));
                }
                listed
            })
            .collect()
    });
    response
}
