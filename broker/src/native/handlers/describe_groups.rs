//! DescribeGroups: state, epochs, members with their assignments, and per partition of the
//! subscribed and committed topics: committed offset, log end offset, lag and owner (all
//! computed by `Core::describe_group`).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::consumer_group_heartbeat::from_assignment;
use super::Outcome;
use crate::core::groups::GroupDescription;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DescribeGroupsRequest) -> Outcome {
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| match context.core.describe_group(&group_id) {
            Ok(description) => describe(description),
            Err(error) => {
                let (code, message) = wire(error);
                pb::describe_groups_response::Group {
                    group_id,
                    error: code as i32,
                    message,
                    state: "dead".into(),
                    ..pb::describe_groups_response::Group::default()
                }
            }
        })
        .collect();
    Outcome::Reply(pb::response::Body::DescribeGroups(pb::DescribeGroupsResponse {
        groups,
    }))
}

fn describe(description: GroupDescription) -> pb::describe_groups_response::Group {
    let group = description.group;
    let members = group
        .members
        .values()
        .map(|member| pb::describe_groups_response::Member {
            member_id: member.id.clone(),
            instance_id: member.instance_id.clone().unwrap_or_default(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
            member_epoch: member.epoch,
            subscribed_topics: member.subscription.iter().cloned().collect(),
            assignment: from_assignment(&member.assigned),
        })
        .collect();
    let offsets = description
        .offsets
        .into_iter()
        .map(|lag| pb::describe_groups_response::PartitionOffset {
            member_id: lag.owner.unwrap_or_default(),
            topic: lag.topic,
            partition: lag.partition,
            committed_offset: lag.committed_offset,
            log_end_offset: lag.log_end_offset,
            lag: lag.lag,
        })
        .collect();
    pb::describe_groups_response::Group {
        state: group.state().as_str().into(),
        group_epoch: group.epoch,
        group_id: group.id,
        error: ErrorCode::None as i32,
        message: String::new(),
        members,
        offsets,
    }
}
