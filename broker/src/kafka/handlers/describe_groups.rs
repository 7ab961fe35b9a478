//! DescribeGroups 0-5: state, protocol and members of each group. A classic group's members
//! come with their metadata and assignment as sent; a KIP-848 group's with their assignment
//! encoded as the standard consumer protocol. An unknown group is "Dead" with no error, as
//! in Kafka before v6.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, DescribeGroupsResponse, TopicName,
};
use kafka_protocol::protocol::Encodable;

use super::group_common::{core_of, error_code, kafka_state, protocol_type, str_bytes, wire_partition};
use super::{operations, Core, Reply, Request};
use crate::groups::assignor::Assignment;
use crate::groups::group::Group;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: DescribeGroupsRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    Reply::encode(&answer(&core, version, &asked), version)
}

pub(crate) fn answer(core: &Core, version: i16, request: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let operations = if version >= 3 && request.include_authorized_operations {
        operations::GROUP
    } else {
        operations::NOT_REQUESTED
    };
    let mut response = DescribeGroupsResponse::default();
    response.groups = request
        .groups
        .iter()
        .map(|group_id| {
            // Copied under the lock, described after it is released.
            let found = core.groups.with(|coordinator| {
                coordinator
                    .check_group_id(group_id.0.as_str())
                    .map(|()| coordinator.group(group_id.0.as_str()).cloned())
            });
            let mut described = DescribedGroup::default();
            described.group_id = group_id.clone();
            described.authorized_operations = operations;
            match found {
                Ok(Some(group)) => describe(&group, version, &mut described),
                Ok(None) => described.group_state = str_bytes("Dead"),
                Err(error) => {
                    described.error_code = error_code(&error);
                    described.group_state = str_bytes("Dead");
                }
            }
            described
        })
        .collect();
    response
}

fn describe(group: &Group, version: i16, described: &mut DescribedGroup) {
    described.group_state = str_bytes(kafka_state(group));
    described.protocol_type = str_bytes(protocol_type(group));
    if let Some(classic) = group.classic_in_use() {
        described.protocol_data = str_bytes(classic.protocol_name.clone().unwrap_or_default());
        let mut members: Vec<_> = classic.members.values().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        described.members = members
            .into_iter()
            .map(|member| {
                let mut out = DescribedGroupMember::default();
                out.member_id = str_bytes(member.id.clone());
                if version >= 4 {
                    out.group_instance_id = member.instance_id.clone().map(str_bytes);
                }
                out.client_id = str_bytes(member.client_id.clone());
                out.client_host = str_bytes(member.client_host.clone());
                out.member_metadata =
                    Bytes::copy_from_slice(classic.chosen_metadata(member).unwrap_or_default());
                out.member_assignment = Bytes::copy_from_slice(&member.assignment);
                out
            })
            .collect();
        return;
    }
    described.members = group
        .member_views()
        .into_iter()
        .map(|member| {
            let mut out = DescribedGroupMember::default();
            out.member_id = str_bytes(member.id);
            if version >= 4 {
                out.group_instance_id = member.instance_id.map(str_bytes);
            }
            out.client_id = str_bytes(member.client_id);
            out.client_host = str_bytes(member.client_host);
            out.member_assignment = consumer_assignment(&member.assigned);
            out
        })
        .collect();
}

/// An assignment as the standard consumer protocol encodes it (version 0), for admin tools
/// that decode it; empty if it cannot be encoded (never for names the broker accepted).
fn consumer_assignment(assignment: &Assignment) -> Bytes {
    let mut encoded = ConsumerProtocolAssignment::default();
    encoded.assigned_partitions = assignment
        .iter()
        .map(|(topic, partitions)| {
            let mut out = TopicPartition::default();
            out.topic = TopicName(str_bytes(topic.clone()));
            out.partitions = partitions.iter().copied().map(wire_partition).collect();
            out
        })
        .collect();
    let mut buffer = BytesMut::new();
    buffer.extend_from_slice(&0i16.to_be_bytes());
    match encoded.encode(&mut buffer, 0) {
        Ok(()) => buffer.freeze(),
        Err(error) => {
            tracing::warn!(%error, "could not encode a member's assignment for DescribeGroups");
            Bytes::new()
        }
    }
}
