//! The member's side of the group protocol (KIP-848 style): a pure state machine
//! ([`Membership`]) that builds heartbeat requests and digests responses, and the background
//! task that runs it. The task never touches partitions: it publishes what the coordinator
//! wants ([`MemberView`]) and sends what the application side reports it owns
//! ([`OwnedReport`]), both through `watch` channels, so neither side ever blocks the other.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::reconcile::TopicPartition;
use crate::types::{ErrorCode, PartitionId, TopicName};
use crate::wire;

/// Epoch of a heartbeat that leaves the group for good.
const LEAVE_EPOCH: i32 = -1;
/// Epoch of a static member's leave: it will come back within its session timeout.
const STATIC_LEAVE_EPOCH: i32 = -2;
/// Heartbeat interval until the coordinator names one.
const HEARTBEAT_INTERVAL_INITIAL: Duration = Duration::from_secs(1);
/// A coordinator-given interval below this is raised to it, so a bad value cannot spin us.
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(10);
/// Wait before retrying a failed heartbeat; the interval when shorter.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What the coordinator last told this member, as the application side needs it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberView {
    pub member_id: String,
    pub member_epoch: i32,
    /// The complete set to own; `None` until the first assignment after (re)joining.
    pub assignment: Option<Arc<BTreeSet<TopicPartition>>>,
    /// Bumped every time the member lost its partitions (fenced, unknown, session expired):
    /// the application side drops what it owns, without committing.
    pub lost_count: u64,
    /// Set, once, when membership failed for good; the task has stopped.
    pub fatal: Option<Arc<Error>>,
}

impl MemberView {
    fn same_as(&self, other: &MemberView) -> bool {
        self.member_id == other.member_id
            && self.member_epoch == other.member_epoch
            && self.assignment == other.assignment
            && self.lost_count == other.lost_count
            && self.fatal.is_some() == other.fatal.is_some()
    }
}

/// What the application side owns now. `lost_count` says which loss it has seen, so a report
/// made before a loss is not sent as the new member's owned set.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnedReport {
    pub owned: Arc<BTreeSet<TopicPartition>>,
    pub lost_count: u64,
}

/// A request to leave the group; the task answers with the leave heartbeat's outcome, then
/// stops.
#[derive(Debug)]
pub(crate) struct Leave {
    pub reply: oneshot::Sender<Result<()>>,
}

/// When to send the next heartbeat, or that membership has failed for good.
#[derive(Debug)]
pub(crate) enum Step {
    After(Duration),
    Fatal(Error),
}

/// How a failed heartbeat is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Transient: try again after a backoff.
    Retry,
    /// The coordinator no longer knows this member at this epoch: drop the partitions, join
    /// again with epoch 0.
    Rejoin,
    /// The coordinator refuses this member (bad group id, session timeout, instance id in use)
    /// or does not speak the API.
    Fatal,
}

fn classify(error: &Error) -> Failure {
    match error {
        Error::Broker { code, .. } => match code {
            ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId => Failure::Rejoin,
            ErrorCode::CoordinatorNotAvailable
            | ErrorCode::RequestTimedOut
            | ErrorCode::RebalanceInProgress
            | ErrorCode::StaleMemberEpoch
            | ErrorCode::StorageError
            | ErrorCode::UnknownServerError
            | ErrorCode::BrokerShuttingDown => Failure::Retry,
            _ => Failure::Fatal,
        },
        other if other.is_retriable() => Failure::Retry,
        _ => Failure::Fatal,
    }
}

/// Settings the membership needs.
#[derive(Debug, Clone)]
pub(crate) struct MembershipConfig {
    pub group: String,
    pub topics: Vec<TopicName>,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
}

/// The member's protocol state.
#[derive(Debug)]
pub(crate) struct Membership {
    config: MembershipConfig,
    member_id: String,
    member_epoch: i32,
    heartbeat_interval: Duration,
    assignment: Option<Arc<BTreeSet<TopicPartition>>>,
    lost_count: u64,
    last_success: Instant,
}

