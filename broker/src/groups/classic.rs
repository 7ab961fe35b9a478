//! Classic consumer groups (Kafka's JoinGroup / SyncGroup / Heartbeat / LeaveGroup, with the
//! assignment computed by the group's leader, client side): one group's state machine.
//!
//! ```text
//! Empty --join--> PreparingRebalance --all rejoined or deadline--> CompletingRebalance
//!   ^                  ^    ^                                            |  leader's sync
//!   |  last member     |    +------ member joins, leaves or expires -----+  v
//!   +--- leaves -------+------------- member joins, leaves or expires --- Stable
//! ```
//! (Dead is a group that no longer exists.) An Empty group's first join phase is held open
//! for `groups.initial_rebalance_delay_ms` even once everyone has joined (Kafka's initial
//! rebalance delay, [`InitialDelay`]). Plain synchronous code over plain data, as the
//! rest of `groups`: time is a parameter and nothing here does I/O. A JoinGroup or SyncGroup
//! that must wait for other members is answered through a oneshot channel kept with the
//! member; a call that completes other members' waits returns those answers as
//! [`Effects`], which the caller hands out only after persisting the group when asked to.
//! Every wait ends at a deadline (`rebalance_timeout_ms`, capped by
//! `groups.rebalance_timeout_ms_max`) that [`ClassicGroup::expire`] enforces; a waiter whose
//! sender is dropped must rejoin, which is what a client does on REBALANCE_IN_PROGRESS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::coordinator::random_member_id;
use crate::config::GroupsConfig;
use crate::error::GroupError;

mod coordinator;
mod messages;
mod rebalance;
mod record;
#[cfg(test)]
mod tests;

pub use coordinator::Pending;
use messages::Waiter;
pub use messages::{
    Delivery, Effects, JoinRequest, JoinResponse, JoinResult, JoinedMember, MemberRef, Protocol, SyncRequest,
    SyncResponse, SyncResult,
};

/// Attempts at a member id unused in the group (a collision of 128-bit ids means the
/// generator is broken).
const MEMBER_ID_ATTEMPTS_MAX: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub protocols: Vec<Protocol>,
    /// What the leader assigned this member in the last completed sync.
    pub assignment: Vec<u8>,
    pub deadline: Instant,
    /// Order of joining: a new leader is the longest-standing member.
    seq: u64,
    join: Waiter<JoinResult>,
    sync: Waiter<SyncResult>,
}

impl ClassicMember {
    pub fn metadata(&self, protocol: &str) -> Option<&[u8]> {
        self.protocols
            .iter()
            .find(|candidate| candidate.name == protocol)
            .map(|found| found.metadata.as_slice())
    }

    fn awaiting_join(&self) -> bool {
        self.join.0.is_some()
    }

    fn awaiting_sync(&self) -> bool {
        self.sync.0.is_some()
    }

    fn touch(&mut self, now: Instant) {
        self.deadline = now + millis(self.session_timeout_ms);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroup {
    pub group_id: String,
    pub state: ClassicState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, ClassicMember>,
    /// Ids handed out with MEMBER_ID_REQUIRED, each until its join or its session deadline.
    pending: BTreeMap<String, Instant>,
    /// PreparingRebalance: when the join completes without the members still missing.
    /// CompletingRebalance: when members that have not sent SyncGroup are removed.
    deadline: Option<Instant>,
    /// A new group's first join phase, held open (`groups.initial_rebalance_delay_ms`).
    initial_delay: Option<InitialDelay>,
    next_seq: u64,
}

/// Kafka's initial rebalance delay: the first join phase of a group that had no members
/// waits a step, and another step each time new members joined during the last one, never
/// past the rebalance deadline. Members starting together then join one generation, and a
/// leader has had time to fetch its topics' metadata before it assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InitialDelay {
    step: Duration,
    cap: Instant,
    /// A new member joined during the current step.
    extend: bool,
}

impl ClassicGroup {
    pub fn new(group_id: String) -> Self {
        Self {
            group_id,
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadline: None,
            initial_delay: None,
            next_seq: 0,
        }
    }

