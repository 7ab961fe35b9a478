//! ReadStream: the native request translated into `Core::read_stream` (the key's partition,
//! page bounds, the memory budget, the long poll at the end of the stream) and the page back.

use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::streams::StreamReadInput;
use crate::native::error::wire;
use crate::net::budget::ConnectionBudget;
use crate::net::ListenerContext;
use crate::storage::{Direction, StreamRecord};

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    budget: &ConnectionBudget,
    request: pb::ReadStreamRequest,
) -> Outcome {
    let direction = match request.direction() {
        pb::ReadDirection::Forward => Direction::Forward,
        pb::ReadDirection::Backward => Direction::Backward,
    };
    let input = StreamReadInput {
        topic: request.topic,
        key: request.key,
        from: request.from_offset,
        direction,
        limit: request.limit as usize,
        bytes_max: request.max_bytes as usize,
        max_wait: Duration::from_millis(u64::from(request.max_wait_ms)),
    };
    let reading = context.core.read_stream(budget, input);
    Outcome::DeferredHeld(Box::pin(async move {
        let (response, reservation) = match reading.await {
            Ok(output) => {
                let read = output.read;
                let response = pb::ReadStreamResponse {
                    error: ErrorCode::None as i32,
                    message: String::new(),
                    partition: output.partition,
                    records: read.records.into_iter().map(record).collect(),
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    next_offset: read.next_offset,
                    end_of_stream: read.end_of_stream,
                };
                (response, output.reservation)
            }
            Err(error) => {
                let (code, message) = wire(error);
                let response = pb::ReadStreamResponse {
                    error: code as i32,
                    message,
                    high_watermark: -1,
                    log_start_offset: -1,
                    next_offset: -1,
                    ..pb::ReadStreamResponse::default()
                };
                (response, None)
            }
        };
        Some((pb::response::Body::ReadStream(response), reservation))
    }))
}

pub(super) fn record(record: StreamRecord) -> pb::StreamRecord {
    pb::StreamRecord {
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(key, value)| pb::Header { key, value })
            .collect(),
    }
}
