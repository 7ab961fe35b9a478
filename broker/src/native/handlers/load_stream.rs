//! LoadStream: the native request translated into `Core::load_stream` (the stream's latest
//! snapshot and one page of its records after it, charged to the connection's memory budget)
//! and the answer back.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::read_stream::record;
use super::Outcome;
use crate::core::snapshots::LoadStreamInput;
use crate::native::error::wire;
use crate::net::budget::ConnectionBudget;
use crate::net::ListenerContext;

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    budget: &ConnectionBudget,
    request: pb::LoadStreamRequest,
) -> Outcome {
    let core = context.core.clone();
    let budget = budget.clone();
    let input = LoadStreamInput {
        topic: request.topic,
        key: request.key,
        limit: request.limit as usize,
        bytes_max: request.max_bytes as usize,
    };
    Outcome::DeferredHeld(Box::pin(async move {
        let (response, reservation) = match core.load_stream(&budget, input).await {
            Ok(loaded) => {
                let read = loaded.read;
                let response = pb::LoadStreamResponse {
                    error: ErrorCode::None as i32,
                    message: String::new(),
                    partition: loaded.partition,
                    snapshot: loaded.snapshot.map(|snapshot| pb::StreamSnapshot {
                        at_offset: snapshot.at_offset,
                        snapshot: snapshot.bytes,
                        timestamp: snapshot.timestamp,
                    }),
                    records: read.records.into_iter().map(record).collect(),
                    high_watermark: read.high_watermark,
                    next_offset: read.next_offset,
                    end_of_stream: read.end_of_stream,
                };
                (response, loaded.reservation)
            }
            Err(error) => {
                let (code, message) = wire(error);
                let response = pb::LoadStreamResponse {
                    error: code as i32,
                    message,
                    high_watermark: -1,
                    next_offset: -1,
                    ..pb::LoadStreamResponse::default()
                };
                (response, None)
            }
        };
        Some((pb::response::Body::LoadStream(response), reservation))
    }))
}
