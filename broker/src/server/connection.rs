//! One client connection: bytes in, frames cut, requests decoded and dispatched, responses
//! framed and written back.
//!
//! Requests are *started* in arrival order on this task, so two pipelined produce requests to
//! one partition append in the order they were sent. Their slow parts (waiting for a sync, a
//! fetch's long poll) then run concurrently, so responses may leave in any order; clients match
//! them by correlation id. At most `in_flight_requests_per_connection_max` are under way; past
//! that, the task stops reading and TCP pushes back on the client.

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use tidelog_proto::frame::decode_frame;
use tidelog_proto::pb::{self, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::budget::{FetchBudget, FetchReservation};
use super::handlers::{self, Outcome};
use super::response::{encode_response, FrameChunks};

/// A framed response on its way to the socket, with the fetch memory it holds until written.
struct Outgoing {
    chunks: FrameChunks,
    reservation: Option<FetchReservation>,
}
use crate::broker::BrokerContext;

/// Initial read buffer; it grows to the largest frame in flight.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Bytes of queued responses the writer gathers into one vectored write.
const WRITE_COALESCE_BYTES: usize = 4 << 20;
/// I/O slices handed to one `writev` (the kernel's limit is 1024).
const WRITE_SLICES_MAX: usize = 256;

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, context: Arc<BrokerContext>) {
    let span = tracing::info_span!("connection", %peer);
    async move {
        tracing::debug!("accepted");
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not disable Nagle's algorithm");
        }
        let (reader, writer) = stream.into_split();
        let limits = &context.config.limits;
        let (responses, queued) = mpsc::channel(limits.response_queue_depth);
        let writer = tokio::spawn(write_responses(writer, queued).in_current_span());
        let in_flight = Arc::new(Semaphore::new(limits.in_flight_requests_per_connection_max));
        let fetch_budget = FetchBudget::new(
            limits.connection_fetch_bytes_in_flight_max,
            context.fetch_memory.clone(),
        );
        match read_requests(reader, peer, &context, &responses, &in_flight, &fetch_budget).await {
            Ok(()) => tracing::debug!("client closed the connection"),
            Err(reason) => tracing::warn!(%reason, "closing connection"),
        }
        // In-flight requests hold their own senders; the writer ends once they have all
        // answered, so shutdown drains rather than abandons.
        drop(responses);
        if let Err(error) = writer.await {
            tracing::error!(%error, "connection writer ended abnormally");
        }
    }
    .instrument(span)
    .await;
}

