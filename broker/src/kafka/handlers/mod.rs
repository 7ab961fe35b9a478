//! Kafka request handlers, one module per API (named after it). Each decodes its request body
//! with kafka-protocol (or a small hand codec for versions the crate lacks), calls the broker,
//! and encodes the response; none touches a socket, and none holds a broker rule: they
//! translate between Kafka's types and the broker's.

pub(crate) mod alter_configs;
pub(crate) mod api_versions;
pub(crate) mod consumer_group_describe;
pub(crate) mod consumer_group_heartbeat;
pub(crate) mod create_partitions;
pub(crate) mod create_topics;
pub(crate) mod delete_groups;
pub(crate) mod delete_records;
pub(crate) mod delete_topics;
pub(crate) mod describe_cluster;
pub(crate) mod describe_configs;
pub(crate) mod describe_groups;
pub(crate) mod fetch;
mod fetch_wire;
pub(crate) mod find_coordinator;
mod group_common;
pub(crate) mod heartbeat;
pub(crate) mod incremental_alter_configs;
pub(crate) mod init_producer_id;
pub(crate) mod join_group;
pub(crate) mod leave_group;
pub(crate) mod legacy;
pub(crate) mod list_groups;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offset_commit;
pub(crate) mod offset_delete;
pub(crate) mod offset_fetch;
pub(crate) mod offset_for_leader_epoch;
pub(crate) mod produce;
pub(crate) mod sync_group;
mod topic_admin;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::codec::encode_body;
use super::KafkaContext;
use crate::net::budget::{ConnectionBudget, Reservation};

/// One decoded-header request, as a handler gets it.
pub(crate) struct Request<'a> {
    pub context: &'a Arc<KafkaContext>,
    pub api_key: ApiKey,
    pub header: &'a RequestHeader,
    /// The undecoded body: the handler decodes it in `version`.
    pub body: Bytes,
    /// The client's address (group members record it).
    #[allow(dead_code)] // read by the group handlers, which land after this listener
    pub peer: SocketAddr,
    /// The connection's share of the memory budget (fetched bytes, append copies).
    pub budget: &'a ConnectionBudget,
}

impl Request<'_> {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// Decodes the body as `M` in the request's version. A body that does not decode is
    /// answered the way Kafka answers it: the connection is closed (the reply says why).
    pub fn decode<M: Decodable>(&self) -> Result<M, Reply> {
        let mut body = self.body.clone();
        M::decode(&mut body, self.version()).map_err(|error| {
            Reply::Close(format!(
                "undecodable {:?} v{} request: {error}",
                self.api_key,
                self.version()
            ))
        })
    }
}

/// An encoded response body, in chunks written one after the other (a fetch's record sets
/// stay the `Bytes` storage returned), and the memory it holds until written.
pub(crate) struct Response {
    pub chunks: Vec<Bytes>,
    /// Budget already reserved for these bytes (a fetch's read); topped up to their size
    /// when queued.
    pub held: Option<Reservation>,
}

impl Response {
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

pub(crate) type Later = Pin<Box<dyn Future<Output = Option<Response>> + Send>>;
pub(crate) type Ordered = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What a handler did with a request.
pub(crate) enum Reply {
    /// Answered on the spot.
    Now(Response),
    /// The rest (a sync, a long poll) runs in its own task; its response still leaves in
    /// request order. `None`: no response is owed after all.
    Later(Later),
    /// In-order work that must finish before the connection starts its next request (an
    /// append that may roll a segment on a blocking thread); it yields the reply proper
    /// (never `Ordered` again).
    Ordered(Ordered),
    /// No response is owed (produce with acks = 0).
    Nothing,
    /// The request cannot be answered in a way the client could read: close the connection.
    Close(String),
}

impl Reply {
    /// Encodes `message` as the response in `version`.
    pub fn encode<M: Encodable>(message: &M, version: i16) -> Reply {
        match encode_body(message, version) {
            Ok(body) => Reply::Now(Response {
                chunks: vec![body],
                held: None,
            }),
            Err(error) => {
                // A handler set a field its version cannot carry: a bug of ours.
                tracing::error!(%error, version, "response could not be encoded");
                Reply::Close(error.to_string())
            }
        }
    }
}

/// Encodes `message` for a deferred answer; `None` (logged at ERROR) when it cannot be, a bug
/// of ours: the client then gets no answer to that request and times it out.
pub(crate) fn encode_response<M: Encodable>(message: &M, version: i16) -> Option<Response> {
    match encode_body(message, version) {
        Ok(body) => Some(Response {
            chunks: vec![body],
            held: None,
        }),
        Err(error) => {
            tracing::error!(%error, version, "response could not be encoded");
            None
        }
    }
}

/// Kafka's `AclOperation` codes, as authorized-operation bitfields: every operation is allowed
/// until ACLs exist.
pub(crate) mod operations {
    const READ: i32 = 1 << 3;
    const WRITE: i32 = 1 << 4;
    const CREATE: i32 = 1 << 5;
    const DELETE: i32 = 1 << 6;
    const ALTER: i32 = 1 << 7;
    const DESCRIBE: i32 = 1 << 8;
    const CLUSTER_ACTION: i32 = 1 << 9;
    const DESCRIBE_CONFIGS: i32 = 1 << 10;
    const ALTER_CONFIGS: i32 = 1 << 11;
    const IDEMPOTENT_WRITE: i32 = 1 << 12;

    /// What a principal may do to a topic (Kafka's topic resource operations).
    pub const TOPIC: i32 =
        READ | WRITE | CREATE | DELETE | ALTER | DESCRIBE | DESCRIBE_CONFIGS | ALTER_CONFIGS;
    /// What a principal may do to the cluster.
    pub const CLUSTER: i32 =
        CREATE | ALTER | DESCRIBE | CLUSTER_ACTION | DESCRIBE_CONFIGS | ALTER_CONFIGS | IDEMPOTENT_WRITE;
    /// What a principal may do to a consumer group (DescribeGroups).
    #[allow(dead_code)]
    pub const GROUP: i32 = READ | DESCRIBE | DELETE;
    /// The field's value when the client did not ask for authorized operations.
    pub const NOT_REQUESTED: i32 = i32::MIN;
}

pub(crate) use crate::core::Core;