impl Membership {
    pub fn new(config: MembershipConfig, now: Instant) -> Self {
        Self {
            config,
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval: HEARTBEAT_INTERVAL_INITIAL,
            assignment: None,
            lost_count: 0,
            last_success: now,
        }
    }

    pub fn view(&self) -> MemberView {
        MemberView {
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            assignment: self.assignment.clone(),
            lost_count: self.lost_count,
            fatal: None,
        }
    }

    fn joining(&self) -> bool {
        self.member_epoch == 0
    }

    /// The next heartbeat. A join carries the subscription and owns nothing; later ones carry
    /// what the application side owns, which is how it acknowledges a revocation.
    pub fn request(&self, owned: &OwnedReport) -> pb::ConsumerGroupHeartbeatRequest {
        let joining = self.joining();
        let owned_partitions = if joining || owned.lost_count != self.lost_count {
            Vec::new()
        } else {
            to_wire(&owned.owned)
        };
        pb::ConsumerGroupHeartbeatRequest {
            group_id: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            instance_id: self.config.instance_id.clone(),
            has_subscription: joining,
            subscribed_topics: if joining {
                self.config.topics.iter().map(|t| t.to_string()).collect()
            } else {
                Vec::new()
            },
            session_timeout_ms: duration_ms(self.config.session_timeout),
            has_owned_partitions: true,
            owned_partitions,
        }
    }

