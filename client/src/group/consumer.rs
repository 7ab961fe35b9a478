//! [`GroupConsumer`]: a consumer whose partitions are assigned by the group coordinator. It
//! reuses [`Consumer`]'s fetch machinery for the partitions it owns, runs the membership in a
//! background heartbeat task, and reconciles assignment changes inside `poll` (as Kafka runs
//! its rebalance callbacks inside `poll`), so callbacks and commits happen on the
//! application's task, between the records it is handed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::list_offsets;
use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, Seek};
use crate::error::{Error, Result};
use crate::group::membership::{self, Leave, MemberView, Membership, MembershipConfig, OwnedReport, Step};
use crate::group::offsets::{self, CommitHandle, CommitJob};
use crate::group::reconcile::{reconcile, TopicPartition};
use crate::types::{Offset, OffsetSpec, PartitionId, Record, TopicName};

/// How the consumer commits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCommit {
    /// Commit the positions of records already handed out, from `poll` at most this often,
    /// before a revoked partition is released, and on close: at-least-once delivery.
    Interval(Duration),
    /// Only explicit commits (and those a [`RebalanceListener`] asks for).
    Off,
}

/// Group consumer settings. Build with [`GroupConfig::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    group_id: String,
    instance_id: Option<String>,
    session_timeout: Duration,
    auto_commit: AutoCommit,
    consumer: ConsumerConfig,
    commit_queue_max: usize,
}

impl GroupConfig {
    pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
    pub const AUTO_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
    pub const COMMIT_QUEUE_MAX_DEFAULT: usize = 64;

    /// Settings for a member of `group_id`: auto-commit every 5 s, 10 s session timeout,
    /// new partitions without a committed offset start at the end.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            instance_id: None,
            session_timeout: Self::SESSION_TIMEOUT_DEFAULT,
            auto_commit: AutoCommit::Interval(Self::AUTO_COMMIT_INTERVAL_DEFAULT),
            consumer: ConsumerConfig::default(),
            commit_queue_max: Self::COMMIT_QUEUE_MAX_DEFAULT,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Static membership: a member that comes back with the same instance id within its
    /// session timeout gets its partitions back without a rebalance.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// How long the coordinator waits for a heartbeat before it expires the member.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    pub fn auto_commit(mut self, auto_commit: AutoCommit) -> Self {
        self.auto_commit = auto_commit;
        self
    }

    /// Fetch settings; its offset reset policy is replaced by [`offset_reset`](Self::offset_reset)
    /// when that is called later.
    pub fn consumer_config(mut self, config: ConsumerConfig) -> Self {
        self.consumer = config;
        self
    }

    /// Where a partition without a committed offset starts (and what an out-of-range position
    /// does): `Earliest`, `Latest`, or `Error` ([`Error::NoCommittedOffset`] from `poll`).
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.consumer = self.consumer.offset_reset(reset);
        self
    }

    /// Commits waiting for the committer task before `commit_async` waits.
    pub fn commit_queue_max(mut self, commits: usize) -> Self {
        self.commit_queue_max = commits;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.group_id.is_empty() {
            return Err(Error::Config("the group id must not be empty".into()));
        }
        if self.session_timeout.is_zero() {
            return Err(Error::Config("session_timeout must be positive".into()));
        }
        if self.commit_queue_max == 0 {
            return Err(Error::Config("commit_queue_max must be at least 1".into()));
        }
        if matches!(self.auto_commit, AutoCommit::Interval(interval) if interval.is_zero()) {
            return Err(Error::Config("the auto-commit interval must be positive".into()));
        }
        Ok(())
    }
}

/// Offsets a [`RebalanceListener`] wants committed before its partitions are released.
#[derive(Debug, Clone, Default)]
pub struct OffsetsToCommit {
    offsets: BTreeMap<TopicPartition, Offset>,
}

impl OffsetsToCommit {
    /// Commit `offset` (the next offset to consume) for the partition.
    pub fn insert(&mut self, topic: impl Into<TopicName>, partition: PartitionId, offset: Offset) {
        self.offsets.insert((topic.into(), partition), offset);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &Offset)> {
        self.offsets.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Told about assignment changes, on the task that calls `poll` (or drives the stream).
pub trait RebalanceListener: Send {
    /// The partitions are this member's now; records from them follow.
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// The partitions are about to be released to another member. Offsets put in `commit` are
    /// committed (with the consumed positions, under auto-commit) before they are released.
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition], commit: &mut OffsetsToCommit) {
        let _ = (partitions, commit);
    }