    /// No members and no member ids handed out: the group may be dropped.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    pub fn member_by_instance(&self, instance_id: &str) -> Option<&ClassicMember> {
        self.members
            .values()
            .find(|member| member.instance_id.as_deref() == Some(instance_id))
    }

    /// The metadata a member sent for the group's chosen protocol.
    pub fn chosen_metadata<'a>(&self, member: &'a ClassicMember) -> Option<&'a [u8]> {
        member.metadata(self.protocol_name.as_deref()?)
    }

    pub fn join(
        &mut self,
        config: &GroupsConfig,
        now: Instant,
        mut request: JoinRequest,
        effects: &mut Effects,
    ) -> Result<oneshot::Receiver<JoinResult>, GroupError> {
        check_join(config, &request)?;
        request.rebalance_timeout_ms = request
            .rebalance_timeout_ms
            .clamp(1, config.rebalance_timeout_ms_max);
        let known = self.members.contains_key(&request.member_id);
        if !self.members.is_empty() {
            let except = known.then_some(request.member_id.as_str());
            if self.protocol_type.as_deref() != Some(request.protocol_type.as_str())
                || !self.supports(&request.protocols, except)
            {
                return Err(GroupError::InconsistentGroupProtocol(format!(
                    "group {:?} uses protocol type {:?} with protocols the member does not support",
                    request.group_id,
                    self.protocol_type.as_deref().unwrap_or_default()
                )));
            }
        }
        let (sender, receiver) = oneshot::channel();
        if request.member_id.is_empty() {
            if let Some(instance_id) = request.instance_id.clone() {
                if let Some(old_id) = self.member_by_instance(&instance_id).map(|m| m.id.clone()) {
                    self.replace_static(now, &old_id, request, sender, effects)?;
                    return Ok(receiver);
                }
            } else if request.require_known_member {
                self.check_room(config, &request.group_id)?;
                let member_id = self.new_member_id()?;
                self.pending
                    .insert(member_id.clone(), now + millis(request.session_timeout_ms));
                return Err(GroupError::MemberIdRequired { member_id });
            }
            self.check_room(config, &request.group_id)?;
            let member_id = self.new_member_id()?;
            self.add_member(now, member_id, request, sender);
            self.member_added(config, now, effects);
            return Ok(receiver);
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            self.add_member(now, member_id, request, sender);
            self.member_added(config, now, effects);
            return Ok(receiver);
        }
        if known {
            let registered = self
                .members
                .get(&request.member_id)
                .and_then(|member| member.instance_id.clone());
            if let Some(instance_id) = &request.instance_id {
                if registered.as_ref() != Some(instance_id) {
                    return Err(GroupError::FencedInstanceId(instance_id.clone()));
                }
            }
            self.rejoin(now, request, sender, effects);
            return Ok(receiver);
        }
        if let Some(instance_id) = &request.instance_id {
            if self.member_by_instance(instance_id).is_some() {
                return Err(GroupError::FencedInstanceId(instance_id.clone()));
            }
        }
        Err(self.unknown(&request.member_id))
    }

    pub fn sync(
        &mut self,
        config: &GroupsConfig,
        now: Instant,
        request: SyncRequest,
        effects: &mut Effects,
    ) -> Result<oneshot::Receiver<SyncResult>, GroupError> {
        let member_ref = MemberRef {
            member_id: request.member_id.clone(),
            instance_id: request.instance_id.clone(),
        };
        self.check_member(&member_ref)?;
        self.check_generation(request.generation)?;
        let mismatch = |asked: &Option<String>, have: &Option<String>| {
            asked.as_ref().is_some_and(|asked| Some(asked) != have.as_ref())
        };
        if mismatch(&request.protocol_type, &self.protocol_type)
            || mismatch(&request.protocol_name, &self.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol(format!(
                "group {:?} runs protocol {:?} of type {:?}",
                request.group_id, self.protocol_name, self.protocol_type
            )));
        }
        if let Some((member_id, bytes)) = request
            .assignments
            .iter()
            .find(|(_, bytes)| bytes.len() > config.classic_member_bytes_max)
        {
            return Err(GroupError::InvalidRequest(format!(
                "the assignment of {member_id:?} has {} bytes, more than groups.classic_member_bytes_max ({})",
                bytes.len(),
                config.classic_member_bytes_max
            )));
        }
        let (sender, receiver) = oneshot::channel();
        match self.state {
            ClassicState::Empty => return Err(self.unknown(&request.member_id)),
            ClassicState::PreparingRebalance => {
                return Err(GroupError::RebalanceInProgress(request.group_id))
            }
            ClassicState::Stable => {
                let reply = self.sync_response(&request.member_id);
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    member.touch(now);
                }
                effects.deliveries.push(Delivery::Sync(sender, reply));
            }
            ClassicState::CompletingRebalance => {
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    member.touch(now);
                    // A repeated sync replaces the earlier one, whose waiter is dropped.
                    member.sync = Waiter(Some(sender));
                }
                if self.leader.as_deref() == Some(request.member_id.as_str()) {
                    self.complete_sync(request.assignments, effects);
                }
            }
        }
        Ok(receiver)
    }

    pub fn heartbeat(&mut self, now: Instant, member: &MemberRef, generation: i32) -> Result<(), GroupError> {
        if self.state == ClassicState::Empty {
            return Err(self.unknown(&member.member_id));
        }
        self.check_member(member)?;
        self.check_generation(generation)?;
        if let Some(found) = self.members.get_mut(&member.member_id) {
            found.touch(now);
        }
        if self.state == ClassicState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress(self.group_id.clone()));
        }
        Ok(())
    }

    /// Removes each member named (by instance id where one is given); one outcome per member,
    /// in order, with the id of the member removed.
    pub fn leave(
        &mut self,
        now: Instant,
        members: &[MemberRef],
        effects: &mut Effects,
    ) -> Vec<Result<String, GroupError>> {
        let mut removed_any = false;
        let outcomes = members
            .iter()
            .map(|leaving| {
                let member_id = match &leaving.instance_id {
                    Some(instance_id) => match self.member_by_instance(instance_id) {
                        None => return Err(self.unknown(&leaving.member_id)),
                        Some(found) if !leaving.member_id.is_empty() && found.id != leaving.member_id => {
                            return Err(GroupError::FencedInstanceId(instance_id.clone()))
                        }
                        Some(found) => found.id.clone(),
                    },
                    None if self.pending.remove(&leaving.member_id).is_some() => {
                        removed_any = true;
                        return Ok(leaving.member_id.clone());
                    }
                    None if self.members.contains_key(&leaving.member_id) => leaving.member_id.clone(),
                    None => return Err(self.unknown(&leaving.member_id)),
                };
                tracing::info!(group = %self.group_id, member = %member_id, "classic member left");
                self.remove_member(&member_id, effects);
                removed_any = true;
                Ok(member_id)
            })
            .collect();
        if removed_any {
            self.membership_changed(now, effects);
            effects.persist = true;
        }
        outcomes
    }

    /// Enforces every deadline: member ids handed out but never used, sessions of members
    /// not waiting in a rebalance, the join deadline and the sync deadline. Returns whether
    /// the group changed.
    pub fn expire(&mut self, now: Instant, effects: &mut Effects) -> bool {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let mut changed = self.pending.len() != pending_before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| member.deadline <= now && !member.awaiting_join() && !member.awaiting_sync())
            .map(|member| member.id.clone())
            .collect();
        for member_id in &expired {
            tracing::info!(group = %self.group_id, member = %member_id, "classic member removed: session timeout");
            self.remove_member(member_id, effects);
        }
        if !expired.is_empty() {
            changed = true;
            self.membership_changed(now, effects);
        } else if changed {
            self.try_complete_join(now, false, effects);
        }
        if self.deadline.is_some_and(|deadline| deadline <= now) {
            changed = true;
            match self.state {
                ClassicState::PreparingRebalance => {
                    if !self.extend_initial_delay(now) {
                        self.try_complete_join(now, true, effects);
                    }
                }
                ClassicState::CompletingRebalance => {
                    let unsynced: Vec<String> = self
                        .members
                        .values()
                        .filter(|member| !member.awaiting_sync())
                        .map(|member| member.id.clone())
                        .collect();
                    for member_id in &unsynced {
                        tracing::warn!(group = %self.group_id, member = %member_id, "classic member removed: no SyncGroup before the rebalance timeout");
                        self.remove_member(member_id, effects);
                    }
                    self.prepare_rebalance(now, effects);
                }
                ClassicState::Empty | ClassicState::Stable => self.deadline = None,
            }
        }
        if changed {
            effects.persist = true;
        }
        changed
    }

    /// Whether `generation` and the member may commit offsets (Kafka's rules): a commit with
    /// no generation and no member is an admin's, accepted only while the group is empty;
    /// otherwise the member must be current, and a group completing a rebalance asks it to
    /// finish that first. A group preparing a rebalance still accepts its members' commits
    /// for the current generation, so they can commit before rejoining.
    pub fn check_commit(&self, member: &MemberRef, generation: i32) -> Result<(), GroupError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(());
        }
        if generation >= 0 || !member.member_id.is_empty() || member.instance_id.is_some() {
            self.check_member(member)?;
            self.check_generation(generation)?;
        } else if !self.members.is_empty() {
            return Err(self.unknown(&member.member_id));
        }
        if self.state == ClassicState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress(self.group_id.clone()));
        }
        Ok(())
    }

    fn unknown(&self, member_id: &str) -> GroupError {
        GroupError::UnknownMember {
            group_id: self.group_id.clone(),
            member_id: member_id.to_owned(),
        }
    }

    fn check_member(&self, member: &MemberRef) -> Result<(), GroupError> {
        if let Some(instance_id) = &member.instance_id {
            match self.member_by_instance(instance_id) {
                None => return Err(self.unknown(&member.member_id)),
                Some(found) if found.id != member.member_id => {
                    return Err(GroupError::FencedInstanceId(instance_id.clone()))
                }
                Some(_) => {}
            }
        }
        if !self.members.contains_key(&member.member_id) {
            return Err(self.unknown(&member.member_id));
        }
        Ok(())
    }

    fn check_generation(&self, generation: i32) -> Result<(), GroupError> {
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                received: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    fn check_room(&self, config: &GroupsConfig, group_id: &str) -> Result<(), GroupError> {
        if self.members.len() + self.pending.len() >= config.members_per_group_max {
            return Err(GroupError::GroupFull {
                group_id: group_id.to_owned(),
                max: config.members_per_group_max,
            });
        }
        Ok(())
    }

    fn new_member_id(&self) -> Result<String, GroupError> {
        for _ in 0..MEMBER_ID_ATTEMPTS_MAX {
            let id = random_member_id();
            if !self.members.contains_key(&id) && !self.pending.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(GroupError::InvalidRequest(
            "could not generate an unused member id".into(),
        ))
    }

    /// Whether some protocol is supported by the member and every other member.
    fn supports(&self, protocols: &[Protocol], except: Option<&str>) -> bool {
        protocols.iter().any(|protocol| {
            self.members
                .values()
                .filter(|member| Some(member.id.as_str()) != except)
                .all(|member| member.metadata(&protocol.name).is_some())
        })
    }

    fn add_member(
        &mut self,
        now: Instant,
        member_id: String,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut member = ClassicMember {
            id: member_id.clone(),
            instance_id: request.instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Vec::new(),
            deadline: now,
            seq,
            join: Waiter(Some(sender)),
            sync: Waiter::default(),
        };
        member.touch(now);
        self.members.insert(member_id, member);
    }

    /// A known member joins again: it may only want the current generation (a lost answer),
    /// or it changed its protocols, or it is the leader (which rejoins to reassign).
    fn rejoin(
        &mut self,
        now: Instant,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
        effects: &mut Effects,
    ) {
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return;
        };
        let unchanged = member.protocols == request.protocols;
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.touch(now);
        let current = match self.state {
            ClassicState::CompletingRebalance => unchanged,
            ClassicState::Stable => unchanged && !is_leader,
            ClassicState::Empty | ClassicState::PreparingRebalance => false,
        };
        if current {
            let reply = self.join_response(&request.member_id, false);
            effects.deliveries.push(Delivery::Join(sender, Ok(reply)));
            return;
        }
        // A join repeated while the first still waits replaces it; the first's waiter drops.
        member.join = Waiter(Some(sender));
        if self.state == ClassicState::PreparingRebalance {
            self.try_complete_join(now, false, effects);
        } else {
            self.prepare_rebalance(now, effects);
        }
    }

    /// A static member's new process (no member id, a known instance id) takes the old
    /// member's place: the old id is fenced, and a stable group with unchanged protocols
    /// carries on without a rebalance.
    fn replace_static(
        &mut self,
        now: Instant,
        old_id: &str,
        request: JoinRequest,
        sender: oneshot::Sender<JoinResult>,
        effects: &mut Effects,
    ) -> Result<(), GroupError> {
        let new_id = self.new_member_id()?;
        let Some(mut member) = self.members.remove(old_id) else {
            return Err(self.unknown(old_id));
        };
        let instance_id = request.instance_id.clone().unwrap_or_default();
        if let Some(waiting) = member.join.0.take() {
            let fenced = Err(GroupError::FencedInstanceId(instance_id.clone()));
            effects.deliveries.push(Delivery::Join(waiting, fenced));
        }
        if let Some(waiting) = member.sync.0.take() {
            let fenced = Err(GroupError::FencedInstanceId(instance_id.clone()));
            effects.deliveries.push(Delivery::Sync(waiting, fenced));
        }
        tracing::info!(group = %request.group_id, instance = %instance_id, old = %old_id, new = %new_id, "static member replaced");
        let unchanged = member.protocols == request.protocols;
        member.id = new_id.clone();
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.touch(now);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        let is_leader = self.leader.as_deref() == Some(new_id.as_str());
        let carry_on = self.state == ClassicState::Stable && unchanged;
        let mut sender = Some(sender);
        if !carry_on {
            member.join = Waiter(sender.take());
        }
        self.members.insert(new_id.clone(), member);
        effects.persist = true;
        if let Some(sender) = sender {
            let reply = self.join_response(&new_id, is_leader);
            effects.deliveries.push(Delivery::Join(sender, Ok(reply)));
        } else if self.state == ClassicState::PreparingRebalance {
            self.try_complete_join(now, false, effects);
        } else {
            self.prepare_rebalance(now, effects);
        }
        Ok(())
    }
}

