//! ListGroups: every group this broker coordinates (with members or committed offsets).

use std::sync::Arc;

use tidelog_proto::pb;

use super::Outcome;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, _request: pb::ListGroupsRequest) -> Outcome {
    let groups = context.core.groups.with(|coordinator| {
        coordinator
            .groups()
            .map(|group| pb::list_groups_response::Group {
                group_id: group.id.clone(),
                state: group.state().as_str().to_owned(),
                // Bounded by members_per_group_max, far below u32::MAX.
                members: u32::try_from(group.members.len()).unwrap_or(u32::MAX),
            })
            .collect()
    });
    Outcome::Reply(pb::response::Body::ListGroups(pb::ListGroupsResponse { groups }))
}
