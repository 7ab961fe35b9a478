//! One client connection: bytes in, frames cut, requests decoded and dispatched, responses
//! framed and written back.
//!
//! Requests are *started* in arrival order on this task, so two pipelined produce requests to
//! one partition append in the order they were sent. Their slow parts (waiting for a sync, a
//! fetch's long poll) then run concurrently, so responses may leave in any order; clients match
//! them by correlation id. At most `in_flight_requests_per_connection_max` are under way; past
//! that, the task stops reading and TCP pushes back on the client.
//!
//! Memory and time: frames are read by `net::read` (charged to the broker's budget before
//! they are read, bounded by the idle, size-prefix and frame-completion timeouts); a
//! frame's charge travels with its request until it is answered, and a response is charged
//! until it is written (by the writer task, or by the answering task itself when the writer is
//! idle: `socket`). A socket that accepts no byte of a pending response for
//! `write_stall_timeout_ms` is cut.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tidelog_proto::pb::{self, ErrorCode};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::handlers::{self, Outcome};
use super::response::encode_response;
use super::socket::{write_responses, Outgoing, Socket};
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::net::read::{FrameReader, ReadError, ReaderParts};
use crate::net::ListenerContext;

/// What a connection's reader needs from its surroundings.
struct Reader<'a> {
    peer: SocketAddr,
    context: &'a Arc<ListenerContext>,
    responses: &'a mpsc::Sender<Outgoing>,
    in_flight: &'a Arc<Semaphore>,
    budget: &'a ConnectionBudget,
    /// The write half; its `gone` is told when the socket was given up on.
    socket: &'a Arc<Socket>,
}

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, context: Arc<ListenerContext>) {
    let span = tracing::info_span!("connection", listener = context.name, %peer);
    async move {
        tracing::debug!("accepted");
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not disable Nagle's algorithm");
        }
        let (reader, writer) = stream.into_split();
        let limits = &context.limits;
        let (responses, queued) = mpsc::channel(limits.response_queue_depth);
        let write_stall = Duration::from_millis(limits.write_stall_timeout_ms);
        let socket = Socket::new(writer, write_stall);
        let writer = tokio::spawn(write_responses(Arc::clone(&socket), queued).in_current_span());
        let in_flight = Arc::new(Semaphore::new(limits.in_flight_requests_per_connection_max));
        let budget = context.memory.connection();
        let surroundings = Reader {
            peer,
            context: &context,
            responses: &responses,
            in_flight: &in_flight,
            budget: &budget,
            socket: &socket,
        };
        match read_requests(reader, &surroundings).await {
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

/// Reads and dispatches until the client closes, the broker shuts down, a timeout cuts the
/// connection, or the byte stream cannot be trusted any more (the `Err` says why).
async fn read_requests(reader: OwnedReadHalf, surroundings: &Reader<'_>) -> Result<(), String> {
    let limits = &surroundings.context.limits;
    let mut frames = FrameReader::new(
        reader,
        ReaderParts {
            limits,
            budget: surroundings.budget,
            in_flight: surroundings.in_flight,
            writer_gone: &surroundings.socket.gone,
            shutdown: surroundings.context.shutdown.clone(),
        },
    );
    loop {
        match frames.next().await {
            Ok(Some(frame)) => start_request(frame.bytes, frame.charge, surroundings, frame.permit).await,
            Ok(None) => return Ok(()),
            Err(ReadError::BadFrame(reason)) => {
                // Tell the client why before hanging up; the stream is out of sync now.
                let response = error_response(0, ErrorCode::InvalidRequest, reason.clone());
                let replier = Replier {
                    responses: surroundings.responses.clone(),
                    socket: Arc::clone(surroundings.socket),
                    budget: surroundings.budget.clone(),
                    frame_bytes_max: limits.frame_bytes_max,
                };
                replier.send(response, None).await;
                return Err(reason);
            }
            Err(ReadError::Cut(reason)) => return Err(reason),
        }
    }
}

/// Where responses go: straight to the socket when the writer is idle, else the writer's
/// queue, charged to the connection's budget until written.
#[derive(Clone)]
struct Replier {
    responses: mpsc::Sender<Outgoing>,
    socket: Arc<Socket>,
    budget: ConnectionBudget,
    frame_bytes_max: usize,
}

/// Decodes one request and runs its in-order part here; a deferred remainder gets a task.
/// `charge` covers the frame; it is held until the request is answered.
async fn start_request(
    frame: Bytes,
    charge: Reservation,
    surroundings: &Reader<'_>,
    permit: OwnedSemaphorePermit,
) {
    let context = surroundings.context;
    let replier = Replier {
        responses: surroundings.responses.clone(),
        socket: Arc::clone(surroundings.socket),
        budget: surroundings.budget.clone(),
        frame_bytes_max: context.limits.frame_bytes_max,
    };
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
            replier.send(response, None).await;
            return;
        }
    };
    let Some(header) = request.header else {
        let response = error_response(0, ErrorCode::InvalidRequest, "request has no header".into());
        replier.send(response, None).await;
        return;
    };
    let correlation_id = header.correlation_id;
    let span =
        tracing::debug_span!("request", api = ?header.api(), correlation_id, client_id = %header.client_id);
    // The append copies a produce's batches once more, under the partition's lock: charge
    // that copy for as long as the in-order part runs.
    let append_copy = match &request.body {
        Some(pb::request::Body::Produce(produce)) => {
            let bytes: usize = produce
                .topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .map(|partition| partition.records.len())
                .sum();
            let wait = Duration::from_millis(context.limits.memory_wait_ms_max);
            match surroundings
                .budget
                .reserve_between(bytes, bytes, Some(Instant::now() + wait))
                .await
            {
                Ok(copy) => Some(copy),
                Err(error) => {
                    tracing::warn!(%error, bytes, "produce got no memory from the broker budget");
                    let response =
                        error_response(correlation_id, ErrorCode::RequestTimedOut, error.to_string());
                    replier.send(response, None).await;
                    return;
                }
            }
        }
        _ => None,
    };
    let outcome = span.in_scope(|| {
        handlers::dispatch(
            context,
            surroundings.peer,
            surroundings.budget,
            &header,
            request.body,
        )
    });
    // Awaited here, before the next request starts, so in-order work stays in order (and the
    // append copy stays charged while it runs).
    let outcome = match outcome {
        Outcome::Ordered(ordered) => ordered.instrument(span.clone()).await,
        other => other,
    };
    drop(append_copy);
    match outcome {
        Outcome::Reply(body) => {
            replier.send(body_response(correlation_id, body), None).await;
        }
        Outcome::Failed(code, message) => {
            replier
                .send(error_response(correlation_id, code, message), None)
                .await;
        }
        Outcome::Silent => {}
        Outcome::Ordered(_) => {
            tracing::error!("a handler's in-order part yielded another in-order part");
            let response = error_response(
                correlation_id,
                ErrorCode::UnknownServerError,
                "internal error".into(),
            );
            replier.send(response, None).await;
        }
        Outcome::Deferred(pending) => {
            tokio::spawn(
                async move {
                    if let Some(body) = pending.await {
                        replier.send(body_response(correlation_id, body), None).await;
                    }
                    drop(charge);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        Outcome::DeferredHeld(pending) => {
            tokio::spawn(
                async move {
                    if let Some((body, reservation)) = pending.await {
                        replier
                            .send(body_response(correlation_id, body), reservation)
                            .await;
                    }
                    drop(charge);
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

impl Replier {
    /// Frames `response` and queues it for the writer, charged to the budget until written:
    /// `reservation` (a fetch's, covering its records) topped up to the frame's size. A
    /// response too large to frame becomes an error response, so the client is never left
    /// waiting.
    async fn send(&self, response: pb::Response, reservation: Option<Reservation>) {
        let correlation_id = response.correlation_id;
        let frame = match encode_response(response, self.frame_bytes_max) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "response does not fit in a frame");
                let fallback = error_response(correlation_id, ErrorCode::MessageTooLarge, error.to_string());
                match encode_response(fallback, self.frame_bytes_max) {
                    Ok(frame) => frame,
                    Err(_) => return,
                }
            }
        };
        let frame_bytes: usize = frame.iter().map(Bytes::len).sum();
        let mut reservation = reservation.unwrap_or_else(|| self.budget.empty());
        if frame_bytes > reservation.bytes() {
            // The bytes exist already; charging them makes further reads wait.
            reservation.merge(self.budget.charge(frame_bytes - reservation.bytes()));
        }
        // Written here (the reservation is dropped once the bytes are in the socket), or queued.
        let Err(frame) = self.socket.try_write_now(frame, &self.responses).await else {
            return;
        };
        // The writer is gone only when the client's socket failed; nothing left to tell it.
        let _ = self
            .responses
            .send(Outgoing {
                chunks: frame,
                reservation,
            })
            .await;
    }
}

/// Sends an error frame (correlation id 0) on the stream of a connection that is refused
/// before it is served, without waiting: a fresh socket's send buffer takes a small frame at
/// once, and a client that cannot take even that only misses the explanation.
pub(super) fn refuse(stream: TcpStream, code: ErrorCode, message: String) {
    let mut frame = BytesMut::new();
    let response = error_response(0, code, message);
    if tidelog_proto::frame::encode_frame(&response, &mut frame, 64 << 10).is_err() {
        return;
    }
    // Back to a plain socket: tokio's `try_write` needs readiness the reactor has not seen.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let _ = std::io::Write::write(&mut &stream, &frame);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
