//! A classic group's persistent form: what survives a restart (generation, protocol, leader,
//! members with their protocols and last assignment), the way `Group::to_record` persists
//! the rest of the group.

use std::time::Instant;

use super::{ClassicGroup, ClassicMember, ClassicState, Protocol, Waiter};
use crate::metadata::{ClassicGroupRecord, ClassicMemberRecord, ClassicProtocolRecord};

impl ClassicGroup {
    pub fn to_record(&self) -> ClassicGroupRecord {
        let mut members: Vec<&ClassicMember> = self.members.values().collect();
        members.sort_by_key(|member| member.seq);
        ClassicGroupRecord {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader.clone(),
            members: members
                .into_iter()
                .map(|member| ClassicMemberRecord {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    session_timeout_ms: member.session_timeout_ms,
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    protocols: member
                        .protocols
                        .iter()
                        .map(|protocol| ClassicProtocolRecord {
                            name: protocol.name.clone(),
                            metadata_hex: to_hex(&protocol.metadata),
                        })
                        .collect(),
                    assignment_hex: to_hex(&member.assignment),
                })
                .collect(),
        }
    }

    /// Rebuilds a group after a restart: stable at its last generation with its members'
    /// last assignments (a rebalance the restart interrupted is redone when members rejoin,
    /// as their heartbeats are answered with the generation they no longer match, or their
    /// sessions end). Session timers start again from `now`. A record with undecodable hex
    /// is damaged; its members are dropped with an error in the log.
    pub fn from_record(record: ClassicGroupRecord, group_id: &str, now: Instant) -> Self {
        let mut group = Self::new(group_id.to_owned());
        group.generation = record.generation;
        group.protocol_type = record.protocol_type;
        group.protocol_name = record.protocol_name;
        group.leader = record.leader_id;
        for (seq, member) in (0u64..).zip(record.members) {
            let protocols: Option<Vec<Protocol>> = member
                .protocols
                .into_iter()
                .map(|protocol| {
                    from_hex(&protocol.metadata_hex).map(|metadata| Protocol {
                        name: protocol.name,
                        metadata,
                    })
                })
                .collect();
            let (Some(protocols), Some(assignment)) = (protocols, from_hex(&member.assignment_hex)) else {
                tracing::error!(group = %group_id, member = %member.member_id, "skipping a damaged classic member record");
                continue;
            };
            let mut restored = ClassicMember {
                id: member.member_id,
                instance_id: member.instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                session_timeout_ms: member.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols,
                assignment,
                deadline: now,
                seq,
                join: Waiter::default(),
                sync: Waiter::default(),
            };
            restored.touch(now);
            group.members.insert(restored.id.clone(), restored);
            group.next_seq = seq + 1;
        }
        if group.members.is_empty() {
            group.protocol_type = None;
            group.protocol_name = None;
            group.leader = None;
        } else {
            group.state = ClassicState::Stable;
            if group
                .leader
                .as_ref()
                .is_none_or(|leader| !group.members.contains_key(leader))
            {
                group.leader = group.longest_standing();
            }
        }
        group
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}
