//! DescribeGroups: state, epochs, members with their assignments, and per partition of the
//! subscribed and committed topics: committed offset, log end offset, lag and owner (all
//! computed by `Core::describe_group`).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::consumer_group_heartbeat::from_assignment;
use super::Outcome;
use crate::core::groups::GroupDescription;
use crate::groups::group::GroupProtocol;
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
    // Members of either protocol (classic ones with what their consumer-protocol payloads
    // decode to).
    let members = group
        .member_views()
        .into_iter()
        .map(|member| pb::describe_groups_response::Member {
            assignment: from_assignment(&member.assigned),
            member_id: member.id,
            instance_id: member.instance_id.unwrap_or_default(),
            client_id: member.client_id,
            client_host: member.client_host,
            member_epoch: member.epoch,
            subscribed_topics: member.subscription.into_iter().collect(),
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
        // A classic group's epoch is its generation.
        group_epoch: group
            .classic_in_use()
            .map_or(group.epoch, |classic| classic.generation),
        protocol: match group.protocol() {
            Some(GroupProtocol::Consumer) => "consumer".into(),
            Some(GroupProtocol::Classic) => "classic".into(),
            None => String::new(),
        },
        protocol_name: group
            .classic_in_use()
            .and_then(|classic| classic.protocol_name.clone())
            .unwrap_or_default(),
        group_id: group.id,
        error: ErrorCode::None as i32,
        message: String::new(),
        members,
        offsets,
    }
}
