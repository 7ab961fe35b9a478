//! Committed offsets: the OffsetCommit and OffsetFetch requests, and the committer task that
//! sends a group consumer's commits one at a time, in the order they were asked for, so an
//! older commit can never land after a newer one.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tidelog_proto::pb;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::membership::{to_wire, MemberView};
use crate::group::reconcile::TopicPartition;
use crate::types::{ErrorCode, Offset, PartitionId, TopicName};
use crate::wire;

/// Member id of an admin commit (an offset reset).
const ADMIN_MEMBER_ID: &str = "";
/// Epoch of an admin commit; the coordinator accepts it only while the group has no members.
pub(crate) const ADMIN_EPOCH: i32 = -1;
/// Attempts at a member commit refused with STALE_MEMBER_EPOCH (the epoch moved on while it
/// was in flight) before the error is reported.
const STALE_EPOCH_ATTEMPTS_MAX: u32 = 3;
/// Wait for the heartbeat to bring a newer epoch before retrying a stale commit.
const STALE_EPOCH_WAIT: Duration = Duration::from_secs(1);

/// Commits `offsets` (the next offset to consume, per partition) for `group`.
///
/// # Errors
/// [`Error::GroupNotEmpty`] for an admin commit while the group has members; the first
/// partition's broker error otherwise.
pub(crate) async fn commit(
    client: &Client,
    group: &str,
    member_id: &str,
    member_epoch: i32,
    offsets: &BTreeMap<TopicPartition, Offset>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut topics: Vec<pb::offset_commit_request::Topic> = Vec::new();
    for ((topic, partition), offset) in offsets {
        let entry = pb::offset_commit_request::Partition {
            partition: partition.get(),
            offset: offset.get(),
            metadata: String::new(),
        };
        match topics.last_mut() {
            Some(last) if last.name == topic.as_str() => last.partitions.push(entry),
            _ => topics.push(pb::offset_commit_request::Topic {
                name: topic.to_string(),
                partitions: vec![entry],
            }),
        }
    }
    let request = pb::OffsetCommitRequest {
        group_id: group.to_owned(),
        member_id: member_id.to_owned(),
        member_epoch,
        topics,
    };
    let body = client
        .request_any(pb::request::Body::OffsetCommit(request))
        .await
        .map_err(|error| group_error(group, error))?;
    let pb::response::Body::OffsetCommit(response) = body else {
        return Err(wrong_body("offset commit"));
    };
    for topic in response.topics {
        for partition in topic.partitions {
            if let Some(code) = wire::error_code(partition.error) {
                let error = match code {
                    ErrorCode::UnknownTopicOrPartition => Error::UnknownTopicOrPartition {
                        topic: topic.name,
                        partition: Some(PartitionId::new(partition.partition)),
                    },
                    code => Error::Broker {
                        code,
                        message: partition.message,
                    },
                };
                return Err(group_error(group, error));
            }
        }
    }
    Ok(())
}

/// Commits as an admin (no member id, epoch -1).
pub(crate) async fn commit_as_admin(
    client: &Client,
    group: &str,
    offsets: &BTreeMap<TopicPartition, Offset>,
) -> Result<()> {
    commit(client, group, ADMIN_MEMBER_ID, ADMIN_EPOCH, offsets).await
}

/// The committed offsets of `group` for `partitions` (every committed partition when `None`).
/// A partition with nothing committed maps to `None`.
pub(crate) async fn fetch(
    client: &Client,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, Option<Offset>>> {
    let topics = match partitions {
        Some(partitions) => to_wire(&partitions.iter().cloned().collect()),
        None => Vec::new(),
    };
    let body = client
        .request_any(pb::request::Body::OffsetFetch(pb::OffsetFetchRequest {
            group_id: group.to_owned(),
            topics,
        }))
        .await
        .map_err(|error| group_error(group, error))?;
    let pb::response::Body::OffsetFetch(response) = body else {
        return Err(wrong_body("offset fetch"));
    };
    if let Some(code) = wire::error_code(response.error) {
        return Err(group_error(
            group,
            Error::Broker {
                code,
                message: response.message,
            },
        ));
    }
    let mut out = BTreeMap::new();
    for topic in response.topics {
        let name = TopicName::new(&topic.name);
        for partition in topic.partitions {
            if let Some(code) = wire::error_code(partition.error) {
                return Err(group_error(
                    group,
                    Error::Broker {
                        code,
                        message: String::new(),
                    },
                ));
            }
            let offset = (partition.offset >= 0).then_some(Offset::new(partition.offset));
            out.insert((name.clone(), PartitionId::new(partition.partition)), offset);
        }
    }
    Ok(out)
}

/// Gives the group codes their typed errors.
pub(crate) fn group_error(group: &str, error: Error) -> Error {
    match error.code() {
        Some(ErrorCode::NonEmptyGroup) => Error::GroupNotEmpty {
            group: group.to_owned(),
        },
        Some(ErrorCode::GroupIdNotFound) => Error::GroupNotFound {
            group: group.to_owned(),
        },
        _ => error,
    }
}

pub(crate) fn wrong_body(what: &str) -> Error {
    Error::Protocol {
        addr: String::new(),
        reason: format!("{what} request answered with another body"),
    }
}

/// A commit for the committer task. Without a reply channel (auto-commit) a failure is
/// logged.
#[derive(Debug)]
pub(crate) struct CommitJob {
    pub offsets: BTreeMap<TopicPartition, Offset>,
    pub reply: Option<oneshot::Sender<Result<()>>>,
}

/// The outcome of [`GroupConsumer::commit_async`](crate::GroupConsumer::commit_async): await
/// it for the result, or drop it (the commit still happens).
#[derive(Debug)]
pub struct CommitHandle {
    pub(crate) group: String,
    pub(crate) rx: oneshot::Receiver<Result<()>>,
}

impl Future for CommitHandle {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ConsumerClosed {
                group: self.group.clone(),
            })),
        }
    }
}

/// Sends the group consumer's commits in order, each under the member id and epoch current
/// when it is sent. Ends when the consumer is gone and the queue is drained.
pub(crate) async fn run_committer(
    client: Client,
    group: String,
    mut view_rx: watch::Receiver<MemberView>,
    mut jobs: mpsc::Receiver<CommitJob>,
) {
    while let Some(job) = jobs.recv().await {
        let result = commit_as_member(&client, &group, &mut view_rx, &job.offsets).await;
        match job.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(error) = result {
                    tracing::warn!(%group, %error, "auto-commit failed");
                }
            }
        }
    }
}

async fn commit_as_member(
    client: &Client,
    group: &str,
    view_rx: &mut watch::Receiver<MemberView>,
    offsets: &BTreeMap<TopicPartition, Offset>,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        let (member_id, epoch) = {
            let view = view_rx.borrow_and_update();
            (view.member_id.clone(), view.member_epoch)
        };
        if member_id.is_empty() {
            return Err(Error::Broker {
                code: ErrorCode::UnknownMemberId,
                message: format!("not a member of group {group} right now"),
            });
        }
        match commit(client, group, &member_id, epoch, offsets).await {
            Err(error)
                if error.code() == Some(ErrorCode::StaleMemberEpoch)
                    && attempt < STALE_EPOCH_ATTEMPTS_MAX =>
            {
                attempt += 1;
                // The heartbeat will bring the new epoch; if it does not in time, retry anyway.
                let _ = tokio::time::timeout(STALE_EPOCH_WAIT, view_rx.changed()).await;
            }
            other => return other,
        }
    }
}