/// Reads and dispatches until the client closes, the broker shuts down, or the byte stream
/// cannot be trusted any more (the `Err` says why).
async fn read_requests(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
    context: &Arc<BrokerContext>,
    responses: &mpsc::Sender<Outgoing>,
    in_flight: &Arc<Semaphore>,
    fetch_budget: &FetchBudget,
) -> Result<(), String> {
    let frame_bytes_max = context.config.limits.frame_bytes_max;
    let mut shutdown = context.shutdown.clone();
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        loop {
            let frame = match decode_frame(&mut buffer, frame_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    // Tell the client why before hanging up; the stream is out of sync now.
                    let response = error_response(0, ErrorCode::InvalidRequest, error.to_string());
                    send_response(responses, response, frame_bytes_max).await;
                    return Err(error.to_string());
                }
            };
            let permit = tokio::select! {
                permit = in_flight.clone().acquire_owned() => permit.map_err(|error| error.to_string())?,
                _ = shutdown.changed() => return Ok(()),
            };
            start_request(frame, peer, context, responses, fetch_budget, permit).await;
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) if buffer.is_empty() => return Ok(()),
                Ok(0) => return Err(format!("client closed the connection mid-frame ({} bytes pending)", buffer.len())),
                Ok(_) => {}
                Err(error) => return Err(format!("read failed: {error}")),
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Decodes one request and runs its in-order part here; a deferred remainder gets a task.
async fn start_request(
    frame: Bytes,
    peer: SocketAddr,
    context: &Arc<BrokerContext>,
    responses: &mpsc::Sender<Outgoing>,
    fetch_budget: &FetchBudget,
    permit: OwnedSemaphorePermit,
) {
    let frame_bytes_max = context.config.limits.frame_bytes_max;
    let request = match pb::Request::decode(frame) {
        Ok(request) => request,
        Err(error) => {
            // The frame boundary is intact, so the connection stays usable: answer and go on.
            tracing::warn!(%error, "undecodable request");
            let response = error_response(
                0,
                ErrorCode::InvalidRequest,
                format!("undecodable request: {error}"),
            );
            send_response(responses, response, frame_bytes_max).await;
            return;
        }
    };
    let Some(header) = request.header else {
        let response = error_response(0, ErrorCode::InvalidRequest, "request has no header".into());
        send_response(responses, response, frame_bytes_max).await;
        return;
    };
    let correlation_id = header.correlation_id;
    let span =
        tracing::debug_span!("request", api = ?header.api(), correlation_id, client_id = %header.client_id);
    let outcome = span.in_scope(|| handlers::dispatch(context, peer, fetch_budget, &header, request.body));
    // Awaited here, before the next request starts, so in-order work stays in order.
    let outcome = match outcome {
        Outcome::Ordered(ordered) => ordered.instrument(span.clone()).await,
        other => other,
    };
    match outcome {
        Outcome::Reply(body) => {
            let response = body_response(correlation_id, body);
            send_response(responses, response, frame_bytes_max).await;
        }
        Outcome::Failed(code, message) => {
            let response = error_response(correlation_id, code, message);
            send_response(responses, response, frame_bytes_max).await;
        }
        Outcome::Silent => {}
        Outcome::Ordered(_) => {
            tracing::error!("a handler's in-order part yielded another in-order part");
            let response = error_response(
                correlation_id,
                ErrorCode::UnknownServerError,
                "internal error".into(),
            );
            send_response(responses, response, frame_bytes_max).await;
        }
        Outcome::Deferred(pending) => {
            let responses = responses.clone();
            tokio::spawn(
                async move {
                    if let Some(body) = pending.await {
                        let response = body_response(correlation_id, body);
                        send_response(&responses, response, frame_bytes_max).await;
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        Outcome::DeferredHeld(pending) => {
            let responses = responses.clone();
            tokio::spawn(
                async move {
                    if let Some((body, reservation)) = pending.await {
                        let response = body_response(correlation_id, body);
                        send_held_response(&responses, response, frame_bytes_max, reservation).await;
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

fn body_response(correlation_id: u64, body: pb::response::Body) -> pb::Response {
    pb::Response {
        correlation_id,
        error: ErrorCode::None as i32,
        error_message: String::new(),
        body: Some(body),
    }
}

fn error_response(correlation_id: u64, code: ErrorCode, message: String) -> pb::Response {
    pb::Response {
        correlation_id,
        error: code as i32,
        error_message: message,
        body: None,
    }
}

/// Frames `response` and queues it for the writer. A response too large to frame becomes an
/// error response, so the client is never left waiting.
async fn send_response(responses: &mpsc::Sender<Outgoing>, response: pb::Response, frame_bytes_max: usize) {
    send_held_response(responses, response, frame_bytes_max, None).await;
}

/// `send_response` for a response holding fetch memory, released once it is written.
async fn send_held_response(
    responses: &mpsc::Sender<Outgoing>,
    response: pb::Response,
    frame_bytes_max: usize,
    reservation: Option<FetchReservation>,
) {
    let correlation_id = response.correlation_id;
    let frame = match encode_response(response, frame_bytes_max) {
        Ok(frame) => frame,
        Err(error) => {
            tracing::error!(%error, "response does not fit in a frame");
            let fallback = error_response(correlation_id, ErrorCode::MessageTooLarge, error.to_string());
            match encode_response(fallback, frame_bytes_max) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
    };
    // The writer is gone only when the client's socket failed; nothing left to tell it.
    let _ = responses
        .send(Outgoing {
            chunks: frame,
            reservation,
        })
        .await;
}

/// Writes queued response frames, gathering whatever is already queued into one vectored
/// write.
async fn write_responses(mut writer: OwnedWriteHalf, mut queued: mpsc::Receiver<Outgoing>) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut held: Vec<FetchReservation> = Vec::new();
    while let Some(frame) = queued.recv().await {
        let mut gathered: usize = frame.chunks.iter().map(Bytes::len).sum();
        pending.extend(frame.chunks);
        held.extend(frame.reservation);
        while gathered < WRITE_COALESCE_BYTES {
            match queued.try_recv() {
                Ok(more) => {
                    gathered += more.chunks.iter().map(Bytes::len).sum::<usize>();
                    pending.extend(more.chunks);
                    held.extend(more.reservation);
                }
                Err(_) => break,
            }
        }
        let written = write_all_chunks(&mut writer, &mut pending).await;
        // Written (or failed): either way the fetched bytes are no longer needed.
        held.clear();
        if let Err(error) = written {
            tracing::debug!(%error, "write failed; dropping the remaining responses");
            // Keep receiving so senders never block on a dead connection.
            while queued.recv().await.is_some() {}
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes every chunk, in order, with as few `writev` calls as the socket allows.
async fn write_all_chunks(writer: &mut OwnedWriteHalf, chunks: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let slices: Vec<IoSlice<'_>> = chunks
            .iter()
            .take(WRITE_SLICES_MAX)
            .map(|chunk| IoSlice::new(chunk))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}