    /// The partitions were lost (the member was fenced or expired); another member may own
    /// them already, so nothing was committed for them.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// Longest single wait inside the record stream; it loops.
const STREAM_WAIT: Duration = Duration::from_secs(1);
/// Leave requests the heartbeat task can hold: one close.
const LEAVE_QUEUE: usize = 1;

/// A member of a consumer group: subscribes to topics, consumes the partitions the
/// coordinator assigns, commits offsets.
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    consumer: Consumer,
    /// Partitions this member owns (fetching, or waiting for a position under `Error`).
    owned: BTreeSet<TopicPartition>,
    /// Owned partitions without a committed offset under [`OffsetReset::Error`]; fetching
    /// starts once the application seeks them.
    unpositioned: BTreeSet<TopicPartition>,
    /// The next offset after the last record handed out, per owned partition (or the start
    /// position before any): what a commit of "consumed" positions sends.
    consumed: BTreeMap<TopicPartition, Offset>,
    /// Records handed out (or a start position set) since the last auto-commit.
    dirty: bool,
    /// Fetched records not handed out yet.
    pending: VecDeque<Record>,
    /// The loss count last dealt with.
    seen_lost: u64,
    /// The view must be reconciled even though the receiver says it was seen: a wait marked
    /// it seen, or a reconciliation failed half-way (an RPC error).
    reconcile_again: bool,
    next_auto_commit: Instant,
    view_rx: watch::Receiver<MemberView>,
    owned_tx: watch::Sender<OwnedReport>,
    leave_tx: mpsc::Sender<Leave>,
    commit_tx: mpsc::Sender<CommitJob>,
    heartbeat: Option<JoinHandle<()>>,
    listener: Option<Box<dyn RebalanceListener>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("config", &self.config)
            .field("owned", &self.owned)
            .field("unpositioned", &self.unpositioned)
            .field("consumed", &self.consumed)
            .field("pending_records", &self.pending.len())
            .field("view", &*self.view_rx.borrow())
            .field("has_listener", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// Joins `config`'s group subscribed to `topics` and starts heartbeating. Partitions
    /// arrive through [`poll`](Self::poll) or [`stream`](Self::stream).
    ///
    /// # Errors
    /// [`Error::Config`] for bad settings; the coordinator's refusal of the join (for example
    /// [`ErrorCode::InvalidSessionTimeout`](crate::ErrorCode::InvalidSessionTimeout), or
    /// `UnsupportedVersion` from a broker without groups). Transient failures are retried in
    /// the background.
    pub async fn subscribe<I, T>(client: Client, config: GroupConfig, topics: I) -> Result<GroupConsumer>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicName>,
    {
        config.validate()?;
        let topics: Vec<TopicName> = topics.into_iter().map(Into::into).collect();
        if topics.is_empty() {
            return Err(Error::Config("subscribe to at least one topic".into()));
        }
        let consumer = Consumer::new(client.clone(), config.consumer.clone())?;
        let mut membership = Membership::new(
            MembershipConfig {
                group: config.group_id.clone(),
                topics,
                instance_id: config.instance_id.clone(),
                session_timeout: config.session_timeout,
            },
            Instant::now(),
        );
        // Join here rather than in the task, so a refusal is this call's error.
        let first_wait = match membership.heartbeat(&client, &OwnedReport::default()).await {
            Step::After(wait) => wait,
            Step::Fatal(error) => return Err(error),
        };
        let (view_tx, view_rx) = watch::channel(membership.view());
        let (owned_tx, owned_rx) = watch::channel(OwnedReport::default());
        let (leave_tx, leave_rx) = mpsc::channel(LEAVE_QUEUE);
        let (commit_tx, commit_rx) = mpsc::channel(config.commit_queue_max);
        let heartbeat = tokio::spawn(membership::run(
            client.clone(),
            membership,
            first_wait,
            owned_rx,
            view_tx,
            leave_rx,
        ));
        tokio::spawn(offsets::run_committer(
            client.clone(),
            config.group_id.clone(),
            view_rx.clone(),
            commit_rx,
        ));
        let next_auto_commit = match config.auto_commit {
            AutoCommit::Interval(interval) => crate::consumer::deadline_after(interval),
            AutoCommit::Off => Instant::now(),
        };
        Ok(GroupConsumer {
            client,
            config,
            consumer,
            owned: BTreeSet::new(),
            unpositioned: BTreeSet::new(),
            consumed: BTreeMap::new(),
            dirty: false,
            pending: VecDeque::new(),
            seen_lost: 0,
            reconcile_again: true,
            next_auto_commit,
            view_rx,
            owned_tx,
            leave_tx,
            commit_tx,
            heartbeat: Some(heartbeat),
            listener: None,
        })
    }

    /// Installs the rebalance listener. Set it before the first poll to hear about the first
    /// assignment.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id the coordinator gave this member; `None` while (re)joining.
    pub fn member_id(&self) -> Option<String> {
        let view = self.view_rx.borrow();
        (!view.member_id.is_empty()).then(|| view.member_id.clone())
    }

    /// The partitions this member owns, as of the last `poll`.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The offset after the last record handed out for the partition (what a commit of
    /// consumed positions would send), or its start position before any. On a compacted
    /// topic it moves past offsets that hold no record once nothing of the partition is
    /// pending.
    pub fn position(&self, topic: &str, partition: PartitionId) -> Option<Offset> {
        self.consumed.get(&(TopicName::new(topic), partition)).copied()
    }

    /// The group's committed offsets for `partitions` (`None`: nothing committed).
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, Option<Offset>>>> + Send + 'static {
        // Owns its inputs, so the future is Send without the consumer being Sync.
        let client = self.client.clone();
        let group = self.config.group_id.clone();
        let partitions = partitions.to_vec();
        async move { offsets::fetch(&client, &group, Some(&partitions)).await }
    }