    /// The heartbeat that leaves the group, when there is a membership to leave.
    pub fn leave_request(&self) -> Option<pb::ConsumerGroupHeartbeatRequest> {
        if self.member_id.is_empty() {
            return None;
        }
        let epoch = if self.config.instance_id.is_some() {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        Some(pb::ConsumerGroupHeartbeatRequest {
            group_id: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            instance_id: self.config.instance_id.clone(),
            ..Default::default()
        })
    }

    /// Forget the partitions: the next heartbeat joins again with epoch 0. The member id is
    /// kept (the coordinator treats a known id at epoch 0 as a rejoin, which is what lets a
    /// fenced static member back in); only an unknown id is dropped.
    fn lose(&mut self, forget_id: bool) {
        if forget_id {
            self.member_id.clear();
        }
        self.member_epoch = 0;
        self.assignment = None;
        self.lost_count += 1;
    }

    fn retry_backoff(&self) -> Duration {
        self.heartbeat_interval.min(RETRY_BACKOFF_MAX)
    }

    /// Digests a heartbeat's outcome and says when to send the next one.
    pub fn on_response(&mut self, result: Result<pb::ConsumerGroupHeartbeatResponse>, now: Instant) -> Step {
        let error = match result {
            Ok(response) => match wire::error_code(response.error) {
                None => {
                    if !response.member_id.is_empty() {
                        self.member_id = response.member_id;
                    }
                    self.member_epoch = response.member_epoch;
                    if response.heartbeat_interval_ms > 0 {
                        self.heartbeat_interval =
                            Duration::from_millis(u64::from(response.heartbeat_interval_ms))
                                .max(HEARTBEAT_INTERVAL_MIN);
                    }
                    if response.has_assignment {
                        self.assignment = Some(Arc::new(from_wire(response.assignment)));
                    }
                    self.last_success = now;
                    return Step::After(self.heartbeat_interval);
                }
                Some(code) => Error::Broker {
                    code,
                    message: response.message,
                },
            },
            Err(error) => error,
        };
        match classify(&error) {
            Failure::Rejoin => {
                let was_member = !self.joining();
                tracing::info!(group = %self.config.group, %error, "group membership lost; rejoining");
                self.lose(error.code() == Some(ErrorCode::UnknownMemberId));
                // Rejoin at once after losing a membership; a failing join waits.
                Step::After(if was_member {
                    Duration::ZERO
                } else {
                    self.retry_backoff()
                })
            }
            Failure::Retry => {
                // No heartbeat got through for a whole session: the coordinator has expired
                // us and may have handed our partitions on. Stop treating them as ours.
                if !self.joining() && now.duration_since(self.last_success) >= self.config.session_timeout {
                    tracing::warn!(group = %self.config.group, %error, "no heartbeat for a session timeout; partitions lost");
                    self.lose(false);
                } else {
                    tracing::debug!(group = %self.config.group, %error, "heartbeat failed; retrying");
                }
                Step::After(self.retry_backoff())
            }
            Failure::Fatal => Step::Fatal(error),
        }
    }

    /// Sends one heartbeat and digests its answer.
    pub async fn heartbeat(&mut self, client: &Client, owned: &OwnedReport) -> Step {
        let request = self.request(owned);
        let result = send(client, request, self.config.session_timeout).await;
        self.on_response(result, Instant::now())
    }

    /// Sends the leave heartbeat, if there is a membership to leave.
    pub async fn leave(&mut self, client: &Client) -> Result<()> {
        let Some(request) = self.leave_request() else {
            return Ok(());
        };
        let response = send(client, request, self.config.session_timeout).await?;
        self.member_id.clear();
        self.member_epoch = 0;
        match wire::error_code(response.error) {
            // Already gone (expired or fenced): leaving succeeded in effect.
            None | Some(ErrorCode::UnknownMemberId) | Some(ErrorCode::FencedMemberEpoch) => Ok(()),
            Some(code) => Err(Error::Broker {
                code,
                message: response.message,
            }),
        }
    }
}

async fn send(
    client: &Client,
    request: pb::ConsumerGroupHeartbeatRequest,
    timeout: Duration,
) -> Result<pb::ConsumerGroupHeartbeatResponse> {
    // Bounded by the session timeout: a heartbeat answered later than that is worthless.
    let body = tokio::time::timeout(
        timeout,
        client.request_any(pb::request::Body::ConsumerGroupHeartbeat(request)),
    )
    .await
    .map_err(|_| Error::Timeout {
        addr: String::new(),
        timeout,
    })??;
    match body {
        pb::response::Body::ConsumerGroupHeartbeat(response) => Ok(response),
        _ => Err(Error::Protocol {
            addr: String::new(),
            reason: "consumer group heartbeat answered with another body".into(),
        }),
    }
}

/// Runs the membership until told to leave, until the application side is dropped (then it
/// leaves too), or until membership fails for good.
pub(crate) async fn run(
    client: Client,
    mut membership: Membership,
    first_wait: Duration,
    mut owned_rx: watch::Receiver<OwnedReport>,
    view_tx: watch::Sender<MemberView>,
    mut leave_rx: mpsc::Receiver<Leave>,
) {
    let mut next = Instant::now() + first_wait;
    loop {
        tokio::select! {
            // Leaving wins over a due heartbeat.
            biased;
            leave = leave_rx.recv() => {
                let result = membership.leave(&client).await;
                if let Some(Leave { reply }) = leave {
                    let _ = reply.send(result);
                }
                return;
            }
            changed = owned_rx.changed() => {
                if changed.is_err() {
                    // The consumer was dropped without close(): leave so its partitions move on
                    // now rather than after the session timeout.
                    if let Err(error) = membership.leave(&client).await {
                        tracing::debug!(%error, "leave after drop failed");
                    }
                    return;
                }
                // Owned set changed (a revocation done): tell the coordinator at once.
            }
            () = tokio::time::sleep_until(next) => {}
        }
        let owned = owned_rx.borrow_and_update().clone();
        let step = membership.heartbeat(&client, &owned).await;
        let fatal = match step {
            Step::After(wait) => {
                next = Instant::now() + wait;
                None
            }
            Step::Fatal(error) => Some(Arc::new(error)),
        };
        let mut view = membership.view();
        view.fatal = fatal.clone();
        view_tx.send_if_modified(|current| {
            let modified = !current.same_as(&view);
            *current = view;
            modified
        });
        if let Some(error) = fatal {
            tracing::warn!(group = %membership.config.group, %error, "group membership failed");
            return;
        }
    }
}

fn duration_ms(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Groups partitions by topic, in order.
pub(crate) fn to_wire(partitions: &BTreeSet<TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for (topic, partition) in partitions {
        match out.last_mut() {
            Some(last) if last.topic == topic.as_str() => last.partitions.push(partition.get()),
            _ => out.push(pb::TopicPartitions {
                topic: topic.to_string(),
                partitions: vec![partition.get()],
            }),
        }
    }
    out
}

pub(crate) fn from_wire(topics: Vec<pb::TopicPartitions>) -> BTreeSet<TopicPartition> {
    topics
        .into_iter()
        .flat_map(|t| {
            let topic = TopicName::new(&t.topic);
            t.partitions
                .into_iter()
                .map(move |p| (topic.clone(), PartitionId::new(p)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(instance_id: Option<&str>) -> MembershipConfig {
        MembershipConfig {
            group: "g".into(),
            topics: vec![TopicName::new("t")],
            instance_id: instance_id.map(str::to_owned),
            session_timeout: Duration::from_secs(10),
        }
    }

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        (TopicName::new(topic), PartitionId::new(partition))
    }

    fn ok(
        member_id: &str,
        epoch: i32,
        assignment: Option<&[(&str, u32)]>,
    ) -> pb::ConsumerGroupHeartbeatResponse {
        pb::ConsumerGroupHeartbeatResponse {
            member_id: member_id.into(),
            member_epoch: epoch,
            heartbeat_interval_ms: 300,
            has_assignment: assignment.is_some(),
            assignment: assignment
                .map(|a| to_wire(&a.iter().map(|(t, p)| tp(t, *p)).collect()))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn failed(code: ErrorCode) -> pb::ConsumerGroupHeartbeatResponse {
        pb::ConsumerGroupHeartbeatResponse {
            error: code.code(),
            ..Default::default()
        }
    }

    fn owned(items: &[(&str, u32)], lost_count: u64) -> OwnedReport {
        OwnedReport {
            owned: Arc::new(items.iter().map(|(t, p)| tp(t, *p)).collect()),
            lost_count,
        }
    }

    #[test]
    fn join_sends_subscription_and_no_owned_partitions() {
        let membership = Membership::new(config(None), Instant::now());
        let request = membership.request(&owned(&[("t", 0)], 0));
        assert_eq!(request.member_id, "");
        assert_eq!(request.member_epoch, 0);
        assert!(request.has_subscription);
        assert_eq!(request.subscribed_topics, vec!["t".to_owned()]);
        assert!(request.owned_partitions.is_empty());
        assert_eq!(request.session_timeout_ms, 10_000);
    }

    #[test]
    fn accepted_join_keeps_id_epoch_interval_and_assignment_then_reports_owned() {
        let now = Instant::now();
        let mut membership = Membership::new(config(None), now);
        let step = membership.on_response(Ok(ok("m-1", 3, Some(&[("t", 0), ("t", 2)]))), now);
        assert!(matches!(step, Step::After(d) if d == Duration::from_millis(300)));
        let view = membership.view();
        assert_eq!((view.member_id.as_str(), view.member_epoch), ("m-1", 3));
        assert_eq!(
            view.assignment.as_deref().cloned(),
            Some([tp("t", 0), tp("t", 2)].into_iter().collect())
        );
        let request = membership.request(&owned(&[("t", 0)], 0));
        assert_eq!((request.member_id.as_str(), request.member_epoch), ("m-1", 3));
        assert!(!request.has_subscription);
        assert_eq!(
            request.owned_partitions,
            to_wire(&[tp("t", 0)].into_iter().collect())
        );

        // No assignment in the answer: the last one still stands.
        membership.on_response(Ok(ok("", 3, None)), now);
        assert_eq!(membership.view().assignment.map(|a| a.len()), Some(2));
        assert_eq!(membership.view().member_id, "m-1");
    }

    #[test]
    fn fencing_loses_the_partitions_and_rejoins_at_once() {
        let now = Instant::now();
        for code in [ErrorCode::FencedMemberEpoch, ErrorCode::UnknownMemberId] {
            let mut membership = Membership::new(config(None), now);
            membership.on_response(Ok(ok("m-1", 5, Some(&[("t", 1)]))), now);
            let step = membership.on_response(Ok(failed(code)), now);
            assert!(matches!(step, Step::After(Duration::ZERO)), "{code}");
            let view = membership.view();
            assert_eq!(view.lost_count, 1);
            assert!(view.assignment.is_none());
            let request = membership.request(&owned(&[("t", 1)], 0));
            let kept_id = if code == ErrorCode::UnknownMemberId {
                ""
            } else {
                "m-1"
            };
            assert_eq!((request.member_id.as_str(), request.member_epoch), (kept_id, 0));
            assert!(request.has_subscription, "a rejoin is a join");
            assert!(request.owned_partitions.is_empty());
        }
    }

    #[test]
    fn an_owned_report_from_before_a_loss_is_not_sent() {
        let now = Instant::now();
        let mut membership = Membership::new(config(None), now);
        membership.on_response(Ok(ok("m-1", 1, Some(&[("t", 0)]))), now);
        membership.on_response(Ok(failed(ErrorCode::FencedMemberEpoch)), now);
        membership.on_response(Ok(ok("m-2", 2, Some(&[("t", 1)]))), now);
        assert!(membership
            .request(&owned(&[("t", 0)], 0))
            .owned_partitions
            .is_empty());
        assert_eq!(
            membership.request(&owned(&[("t", 1)], 1)).owned_partitions.len(),
            1
        );
    }

    #[test]
    fn transient_failures_retry_and_expire_the_membership_after_a_session() {
        let start = Instant::now();
        let mut membership = Membership::new(config(None), start);
        membership.on_response(Ok(ok("m-1", 1, Some(&[("t", 0)]))), start);
        let step = membership.on_response(
            Ok(failed(ErrorCode::CoordinatorNotAvailable)),
            start + Duration::from_secs(1),
        );
        assert!(matches!(step, Step::After(d) if d == Duration::from_millis(300)));
        assert_eq!(membership.view().lost_count, 0);
        let closed = Err(Error::ConnectionClosed { addr: "x".into() });
        membership.on_response(closed, start + Duration::from_secs(10));
        assert_eq!(
            membership.view().lost_count,
            1,
            "a whole session without a heartbeat"
        );
        assert_eq!(membership.view().member_epoch, 0);
    }

    #[test]
    fn refusals_are_fatal() {
        let now = Instant::now();
        for code in [
            ErrorCode::InvalidGroupId,
            ErrorCode::InvalidSessionTimeout,
            ErrorCode::UnreleasedInstanceId,
            ErrorCode::UnsupportedVersion,
        ] {
            let mut membership = Membership::new(config(None), now);
            let step = membership.on_response(Ok(failed(code)), now);
            assert!(
                matches!(step, Step::Fatal(Error::Broker { code: c, .. }) if c == code),
                "{code}"
            );
        }
    }

    #[test]
    fn leave_uses_minus_one_and_static_members_minus_two() {
        let now = Instant::now();
        let mut dynamic = Membership::new(config(None), now);
        assert!(
            dynamic.leave_request().is_none(),
            "never joined: nothing to leave"
        );
        dynamic.on_response(Ok(ok("m-1", 4, None)), now);
        let leave = dynamic.leave_request().unwrap();
        assert_eq!((leave.member_id.as_str(), leave.member_epoch), ("m-1", -1));

        let mut fixed = Membership::new(config(Some("host-a")), now);
        fixed.on_response(Ok(ok("m-2", 4, None)), now);
        let leave = fixed.leave_request().unwrap();
        assert_eq!(leave.member_epoch, -2);
        assert_eq!(leave.instance_id.as_deref(), Some("host-a"));
    }

    #[test]
    fn wire_conversion_groups_by_topic_and_round_trips() {
        let set: BTreeSet<TopicPartition> = [tp("a", 1), tp("a", 0), tp("b", 3)].into_iter().collect();
        let wire = to_wire(&set);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0].partitions, vec![0, 1]);
        assert_eq!(from_wire(wire), set);
    }
}
