//! DescribeGroups: state, epochs, members with their assignments, and per partition of the
//! subscribed and committed topics: committed offset, log end offset, lag and owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::consumer_group_heartbeat::from_assignment;
use super::{group_error, Outcome};
use crate::error::GroupError;
use crate::groups::group::{Group, GroupProtocol};
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::DescribeGroupsRequest) -> Outcome {
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            // Copy what is needed under the lock; log offsets are read after it is released.
            let found = context.core.groups.with(|coordinator| {
                coordinator.check_group_id(&group_id)?;
                coordinator
                    .group(&group_id)
                    .cloned()
                    .ok_or_else(|| GroupError::GroupNotFound(group_id.clone()))
            });
            match found {
                Ok(group) => describe(context, &group),
                Err(error) => {
                    let (code, message) = group_error(&error);
                    pb::describe_groups_response::Group {
                        group_id,
                        error: code as i32,
                        message,
                        state: "dead".into(),
                        ..pb::describe_groups_response::Group::default()
                    }
                }
            }
        })
        .collect();
    Outcome::Reply(pb::response::Body::DescribeGroups(pb::DescribeGroupsResponse {
        groups,
    }))
}

fn describe(context: &ListenerContext, group: &Group) -> pb::describe_groups_response::Group {
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
    // Every partition of every subscribed topic, plus every committed partition.
    let mut partitions: BTreeSet<(String, u32)> = group.offsets.keys().cloned().collect();
    let subscribed = group.all_subscribed_topics();
    let mut log_ends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for topic in subscribed
        .iter()
        .cloned()
        .chain(group.offsets.keys().map(|(t, _)| t.clone()))
    {
        if log_ends.contains_key(&topic) {
            continue;
        }
        let ends: Vec<i64> = context
            .core
            .registry
            .get(&topic)
            .map(|found| {
                // -1 (unknown) for an offline partition, as for one without a log end.
                found
                    .partitions
                    .iter()
                    .map(|slot| slot.log().map_or(-1, |log| log.high_watermark()))
                    .collect()
            })
            .unwrap_or_default();
        if subscribed.contains(&topic) {
            for partition in 0..ends.len() {
                // Partition counts are bounded by partitions_per_topic_max, a u32.
                partitions.insert((topic.clone(), u32::try_from(partition).unwrap_or(u32::MAX)));
            }
        }
        log_ends.insert(topic, ends);
    }
    let offsets = partitions
        .into_iter()
        .map(|(topic, partition)| {
            let committed = group
                .offsets
                .get(&(topic.clone(), partition))
                .map_or(-1, |committed| committed.offset);
            let log_end = log_ends
                .get(&topic)
                .and_then(|ends| ends.get(partition as usize))
                .copied()
                .unwrap_or(-1);
            let lag = if committed >= 0 && log_end >= 0 {
                (log_end - committed).max(0)
            } else {
                -1
            };
            pb::describe_groups_response::PartitionOffset {
                member_id: group.owner_id(&topic, partition).unwrap_or_default(),
                topic,
                partition,
                committed_offset: committed,
                log_end_offset: log_end,
                lag,
            }
        })
        .collect();
    pb::describe_groups_response::Group {
        group_id: group.id.clone(),
        error: ErrorCode::None as i32,
        message: String::new(),
        state: group.state().as_str().into(),
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
        members,
        offsets,
    }
}
