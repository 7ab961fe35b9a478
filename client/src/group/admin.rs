//! Group administration on [`Admin`]: list, describe (members, committed offsets, lag), reset
//! offsets and delete; plus the description types.

use std::collections::BTreeMap;
use std::fmt;

use tidelog_proto::pb;

use crate::admin::{list_offsets, Admin};
use crate::consumer::Seek;
use crate::error::{Error, Result};
use crate::group::membership::from_wire;
use crate::group::offsets::{self, group_error, wrong_body};
use crate::group::reconcile::TopicPartition;
use crate::types::{ErrorCode, Offset, OffsetSpec, PartitionId, TopicName};
use crate::wire;

/// A group's state as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupState {
    /// No members (committed offsets may remain).
    Empty,
    /// The coordinator is computing a new assignment.
    Assigning,
    /// Members are moving to a new assignment (revoking, starting).
    Reconciling,
    /// Every member owns its target assignment.
    Stable,
    /// Being deleted, or gone.
    Dead,
    /// A state this client does not know, kept for display.
    Other(String),
}

impl GroupState {
    fn from_wire(state: &str) -> Self {
        match state {
            "empty" => Self::Empty,
            "assigning" => Self::Assigning,
            "reconciling" => Self::Reconciling,
            "stable" => Self::Stable,
            "dead" => Self::Dead,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty",
            Self::Assigning => "assigning",
            Self::Reconciling => "reconciling",
            Self::Stable => "stable",
            Self::Dead => "dead",
            Self::Other(other) => other,
        })
    }
}

/// One group in [`Admin::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    group_id: String,
    state: GroupState,
    members: u32,
}

impl GroupListing {
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> &GroupState {
        &self.state
    }

    pub fn members(&self) -> u32 {
        self.members
    }
}

/// A member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    member_epoch: i32,
    subscribed_topics: Vec<String>,
    assignment: Vec<TopicPartition>,
}

impl GroupMember {
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_host(&self) -> &str {
        &self.client_host
    }

    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    pub fn subscribed_topics(&self) -> &[String] {
        &self.subscribed_topics
    }

    /// The partitions it owns, sorted.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }
}

/// A partition's committed offset and lag in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionOffset {
    topic: TopicName,
    partition: PartitionId,
    committed: Option<Offset>,
    log_end_offset: Offset,
    lag: Option<i64>,
    member_id: Option<String>,
}

impl GroupPartitionOffset {
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// `None` when nothing is committed.
    pub fn committed(&self) -> Option<Offset> {
        self.committed
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log_end_offset
    }

    /// Log end minus committed; `None` when nothing is committed.
    pub fn lag(&self) -> Option<i64> {
        self.lag
    }

    /// The member that owns it now, if any.
    pub fn member_id(&self) -> Option<&str> {
        self.member_id.as_deref()
    }
}

/// A group as [`Admin::describe_group`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    group_id: String,
    state: GroupState,
    group_epoch: i32,
    protocol: Option<String>,
    protocol_name: Option<String>,
    members: Vec<GroupMember>,
    offsets: Vec<GroupPartitionOffset>,
}

