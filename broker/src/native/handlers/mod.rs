//! Request handlers, one module per API. Each translates a decoded request body into a call
//! of the core (`crate::core`) and its result into a response body; none holds a broker rule
//! or touches a socket. `dispatch` checks the header and routes.

mod alter_topic;
mod consumer_group_heartbeat;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_groups;
mod erase_stream;
mod fetch;
mod init_producer_id;
mod list_groups;
mod list_offsets;
mod load_stream;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod produce;
mod read_stream;
mod reopen_stream;
mod save_snapshot;
mod stream_info;
mod trim_topic;
mod truncate_stream;
mod wait_group_offset;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tidelog_proto::pb::{self, request::Body, ErrorCode};
use tidelog_proto::PROTOCOL_VERSION;

use crate::core::CoreError;
use crate::native::error::wire;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::net::ListenerContext;

pub(crate) type Pending = Pin<Box<dyn Future<Output = Option<pb::response::Body>> + Send>>;
/// A deferred answer that holds fetched bytes: the reservation is released once it is written.
pub(crate) type PendingHeld =
    Pin<Box<dyn Future<Output = Option<(pb::response::Body, Option<Reservation>)>> + Send>>;

/// What a handler did with a request.
pub(crate) enum Outcome {
    /// Answered on the spot.
    Reply(pb::response::Body),
    /// The request as a whole failed.
    Failed(ErrorCode, String),
    /// No response is owed (produce with acks = none).
    Silent,
    /// The in-order part is done; the rest (a sync, a long poll) finishes in its own task.
    Deferred(Pending),
    /// Like `Deferred`, for a response holding fetched data from the memory budget.
    DeferredHeld(PendingHeld),
    /// Part of the in-order work must leave the async workers (a produce whose append rolls a
    /// segment runs on a blocking thread): the connection awaits this before it starts the
    /// next request, so order is kept, then handles the outcome it yields (never `Ordered`).
    Ordered(Ordered),
}

pub(crate) type Ordered = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Routes one decoded request. `peer` is the client's address, recorded for group members.
pub(crate) fn dispatch(
    context: &Arc<ListenerContext>,
    peer: std::net::SocketAddr,
    budget: &ConnectionBudget,
    header: &pb::RequestHeader,
    body: Option<Body>,
) -> Outcome {
    if header.version != PROTOCOL_VERSION {
        return Outcome::Failed(
            ErrorCode::UnsupportedVersion,
            format!(
                "version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                header.version
            ),
        );
    }
    let Some(body) = body else {
        return Outcome::Failed(ErrorCode::InvalidRequest, "request has no body".into());
    };
    if body.api_key() != header.api() {
        return Outcome::Failed(
            ErrorCode::InvalidRequest,
            format!("header names API {:?} but the body is another", header.api()),
        );
    }
    match body {
        Body::CreateTopics(request) => create_topics::handle(context, request),
        Body::DeleteTopics(request) => delete_topics::handle(context, request),
        Body::Metadata(request) => metadata::handle(context, request),
        Body::Produce(request) => produce::handle(context, request),
        Body::Fetch(request) => fetch::handle(context, budget, request),
        Body::ListOffsets(request) => list_offsets::handle(context, request),
        Body::ConsumerGroupHeartbeat(request) => {
            consumer_group_heartbeat::handle(context, &header.client_id, peer, request)
        }
        Body::OffsetCommit(request) => offset_commit::handle(context, request),
        Body::OffsetFetch(request) => offset_fetch::handle(context, request),
        Body::ListGroups(request) => list_groups::handle(context, request),
        Body::DescribeGroups(request) => describe_groups::handle(context, request),
        Body::DeleteGroups(request) => delete_groups::handle(context, request),
        Body::InitProducerId(request) => init_producer_id::handle(context, request),
        Body::AlterTopic(request) => alter_topic::handle(context, request),
        Body::TrimTopic(request) => trim_topic::handle(context, request),
        Body::ReadStream(request) => read_stream::handle(context, budget, request),
        Body::StreamInfo(request) => stream_info::handle(context, request),
        Body::WaitGroupOffset(request) => wait_group_offset::handle(context, request),
        Body::SaveSnapshot(request) => save_snapshot::handle(context, request),
        Body::LoadStream(request) => load_stream::handle(context, budget, request),
        Body::TruncateStream(request) => truncate_stream::handle(context, request),
        Body::EraseStream(request) => erase_stream::handle(context, request),
        Body::ReopenStream(request) => reopen_stream::handle(context, request),
    }
}

/// One topic's line in a CreateTopics or DeleteTopics response.
fn topic_result(name: String, result: Result<(), CoreError>) -> pb::TopicResult {
    let (code, message) = match result {
        Ok(()) => (ErrorCode::None, String::new()),
        Err(error) => wire(error),
    };
    pb::TopicResult {
        name,
        error: code as i32,
        message,
    }
}
