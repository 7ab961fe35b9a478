//! ListGroups: every group this broker coordinates (`Core::list_groups`).

use std::sync::Arc;

use tidelog_proto::pb;

use super::Outcome;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, _request: pb::ListGroupsRequest) -> Outcome {
    let groups = context
        .core
        .list_groups()
        .into_iter()
        .map(|group| pb::list_groups_response::Group {
            group_id: group.group_id,
            state: group.state.to_owned(),
            members: group.members,
        })
        .collect();
    Outcome::Reply(pb::response::Body::ListGroups(pb::ListGroupsResponse { groups }))
}
