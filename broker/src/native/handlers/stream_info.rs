//! StreamInfo: the native request translated into `Core::stream_info` (the key's partition,
//! its first and last retained offsets and record count; read on the blocking pool) and the
//! answer back.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::CoreError;
use crate::native::error::wire;
use crate::net::ListenerContext;
use crate::storage::StreamInfo;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::StreamInfoRequest) -> Outcome {
    let looking = context.core.stream_info(&request.topic, request.key);
    Outcome::Deferred(Box::pin(async move {
        Some(pb::response::Body::StreamInfo(answer(looking.await)))
    }))
}

fn answer(looked: Result<(u32, StreamInfo), CoreError>) -> pb::StreamInfoResponse {
    match looked {
        Ok((partition, info)) => pb::StreamInfoResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            partition,
            first_offset: info.first_offset,
            last_offset: info.last_offset,
            records: info.records,
            marks: None,
        },
        Err(error) => {
            let (code, message) = wire(error);
            pb::StreamInfoResponse {
                error: code as i32,
                message,
                partition: 0,
                first_offset: -1,
                last_offset: -1,
                records: 0,
                marks: None,
            }
        }
    }
}