impl GroupDescription {
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> &GroupState {
        &self.state
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    /// "consumer" (the coordinator assigns) or "classic" (a Kafka client's JoinGroup group,
    /// whose leader assigns; the epoch is then its generation); `None` with no members.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// For a classic group, the protocol its members agreed on (the assignor, e.g. "range").
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn members(&self) -> &[GroupMember] {
        &self.members
    }

    /// One entry per partition, sorted by topic and partition.
    pub fn offsets(&self) -> &[GroupPartitionOffset] {
        &self.offsets
    }
}

impl Admin {
    /// Every consumer group, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let body = self
            .client()
            .request_any(pb::request::Body::ListGroups(pb::ListGroupsRequest {}))
            .await?;
        let pb::response::Body::ListGroups(response) = body else {
            return Err(wrong_body("list groups"));
        };
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|g| GroupListing {
                state: GroupState::from_wire(&g.state),
                group_id: g.group_id,
                members: g.members,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// A group's state, members and per-partition committed offset, log end and lag.
    ///
    /// # Errors
    /// [`Error::GroupNotFound`] when there is no such group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let body = self
            .client()
            .request_any(pb::request::Body::DescribeGroups(pb::DescribeGroupsRequest {
                group_ids: vec![group.to_owned()],
            }))
            .await
            .map_err(|error| group_error(group, error))?;
        let pb::response::Body::DescribeGroups(response) = body else {
            return Err(wrong_body("describe groups"));
        };
        let described = response
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| Error::Protocol {
                addr: String::new(),
                reason: format!("no description of group {group} in the answer"),
            })?;
        if let Some(code) = wire::error_code(described.error) {
            return Err(group_error(
                group,
                Error::Broker {
                    code,
                    message: described.message,
                },
            ));
        }
        let state = GroupState::from_wire(&described.state);
        if state == GroupState::Dead {
            return Err(Error::GroupNotFound {
                group: group.to_owned(),
            });
        }
        let mut offsets: Vec<GroupPartitionOffset> = described
            .offsets
            .into_iter()
            .map(|o| GroupPartitionOffset {
                topic: TopicName::new(&o.topic),
                partition: PartitionId::new(o.partition),
                committed: (o.committed_offset >= 0).then_some(Offset::new(o.committed_offset)),
                log_end_offset: Offset::new(o.log_end_offset),
                lag: (o.committed_offset >= 0).then_some(o.lag),
                member_id: (!o.member_id.is_empty()).then_some(o.member_id),
            })
            .collect();
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(GroupDescription {
            group_id: described.group_id,
            state,
            group_epoch: described.group_epoch,
            protocol: (!described.protocol.is_empty()).then_some(described.protocol),
            protocol_name: (!described.protocol_name.is_empty()).then_some(described.protocol_name),
            members: described
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    instance_id: (!m.instance_id.is_empty()).then_some(m.instance_id),
                    client_id: m.client_id,
                    client_host: m.client_host,
                    member_epoch: m.member_epoch,
                    subscribed_topics: m.subscribed_topics,
                    assignment: from_wire(m.assignment).into_iter().collect(),
                })
                .collect(),
            offsets,
        })
    }

    /// The group's committed offsets (the next offset to consume), every partition it has
    /// committed, sorted.
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, Offset)>> {
        let fetched = offsets::fetch(self.client(), group, None).await?;
        Ok(fetched
            .into_iter()
            .filter_map(|(key, offset)| offset.map(|o| (key, o)))
            .collect())
    }

    /// Sets the group's committed offsets for every partition of `topic`: to the log start,
    /// the log end, the first record at or after a timestamp (the end when none), or an
    /// offset (clamped into the log, as Kafka's tool does). Returns the new offsets.
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`] while the group has members (stop its consumers first);
    /// [`Error::UnknownTopicOrPartition`] for a missing topic.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: Seek,
    ) -> Result<Vec<(PartitionId, Offset)>> {
        // Checked first for a clear error before any lookups; the coordinator checks again,
        // atomically, when the commit arrives.
        match self.describe_group(group).await {
            Ok(description) if !description.members().is_empty() => {
                return Err(Error::GroupNotEmpty {
                    group: group.to_owned(),
                })
            }
            Ok(_) | Err(Error::GroupNotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        let client = self.client();
        // Fresh metadata: the partition count may have changed since it was cached.
        client.invalidate_topic(topic);
        let offsets: Vec<(PartitionId, Offset)> = match to {
            Seek::Earliest => found(list_offsets(client, topic, &[], OffsetSpec::Earliest).await?)?,
            Seek::Latest => found(list_offsets(client, topic, &[], OffsetSpec::Latest).await?)?,
            Seek::Timestamp(ms) => {
                let latest = found(list_offsets(client, topic, &[], OffsetSpec::Latest).await?)?;
                let at = list_offsets(client, topic, &[], OffsetSpec::Timestamp(ms)).await?;
                latest
                    .into_iter()
                    .map(|(partition, end)| {
                        let offset = at
                            .iter()
                            .find(|a| a.partition() == partition)
                            .and_then(|a| a.offset())
                            .unwrap_or(end);
                        (partition, offset)
                    })
                    .collect()
            }
            Seek::Offset(offset) => {
                let earliest = found(list_offsets(client, topic, &[], OffsetSpec::Earliest).await?)?;
                let latest = found(list_offsets(client, topic, &[], OffsetSpec::Latest).await?)?;
                earliest
                    .into_iter()
                    .zip(latest)
                    .map(|((partition, start), (_, end))| (partition, offset.clamp(start, end.max(start))))
                    .collect()
            }
        };
        let name = TopicName::new(topic);
        let commit: BTreeMap<TopicPartition, Offset> =
            offsets.iter().map(|(p, o)| ((name.clone(), *p), *o)).collect();
        offsets::commit_as_admin(client, group, &commit)
            .await
            .map_err(|error| match error.code() {
                // The admin commit is refused this way when a member joined since the check.
                Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration) => Error::GroupNotEmpty {
                    group: group.to_owned(),
                },
                _ => error,
            })?;
        Ok(offsets)
    }

    /// Deletes a group and its committed offsets.
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`] while it has members; [`Error::GroupNotFound`].
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let body = self
            .client()
            .request_any(pb::request::Body::DeleteGroups(pb::DeleteGroupsRequest {
                group_ids: vec![group.to_owned()],
            }))
            .await
            .map_err(|error| group_error(group, error))?;
        let pb::response::Body::DeleteGroups(response) = body else {
            return Err(wrong_body("delete groups"));
        };
        let result = response
            .results
            .into_iter()
            .find(|r| r.group_id == group)
            .ok_or_else(|| Error::Protocol {
                addr: String::new(),
                reason: format!("no result for group {group}"),
            })?;
        match wire::error_code(result.error) {
            None => Ok(()),
            Some(code) => Err(group_error(
                group,
                Error::Broker {
                    code,
                    message: result.message,
                },
            )),
        }
    }
}

/// The offsets of a latest/earliest lookup, which always finds one.
fn found(answers: Vec<crate::admin::PartitionOffset>) -> Result<Vec<(PartitionId, Offset)>> {
    answers
        .into_iter()
        .map(|a| {
            a.offset()
                .map(|o| (a.partition(), o))
                .ok_or_else(|| Error::Protocol {
                    addr: String::new(),
                    reason: format!("no offset for partition {}", a.partition()),
                })
        })
        .collect()
}
