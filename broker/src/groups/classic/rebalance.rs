//! The rebalance itself: preparing it, completing the join phase (who stays, the generation,
//! the protocol, the leader, everyone's answer), completing the sync phase (the leader's
//! assignment handed out), and removing members on the way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    millis, ClassicGroup, ClassicMember, ClassicState, Delivery, Effects, InitialDelay, JoinResponse,
    JoinedMember, SyncResponse, SyncResult,
};
use crate::config::GroupsConfig;
use crate::error::GroupError;

impl ClassicGroup {
    /// A new member joined. A group that had none holds its first join phase open for
    /// `groups.initial_rebalance_delay_ms` (Kafka's `group.initial.rebalance.delay.ms`);
    /// during that wait a newcomer extends it; otherwise the membership changed.
    pub(super) fn member_added(&mut self, config: &GroupsConfig, now: Instant, effects: &mut Effects) {
        if self.state == ClassicState::Empty && config.initial_rebalance_delay_ms > 0 {
            let step = millis(config.initial_rebalance_delay_ms);
            let cap = now + self.rebalance_timeout();
            self.state = ClassicState::PreparingRebalance;
            self.deadline = Some((now + step).min(cap));
            self.initial_delay = Some(InitialDelay {
                step,
                cap,
                extend: false,
            });
            return;
        }
        if let Some(initial) = self.initial_delay.as_mut() {
            initial.extend = true;
        }
        self.membership_changed(now, effects);
    }

    /// At the end of a step of the initial delay: true if new members joined during it and
    /// the rebalance deadline leaves room for another step, which starts; false when the
    /// delay is over (or there was none) and the join phase is to complete.
    pub(super) fn extend_initial_delay(&mut self, now: Instant) -> bool {
        let Some(initial) = self.initial_delay.as_mut() else {
            return false;
        };
        if initial.extend && now < initial.cap && !self.members.is_empty() {
            initial.extend = false;
            self.deadline = Some((now + initial.step).min(initial.cap));
            return true;
        }
        self.initial_delay = None;
        false
    }

    pub(super) fn membership_changed(&mut self, now: Instant, effects: &mut Effects) {
        if self.state == ClassicState::PreparingRebalance {
            self.try_complete_join(now, false, effects);
        } else {
            self.prepare_rebalance(now, effects);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, now: Instant, effects: &mut Effects) {
        if self.state == ClassicState::CompletingRebalance {
            // The generation being abandoned never got its assignment: its waiters rejoin.
            for member in self.members.values_mut() {
                member.assignment.clear();
                if let Some(waiting) = member.sync.0.take() {
                    let error = Err(GroupError::RebalanceInProgress(self.group_id.clone()));
                    effects.deliveries.push(Delivery::Sync(waiting, error));
                }
            }
        }
        self.state = ClassicState::PreparingRebalance;
        let timeout = self.rebalance_timeout();
        self.deadline = Some(now + timeout);
        self.try_complete_join(now, false, effects);
    }

    /// Completes the join phase once every member has rejoined (and no handed-out id is still
    /// expected), or when `force`d at the deadline: members that did not rejoin are removed,
    /// the generation advances, and every member hears the result (the leader with all
    /// members' metadata).
    pub(super) fn try_complete_join(&mut self, now: Instant, force: bool, effects: &mut Effects) {
        if self.state != ClassicState::PreparingRebalance || (self.initial_delay.is_some() && !force) {
            return;
        }
        self.initial_delay = None;
        let all_joined = self.members.values().all(ClassicMember::awaiting_join) && self.pending.is_empty();
        if !all_joined && !force {
            return;
        }
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|member| !member.awaiting_join())
            .map(|member| member.id.clone())
            .collect();
        for member_id in &missing {
            tracing::info!(group = %self.group_id, member = %member_id, "classic member removed: did not rejoin before the rebalance timeout");
            self.remove_member(member_id, effects);
        }
        // Two billion rebalances of one group is not a case to plan for; saturating keeps
        // the arithmetic panic-free.
        self.generation = self.generation.saturating_add(1);
        effects.persist = true;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol_type = None;
            self.protocol_name = None;
            self.leader = None;
            self.deadline = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| !self.members.contains_key(leader))
        {
            self.leader = self.longest_standing();
        }
        self.state = ClassicState::CompletingRebalance;
        self.deadline = Some(now + self.rebalance_timeout());
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let reply = self.join_response(&member_id, false);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.touch(now);
                if let Some(waiting) = member.join.0.take() {
                    effects.deliveries.push(Delivery::Join(waiting, Ok(reply)));
                }
            }
        }
    }

    /// The leader's SyncGroup: every member gets its part (nothing, if the leader gave it
    /// none), and the group is stable.
    pub(super) fn complete_sync(&mut self, assignments: Vec<(String, Vec<u8>)>, effects: &mut Effects) {
        let mut given: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = given.remove(&member.id).unwrap_or_default();
        }
        self.state = ClassicState::Stable;
        self.deadline = None;
        effects.persist = true;
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let reply = self.sync_response(&member_id);
            if let Some(waiting) = self.members.get_mut(&member_id).and_then(|m| m.sync.0.take()) {
                effects.deliveries.push(Delivery::Sync(waiting, reply));
            }
        }
    }

    /// Removes a member; its waiters hear it is unknown, and a leader is replaced.
    pub(super) fn remove_member(&mut self, member_id: &str, effects: &mut Effects) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(waiting) = member.join.0.take() {
            effects
                .deliveries
                .push(Delivery::Join(waiting, Err(self.unknown(member_id))));
        }
        if let Some(waiting) = member.sync.0.take() {
            effects
                .deliveries
                .push(Delivery::Sync(waiting, Err(self.unknown(member_id))));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.longest_standing();
        }
    }

    pub(super) fn longest_standing(&self) -> Option<String> {
        self.members
            .values()
            .min_by_key(|member| member.seq)
            .map(|member| member.id.clone())
    }

    pub(super) fn rebalance_timeout(&self) -> Duration {
        millis(
            self.members
                .values()
                .map(|member| member.rebalance_timeout_ms)
                .max()
                .unwrap_or(0),
        )
    }

    /// Kafka's choice: among the protocols every member supports, each member votes for the
    /// one it prefers most; the most votes win, a tie goes to the leader's preference.
    pub(super) fn select_protocol(&self) -> Option<String> {
        let preference = self
            .leader
            .as_ref()
            .and_then(|leader| self.members.get(leader))
            .or_else(|| self.members.values().min_by_key(|member| member.seq))?;
        let candidates: Vec<&str> = preference
            .protocols
            .iter()
            .map(|protocol| protocol.name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|member| member.metadata(name).is_some())
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|protocol| candidates.contains(&protocol.name.as_str()))
            {
                *votes.entry(choice.name.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|name| votes.get(name) == Some(&most))
            .map(str::to_owned)
    }

    pub(super) fn join_response(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let leader_id = self.leader.clone().unwrap_or_default();
        let members = if leader_id == member_id {
            let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
            ordered.sort_by_key(|member| member.seq);
            ordered
                .into_iter()
                .map(|member| JoinedMember {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    metadata: self.chosen_metadata(member).unwrap_or_default().to_vec(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id,
            member_id: member_id.to_owned(),
            members,
            skip_assignment,
        }
    }

    pub(super) fn sync_response(&self, member_id: &str) -> SyncResult {
        Ok(SyncResponse {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|member| member.assignment.clone())
                .unwrap_or_default(),
        })
    }
}