fn check_join(config: &GroupsConfig, request: &JoinRequest) -> Result<(), GroupError> {
    let timeout = request.session_timeout_ms;
    if !(config.session_timeout_ms_min..=config.session_timeout_ms_max).contains(&timeout) {
        return Err(GroupError::InvalidSessionTimeout {
            requested: timeout,
            min: config.session_timeout_ms_min,
            max: config.session_timeout_ms_max,
        });
    }
    if request.protocol_type.is_empty() || request.protocols.is_empty() {
        return Err(GroupError::InconsistentGroupProtocol(
            "a join must name a protocol type and at least one protocol".into(),
        ));
    }
    if request.member_id.len() > config.member_id_bytes_max {
        return Err(GroupError::InvalidRequest(format!(
            "member id longer than {} bytes",
            config.member_id_bytes_max
        )));
    }
    let protocol_bytes: usize = request
        .protocols
        .iter()
        .map(|protocol| protocol.name.len() + protocol.metadata.len())
        .sum();
    if protocol_bytes > config.classic_member_bytes_max {
        return Err(GroupError::InvalidRequest(format!(
            "protocol metadata of {protocol_bytes} bytes exceeds groups.classic_member_bytes_max ({})",
            config.classic_member_bytes_max
        )));
    }
    if let Some(instance_id) = &request.instance_id {
        if instance_id.is_empty() || instance_id.len() > config.instance_id_bytes_max {
            return Err(GroupError::InvalidRequest(format!(
                "instance id must have 1 to {} bytes",
                config.instance_id_bytes_max
            )));
        }
    }
    Ok(())
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}
