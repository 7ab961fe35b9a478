//! ConsumerGroupDescribe 0 (KIP-848): epochs, members, their assignments and targets, topics
//! by id and name. A classic group is not a consumer group here (GROUP_ID_NOT_FOUND), as in
//! Kafka.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};

use super::group_common::{core_of, error_code, str_bytes, wire_partition};
use super::{operations, Core, Reply, Request};
use crate::core::error::ErrorCode;
use crate::groups::assignor;
use crate::groups::group::{Group, GroupState};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: ConsumerGroupDescribeRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    Reply::encode(&answer(&core, &asked), version)
}

pub(crate) fn answer(core: &Core, request: &ConsumerGroupDescribeRequest) -> ConsumerGroupDescribeResponse {
    let operations = if request.include_authorized_operations {
        operations::GROUP
    } else {
        operations::NOT_REQUESTED
    };
    let mut response = ConsumerGroupDescribeResponse::default();
    response.groups = request
        .group_ids
        .iter()
        .map(|group_id| {
            let id = group_id.0.as_str();
            let found = core.groups.with(|coordinator| {
                coordinator
                    .check_group_id(id)
                    .map(|()| coordinator.group(id).cloned())
            });
            let mut described = DescribedGroup::default();
            described.group_id = group_id.clone();
            described.authorized_operations = operations;
            match found {
                Ok(Some(group)) if group.classic_in_use().is_none() => describe(core, &group, &mut described),
                Ok(Some(_)) => {
                    described.error_code = ErrorCode::GroupIdNotFound.code();
                    described.error_message =
                        Some(str_bytes(format!("group {id:?} is not a consumer group")));
                    described.group_state = str_bytes("Dead");
                }
                Ok(None) => {
                    described.error_code = ErrorCode::GroupIdNotFound.code();
                    described.error_message = Some(str_bytes(format!("group {id:?} does not exist")));
                    described.group_state = str_bytes("Dead");
                }
                Err(error) => {
                    described.error_code = error_code(&error);
                    described.error_message = Some(str_bytes(error.to_string()));
                    described.group_state = str_bytes("Dead");
                }
            }
            described
        })
        .collect();
    response
}

fn describe(core: &Core, group: &Group, described: &mut DescribedGroup) {
    described.group_state = str_bytes(match group.state() {
        GroupState::Empty => "Empty",
        GroupState::Stable => "Stable",
        _ => "Reconciling",
    });
    described.group_epoch = group.epoch;
    described.assignment_epoch = group.assignment_epoch;
    described.assignor_name = str_bytes("uniform");
    described.members = group
        .members
        .values()
        .map(|member| {
            let mut out = Member::default();
            out.member_id = str_bytes(member.id.clone());
            out.instance_id = member.instance_id.clone().map(str_bytes);
            out.member_epoch = member.epoch;
            out.client_id = str_bytes(member.client_id.clone());
            out.client_host = str_bytes(member.client_host.clone());
            out.subscribed_topic_names = member
                .subscription
                .iter()
                .map(|topic| TopicName(str_bytes(topic.clone())))
                .collect();
            out.assignment = assignment(core, &member.assigned);
            out.target_assignment = assignment(
                core,
                group
                    .target
                    .get(&member.id)
                    .unwrap_or(&assignor::Assignment::new()),
            );
            out
        })
        .collect();
}

fn assignment(core: &Core, assigned: &assignor::Assignment) -> Assignment {
    let mut out = Assignment::default();
    out.topic_partitions = assigned
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .filter_map(|(topic, partitions)| {
            let mut entry = TopicPartitions::default();
            entry.topic_id = core.registry.get(topic)?.id();
            entry.topic_name = TopicName(str_bytes(topic.clone()));
            entry.partitions = partitions.iter().copied().map(wire_partition).collect();
            Some(entry)
        })
        .collect();
    out
}