    /// Waits up to `timeout` for records and returns at most `max_poll_records` of them (an
    /// empty `Vec` when none arrived in time). Assignment changes are applied here, with the
    /// listener's callbacks; auto-commits are sent from here.
    ///
    /// # Errors
    /// [`Error::NoCommittedOffset`] under [`OffsetReset::Error`] until the partition is
    /// [`seek`](Self::seek)ed; [`Error::GroupMembership`] when the coordinator refused this
    /// member for good; fetch errors as from [`Consumer::poll`].
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<Record>> {
        let deadline = crate::consumer::deadline_after(timeout);
        loop {
            self.maintain().await?;
            if !self.pending.is_empty() {
                let take = self
                    .pending
                    .len()
                    .min(self.config.consumer.max_poll_records_value());
                let records: Vec<Record> = self.pending.drain(..take).collect();
                for record in &records {
                    self.mark_consumed(record);
                }
                return Ok(records);
            }
            self.check_positioned()?;
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            self.fill(deadline).await?;
        }
    }

    /// The next record, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    pub async fn recv(&mut self) -> Result<Record> {
        loop {
            self.maintain().await?;
            if let Some(record) = self.pending.pop_front() {
                self.mark_consumed(&record);
                return Ok(record);
            }
            self.check_positioned()?;
            self.fill(Instant::now() + STREAM_WAIT).await?;
        }
    }

    /// The records as an endless stream; each is counted as consumed (for commits) when the
    /// stream yields it. Errors are yielded too, and the stream goes on after them.
    /// Boxed so it is `Unpin`: `stream.next().await` works without pinning.
    pub fn stream(&mut self) -> BoxStream<'_, Result<Record>> {
        futures::stream::unfold(self, |this| async move {
            let item = this.recv().await;
            Some((item, this))
        })
        .boxed()
    }

    /// Moves an owned partition's position (and sets it for a partition waiting for one under
    /// [`OffsetReset::Error`]). Records buffered for it are dropped.
    ///
    /// # Errors
    /// [`Error::NotAssigned`] when this member does not own the partition; lookup errors.
    pub async fn seek(&mut self, topic: &str, partition: PartitionId, to: Seek) -> Result<()> {
        let key = (TopicName::new(topic), partition);
        if !self.owned.contains(&key) {
            return Err(Error::NotAssigned {
                topic: topic.to_owned(),
                partition,
            });
        }
        let offset = match to {
            Seek::Offset(offset) => offset,
            Seek::Earliest => self.look_up(topic, partition, OffsetSpec::Earliest).await?,
            Seek::Latest => self.look_up(topic, partition, OffsetSpec::Latest).await?,
            Seek::Timestamp(ms) => self.look_up(topic, partition, OffsetSpec::Timestamp(ms)).await?,
        };
        if self.unpositioned.remove(&key) {
            self.consumer.assign(key.0.clone(), &[partition]).await?;
        }
        self.consumer.seek(topic, partition, Seek::Offset(offset))?;
        self.pending
            .retain(|r| !(r.topic == key.0 && r.partition == partition));
        self.consumed.insert(key, offset);
        self.dirty = true;
        Ok(())
    }

    /// Commits the positions of the records handed out so far, and waits for the outcome.
    ///
    /// # Errors
    /// The coordinator's refusal (for example a stale or fenced member).
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.consumed.clone();
        self.dirty = false;
        self.commit_and_wait(offsets).await
    }

    /// Queues a commit of the positions handed out so far; commits are sent in order. Waits
    /// only for room in the queue.
    ///
    /// # Errors
    /// [`Error::ConsumerClosed`] when the committer is gone.
    pub async fn commit_async(&mut self) -> Result<CommitHandle> {
        let offsets = self.consumed.clone();
        self.dirty = false;
        self.enqueue_commit(offsets).await
    }

    /// Commits the given offsets (each the next offset to consume) and waits.
    ///
    /// # Errors
    /// As [`commit_sync`](Self::commit_sync).
    pub async fn commit_offsets<I, T>(&mut self, offsets: I) -> Result<()>
    where
        I: IntoIterator<Item = (T, PartitionId, Offset)>,
        T: Into<TopicName>,
    {
        let offsets = offsets
            .into_iter()
            .map(|(topic, partition, offset)| ((topic.into(), partition), offset))
            .collect();
        self.commit_and_wait(offsets).await
    }

    /// Queues a commit of the given offsets.
    ///
    /// # Errors
    /// As [`commit_async`](Self::commit_async).
    pub async fn commit_offsets_async<I, T>(&mut self, offsets: I) -> Result<CommitHandle>
    where
        I: IntoIterator<Item = (T, PartitionId, Offset)>,
        T: Into<TopicName>,
    {
        let offsets = offsets
            .into_iter()
            .map(|(topic, partition, offset)| ((topic.into(), partition), offset))
            .collect();
        self.enqueue_commit(offsets).await
    }

    /// Gives up every partition (the listener hears `revoked`; under auto-commit the consumed
    /// positions are committed first), leaves the group and stops the heartbeat.
    ///
    /// # Errors
    /// The commit's or the leave's failure; the consumer leaves the group either way.
    pub async fn close(mut self) -> Result<()> {
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let mut result = if owned.is_empty() {
            Ok(())
        } else {
            self.commit_before_release(&owned).await
        };
        self.release(&owned);
        let (reply, outcome) = oneshot::channel();
        if self.leave_tx.send(Leave { reply }).await.is_ok() {
            if let Ok(Err(error)) = outcome.await {
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        if let Some(task) = self.heartbeat.take() {
            let _ = task.await;
        }
        result
    }

    async fn look_up(&mut self, topic: &str, partition: PartitionId, spec: OffsetSpec) -> Result<Offset> {
        let found = list_offsets(&self.client, topic, &[partition], spec).await?;
        match found.first().and_then(|f| f.offset()) {
            Some(offset) => Ok(offset),
            // No record at or after the timestamp: the end, as Kafka does.
            None => {
                let latest = list_offsets(&self.client, topic, &[partition], OffsetSpec::Latest).await?;
                latest
                    .first()
                    .and_then(|f| f.offset())
                    .ok_or_else(|| Error::Protocol {
                        addr: String::new(),
                        reason: format!("no latest offset for {topic}/{partition}"),
                    })
            }
        }
    }

    fn mark_consumed(&mut self, record: &Record) {
        self.consumed
            .insert((record.topic.clone(), record.partition), record.offset.plus(1));
        self.dirty = true;
    }

    /// Moves the consumed position of every owned partition up to the consumer's position,
    /// when nothing is pending here and the consumer had nothing more to hand out (an empty
    /// poll): everything below its positions has been handed out then. On a compacted topic
    /// offsets after the last record handed out may hold no record (removed records,
    /// header-only batches); the consumer's position is already past them (it moves by whole
    /// batches), so a commit may say so. Without this a fully read compacted partition would
    /// keep committing its last record + 1 and show lag forever. Only when idle, so a busy
    /// consumer pays nothing for it (the consumer's position scans its buffer).
    fn skip_removed_offsets(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        for key in &self.owned {
            let Some(position) = self.consumer.position(key.0.as_str(), key.1) else {
                continue;
            };
            if let Some(consumed) = self.consumed.get_mut(key) {
                if position > *consumed {
                    *consumed = position;
                    self.dirty = true;
                }
            }
        }
    }

    fn check_positioned(&self) -> Result<()> {
        match self.unpositioned.first() {
            Some((topic, partition)) => Err(Error::NoCommittedOffset {
                group: self.config.group_id.clone(),
                topic: topic.to_string(),
                partition: *partition,
            }),
            None => Ok(()),
        }
    }

    fn stopped(&self) -> Error {
        match &self.view_rx.borrow().fatal {
            Some(fatal) => Error::GroupMembership {
                group: self.config.group_id.clone(),
                source: fatal.clone(),
            },
            None => Error::ConsumerClosed {
                group: self.config.group_id.clone(),
            },
        }
    }

    /// Waits until `deadline`, the auto-commit time, records, or a change of assignment.
    async fn fill(&mut self, deadline: Instant) -> Result<()> {
        let wake = match self.config.auto_commit {
            AutoCommit::Interval(_) => deadline.min(self.next_auto_commit),
            AutoCommit::Off => deadline,
        };
        if self.consumer.assignment().is_empty() {
            tokio::select! {
                changed = self.view_rx.changed() => {
                    if changed.is_err() {
                        return Err(self.stopped());
                    }
                    // changed() marked the view seen; make maintain() look at it anyway.
                    self.reconcile_again = true;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            return Ok(());
        }
        let wait = wake.saturating_duration_since(Instant::now());
        // Consumer::poll is cancel-safe: a fetch in flight stays queued in it.
        tokio::select! {
            polled = self.consumer.poll(wait) => {
                let polled = polled?;
                if polled.is_empty() {
                    self.skip_removed_offsets();
                }
                self.pending.extend(polled);
            }
            changed = self.view_rx.changed() => {
                if changed.is_err() {
                    return Err(self.stopped());
                }
                self.reconcile_again = true;
            }
        }
        Ok(())
    }

    /// Applies what the heartbeat brought (loss, revocations, new partitions) and sends a
    /// due auto-commit.
    async fn maintain(&mut self) -> Result<()> {
        // A closed channel counts as changed: the fatal check below reports it.
        let changed = self.view_rx.has_changed().unwrap_or(true);
        if changed || self.reconcile_again {
            let view = self.view_rx.borrow_and_update().clone();
            if let Some(fatal) = view.fatal {
                return Err(Error::GroupMembership {
                    group: self.config.group_id.clone(),
                    source: fatal,
                });
            }
            self.reconcile_again = true;
            if view.lost_count != self.seen_lost {
                let lost: Vec<TopicPartition> = self.owned.iter().cloned().collect();
                self.release(&lost);
                self.seen_lost = view.lost_count;
                self.report_owned();
                if !lost.is_empty() {
                    tracing::info!(group = %self.config.group_id, partitions = lost.len(), "partitions lost");
                    if let Some(listener) = self.listener.as_mut() {
                        listener.on_partitions_lost(&lost);
                    }
                }
            }
            let plan = reconcile(&self.owned, view.assignment.as_deref());
            if !plan.revoke.is_empty() {
                if let Err(error) = self.commit_before_release(&plan.revoke).await {
                    // The partitions must be released anyway, or the group stalls; the next
                    // owner starts from the last commit that did land.
                    tracing::warn!(group = %self.config.group_id, %error, "commit before revocation failed");
                }
                self.release(&plan.revoke);
                self.report_owned();
            }
            if !plan.add.is_empty() {
                self.start(&plan.add).await?;
                self.report_owned();
                if let Some(listener) = self.listener.as_mut() {
                    listener.on_partitions_assigned(&plan.add);
                }
            }
            self.reconcile_again = false;
        }
        self.maybe_auto_commit();
        Ok(())
    }

    /// Tells the heartbeat task what this member owns; it heartbeats at once.
    fn report_owned(&self) {
        self.owned_tx.send_replace(OwnedReport {
            owned: Arc::new(self.owned.clone()),
            lost_count: self.seen_lost,
        });
    }

    /// Calls the listener's `revoked`, then commits what it asked for and, under auto-commit,
    /// the consumed positions.
    async fn commit_before_release(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut requested = OffsetsToCommit::default();
        if let Some(listener) = self.listener.as_mut() {
            listener.on_partitions_revoked(partitions, &mut requested);
        }
        let mut offsets = BTreeMap::new();
        if matches!(self.config.auto_commit, AutoCommit::Interval(_)) {
            for key in partitions {
                if let Some(offset) = self.consumed.get(key) {
                    offsets.insert(key.clone(), *offset);
                }
            }
        }
        offsets.extend(requested.offsets);
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_and_wait(offsets).await
    }

    /// Stops fetching the partitions and forgets them.
    fn release(&mut self, partitions: &[TopicPartition]) {
        self.consumer.unassign(partitions);
        self.pending
            .retain(|r| !partitions.iter().any(|(t, p)| *t == r.topic && *p == r.partition));
        for key in partitions {
            self.owned.remove(key);
            self.consumed.remove(key);
            self.unpositioned.remove(key);
        }
    }

    /// Starts new partitions from their committed offsets, or per the reset policy.
    async fn start(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let committed = offsets::fetch(&self.client, &self.config.group_id, Some(partitions)).await?;
        let reset = self.config.consumer.offset_reset_value();
        let mut starts: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        let mut to_reset: BTreeMap<TopicName, Vec<PartitionId>> = BTreeMap::new();
        let mut unpositioned = Vec::new();
        for key in partitions {
            match committed.get(key).copied().flatten() {
                Some(offset) => {
                    starts.insert(key.clone(), offset);
                }
                None if reset == OffsetReset::Error => unpositioned.push(key.clone()),
                None => to_reset.entry(key.0.clone()).or_default().push(key.1),
            }
        }
        let spec = match reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest | OffsetReset::Error => OffsetSpec::Latest,
        };
        let mut reset_starts = BTreeMap::new();
        for (topic, parts) in &to_reset {
            for found in list_offsets(&self.client, topic.as_str(), parts, spec).await? {
                if let Some(offset) = found.offset() {
                    reset_starts.insert((topic.clone(), found.partition()), offset);
                }
            }
        }
        let mut by_topic: BTreeMap<TopicName, Vec<PartitionId>> = BTreeMap::new();
        for key in starts.keys().chain(reset_starts.keys()) {
            by_topic.entry(key.0.clone()).or_default().push(key.1);
        }
        for (topic, parts) in &by_topic {
            self.consumer.assign(topic.clone(), parts).await?;
        }
        for (key, offset) in &starts {
            self.consumer.seek(key.0.as_str(), key.1, Seek::Offset(*offset))?;
            self.consumed.insert(key.clone(), *offset);
        }
        for (key, offset) in &reset_starts {
            self.consumer.seek(key.0.as_str(), key.1, Seek::Offset(*offset))?;
            self.consumed.insert(key.clone(), *offset);
            // A reset start is committed with the next auto-commit, so a record produced after
            // it is not skipped when the partition moves before this member consumes it.
            self.dirty = true;
        }
        self.owned.extend(starts.into_keys());
        self.owned.extend(reset_starts.into_keys());
        for key in unpositioned {
            self.owned.insert(key.clone());
            self.unpositioned.insert(key);
        }
        Ok(())
    }

    fn maybe_auto_commit(&mut self) {
        let AutoCommit::Interval(interval) = self.config.auto_commit else {
            return;
        };
        let now = Instant::now();
        if now < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = now + interval;
        if !self.dirty || self.consumed.is_empty() {
            return;
        }
        let job = CommitJob {
            offsets: self.consumed.clone(),
            reply: None,
        };
        match self.commit_tx.try_send(job) {
            Ok(()) => self.dirty = false,
            // A full queue means commits are slow; this one folds into the next.
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    async fn enqueue_commit(&mut self, offsets: BTreeMap<TopicPartition, Offset>) -> Result<CommitHandle> {
        let (reply, rx) = oneshot::channel();
        self.commit_tx
            .send(CommitJob {
                offsets,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Error::ConsumerClosed {
                group: self.config.group_id.clone(),
            })?;
        Ok(CommitHandle {
            group: self.config.group_id.clone(),
            rx,
        })
    }

    async fn commit_and_wait(&mut self, offsets: BTreeMap<TopicPartition, Offset>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.enqueue_commit(offsets).await?.await
    }
}
