//! The classic protocol's requests and answers as the group sees them (domain types: the
//! Kafka front end translates to and from its codec's), and how a waiting member is answered.

use tokio::sync::oneshot;

use crate::error::GroupError;

/// One protocol a member supports (an assignor, for consumers), with its opaque metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// JoinGroup v4+: a member without an id is handed one and must join again with it, so
    /// a client that never hears the answer leaves no member behind.
    pub require_known_member: bool,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol, for the leader only.
    pub members: Vec<JoinedMember>,
    /// A static leader rejoined a stable group unchanged: the assignment stands, so it need
    /// not run its assignor (JoinGroup v9).
    pub skip_assignment: bool,
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id; empty from followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

/// A member as a Heartbeat, LeaveGroup or OffsetCommit names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberRef {
    pub member_id: String,
    pub instance_id: Option<String>,
}

pub type JoinResult = Result<JoinResponse, GroupError>;
pub type SyncResult = Result<SyncResponse, GroupError>;

/// An answer to a member that was waiting.
#[derive(Debug)]
pub enum Delivery {
    Join(oneshot::Sender<JoinResult>, JoinResult),
    Sync(oneshot::Sender<SyncResult>, SyncResult),
}

impl Delivery {
    fn send(self) {
        // A receiver that is gone belongs to a client whose connection closed: nobody is
        // left to tell.
        match self {
            Self::Join(sender, result) => drop(sender.send(result)),
            Self::Sync(sender, result) => drop(sender.send(result)),
        }
    }
}

/// What a call did beyond its own answer.
#[derive(Debug, Default)]
pub struct Effects {
    /// The group's persistent state changed: write it before handing out `deliveries`.
    pub persist: bool,
    pub deliveries: Vec<Delivery>,
}

impl Effects {
    pub fn deliver(self) {
        for delivery in self.deliveries {
            delivery.send();
        }
    }
}

/// A member's pending JoinGroup or SyncGroup answer. Not part of the group's value: a copy
/// (for a describe) or a comparison ignores it.
pub(super) struct Waiter<T>(pub(super) Option<oneshot::Sender<T>>);

impl<T> Default for Waiter<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Clone for Waiter<T> {
    fn clone(&self) -> Self {
        Self(None)
    }
}

impl<T> PartialEq for Waiter<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Waiter<T> {}

impl<T> std::fmt::Debug for Waiter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "waiting" } else { "idle" })
    }
}
