//! One Kafka client connection: bytes in, frames cut, request headers parsed, requests
//! dispatched, responses framed and written back **in request order** (Kafka's rule).
//!
//! Requests are started in arrival order on this task (so two pipelined produces to one
//! partition append in the order sent); their slow parts (a sync, a long poll) then run in
//! their own tasks. Ordering is kept by the writer: for every request owed a response the
//! reader queues a slot, in request order, either the response itself or the receiving end of
//! the task that will produce it; the writer takes slots from the front and waits for each in
//! turn, gathering every response already ready behind it into one vectored write. So a long
//! poll first delays the responses behind it, never lets them overtake it. A produce with
//! acks = 0 queues no slot: no response is owed.
//!
//! Bounds: at most `kafka.in_flight_requests_per_connection_max` requests under way, at most
//! `kafka.response_queue_depth` slots queued; past either the reader stops reading and TCP
//! pushes back on the client. Memory is charged to the broker's one budget
//! (`net::budget`) exactly as on the native listener: bytes as they are read (never the
//! announced size), a frame's charge until its request is answered, a response until written.
//! Time: the idle, size-prefix, frame-completion and write-stall timeouts of the native
//! listener, with this listener's values.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use tidelog_proto::frame::{decode_frame, FRAME_HEADER_BYTES};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::codec::{parse_request, response_head};
use super::dispatch;
use super::handlers::{Reply, Request, Response};
use super::KafkaContext;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::net::write::write_all_chunks;

/// Most bytes read from the socket at once, and so charged to the budget at once.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Frames up to this size are copied out of the read buffer, so a request that waits long
/// (a long poll) does not keep the whole read buffer's allocation alive uncharged.
const FRAME_COPY_BYTES_MAX: usize = 16 << 10;
/// Least a read waits for from the budget (or what the frame still lacks, if less).
const READ_GRANT_BYTES_MIN: usize = 4 << 10;
/// Bytes of ready responses the writer gathers into one vectored write.
const WRITE_COALESCE_BYTES: usize = 4 << 20;

/// A framed response on its way to the socket, with the memory it holds until written.
struct Outgoing {
    chunks: Vec<Bytes>,
    _reservation: Reservation,
}

/// One response owed, in request order.
enum Slot {
    Ready(Outgoing),
    /// Produced by the request's own task; a dropped sender means none is owed after all.
    Pending(oneshot::Receiver<Outgoing>),
}

/// What a connection's reader needs from its surroundings.
struct Reader<'a> {
    peer: SocketAddr,
    context: &'a Arc<KafkaContext>,
    slots: &'a mpsc::Sender<Slot>,
    in_flight: &'a Arc<Semaphore>,
    budget: &'a ConnectionBudget,
    /// Told by the writer when it gave up on the socket (failed or stalled).
    writer_gone: &'a Notify,
}

pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, context: Arc<KafkaContext>) {
    let span = tracing::info_span!("kafka_connection", %peer);
    async move {
        tracing::debug!("accepted");
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not disable Nagle's algorithm");
        }
        let (reader, writer) = stream.into_split();
        let config = &context.config;
        let (slots, queued) = mpsc::channel(config.response_queue_depth);
        let writer_gone = Arc::new(Notify::new());
        let write_stall = Duration::from_millis(config.write_stall_timeout_ms);
        let writer =
            tokio::spawn(write_responses(writer, queued, write_stall, writer_gone.clone()).in_current_span());
        let in_flight = Arc::new(Semaphore::new(config.in_flight_requests_per_connection_max));
        let budget = context.net.memory.connection();
        let surroundings = Reader {
            peer,
            context: &context,
            slots: &slots,
            in_flight: &in_flight,
            budget: &budget,
            writer_gone: &writer_gone,
        };
        match read_requests(reader, &surroundings).await {
            Ok(()) => tracing::debug!("client closed the connection"),
            Err(reason) => tracing::warn!(%reason, "closing Kafka connection"),
        }
        // Requests under way hold their own slots; the writer ends once they have answered,
        // so shutdown drains rather than abandons.
        drop(slots);
        if let Err(error) = writer.await {
            tracing::error!(%error, "Kafka connection writer ended abnormally");
        }
    }
    .instrument(span)
    .await;
}

/// Which clock the reader is running against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Between frames.
    Idle,
    /// A frame has started but its size prefix is incomplete.
    Header,
    /// The size prefix is in; the rest of the frame is not.
    Frame,
}

/// Reads and dispatches until the client closes, the broker shuts down, a timeout cuts the
/// connection, or the stream cannot be trusted any more (the `Err` says why).
async fn read_requests(reader: OwnedReadHalf, surroundings: &Reader<'_>) -> Result<(), String> {
    let config = &surroundings.context.config;
    let frame_bytes_max = config.frame_bytes_max;
    let idle_timeout = Duration::from_millis(config.connection_idle_timeout_ms);
    let header_timeout = Duration::from_millis(config.request_header_timeout_ms);
    let frame_timeout = Duration::from_millis(config.frame_completion_timeout_ms);
    let in_flight_max = config.in_flight_requests_per_connection_max;
    let mut shutdown = surroundings.context.net.shutdown.clone();
    let mut buffer = BytesMut::new();
    // Covers `buffer.len()`: the bytes of frames not yet cut.
    let mut held = surroundings.budget.empty();
    let mut frame_started = Instant::now();
    let mut last_activity = Instant::now();
    loop {
        loop {
            // Too large or empty: Kafka closes such a connection, and so do we (the size
            // prefix was refused before any of the frame was buffered).
            let frame = match decode_frame(&mut buffer, frame_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return Err(error.to_string()),
            };
            let frame = if frame.len() <= FRAME_COPY_BYTES_MAX {
                Bytes::copy_from_slice(&frame)
            } else {
                frame
            };
            let charge = held.split(frame.len() + FRAME_HEADER_BYTES);
            let permit = tokio::select! {
                permit = surroundings.in_flight.clone().acquire_owned() => permit.map_err(|error| error.to_string())?,
                _ = shutdown.changed() => return Ok(()),
            };
            start_request(frame, charge, surroundings, permit).await?;
            frame_started = Instant::now();
            last_activity = Instant::now();
        }
        if buffer.is_empty() {
            // Let go of the allocation the last frame came from.
            buffer = BytesMut::new();
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        let waiting = match buffer.len() {
            0 => Waiting::Idle,
            n if n < FRAME_HEADER_BYTES => Waiting::Header,
            _ => Waiting::Frame,
        };
        let deadline = match waiting {
            Waiting::Idle => last_activity + idle_timeout,
            Waiting::Header => frame_started + header_timeout,
            Waiting::Frame => frame_started + frame_timeout,
        };
        let timed_out = || -> Result<(), String> {
            Err(match waiting {
                Waiting::Idle => format!("idle for {} ms", idle_timeout.as_millis()),
                Waiting::Header => format!(
                    "frame size prefix incomplete after {} ms ({} bytes)",
                    header_timeout.as_millis(),
                    buffer.len()
                ),
                Waiting::Frame => format!(
                    "frame incomplete after {} ms ({} bytes received)",
                    frame_timeout.as_millis(),
                    buffer.len()
                ),
            })
        };
        // Wait for bytes before taking memory for them: a quiet connection holds none.
        tokio::select! {
            ready = reader.readable() => ready.map_err(|error| format!("read failed: {error}"))?,
            _ = tokio::time::sleep_until(deadline) => {
                if waiting == Waiting::Idle && surroundings.in_flight.available_permits() < in_flight_max {
                    // A request is under way (a long poll, a sync): not idle.
                    last_activity = Instant::now();
                    continue;
                }
                return timed_out();
            }
            _ = shutdown.changed() => return Ok(()),
            _ = surroundings.writer_gone.notified() => return Err("the socket stopped taking responses".into()),
        }
        let wanted = match frame_length(&buffer) {
            Some(total) => total.saturating_sub(buffer.len()).clamp(1, READ_CHUNK_BYTES),
            None => READ_CHUNK_BYTES,
        };
        let grant = tokio::select! {
            grant = surroundings.budget.reserve_between(wanted.min(READ_GRANT_BYTES_MIN), wanted, None) => {
                grant.map_err(|error| format!("no memory for the next read: {error}"))?
            }
            _ = tokio::time::sleep_until(deadline), if waiting != Waiting::Idle => return timed_out(),
            _ = shutdown.changed() => return Ok(()),
            _ = surroundings.writer_gone.notified() => return Err("the socket stopped taking responses".into()),
        };
        let granted = grant.bytes();
        held.merge(grant);
        if buffer.is_empty() {
            frame_started = Instant::now();
        }
        match frame_length(&buffer) {
            // Address space for the whole frame (already checked against the limit); pages
            // become memory only as bytes land, and the budget charges exactly those.
            Some(total) if total <= frame_bytes_max + FRAME_HEADER_BYTES => {
                buffer.reserve(total - buffer.len())
            }
            _ => buffer.reserve(granted),
        }
        let read = reader.try_read_buf(&mut (&mut buffer).limit(granted));
        match read {
            Ok(0) if buffer.is_empty() => return Ok(()),
            Ok(0) => {
                return Err(format!(
                    "client closed the connection mid-frame ({} bytes pending)",
                    buffer.len()
                ))
            }
            Ok(_) => last_activity = Instant::now(),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(format!("read failed: {error}")),
        }
        held.shrink_to(buffer.len());
    }
}

/// The whole length (prefix included) of the frame at the front of `buffer`, once its prefix
/// is in.
fn frame_length(buffer: &BytesMut) -> Option<usize> {
    let header = buffer.get(..FRAME_HEADER_BYTES)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    Some(length.saturating_add(FRAME_HEADER_BYTES))
}

/// Parses and dispatches one request and runs its in-order part here; a remainder that waits
/// gets its own task, and its slot in the writer's queue now. `charge` covers the frame and is
/// held until the request is answered. An `Err` closes the connection.
async fn start_request(
    frame: Bytes,
    charge: Reservation,
    surroundings: &Reader<'_>,
    permit: OwnedSemaphorePermit,
) -> Result<(), String> {
    let parsed = parse_request(frame).map_err(|error| error.to_string())?;
    let (api_key, version, correlation_id) = (parsed.api_key, parsed.version(), parsed.correlation_id());
    let span = tracing::debug_span!(
        "kafka_request",
        api = ?api_key,
        version,
        correlation_id,
        client_id = parsed.header.client_id.as_deref().unwrap_or(""),
    );
    let request = Request {
        context: surroundings.context,
        api_key,
        header: &parsed.header,
        body: parsed.body.clone(),
        peer: surroundings.peer,
        budget: surroundings.budget,
    };
    let reply = span.in_scope(|| dispatch::route(request));
    // Awaited here, before the next request starts, so in-order work stays in order.
    let reply = match reply {
        Reply::Ordered(ordered) => ordered.instrument(span.clone()).await,
        other => other,
    };
    let framer = Framer {
        budget: surroundings.budget.clone(),
        api_key,
        version,
        correlation_id,
    };
    let slot = match reply {
        Reply::Now(response) => Slot::Ready(framer.frame(response).map_err(|error| {
            tracing::error!(parent: &span, %error, "response could not be framed");
            error
        })?),
        Reply::Nothing => return Ok(()),
        Reply::Close(reason) => {
            return Err(reason);
        }
        Reply::Ordered(_) => {
            tracing::error!(parent: &span, "a handler's in-order part yielded another in-order part");
            return Err("internal error".into());
        }
        Reply::Later(later) => {
            let (sender, receiver) = oneshot::channel();
            tokio::spawn(
                async move {
                    if let Some(response) = later.await {
                        match framer.frame(response) {
                            // The receiver is gone only when the connection is.
                            Ok(outgoing) => drop(sender.send(outgoing)),
                            // Dropping the sender skips the slot; the client will time out
                            // this one request, which beats a misframed stream.
                            Err(error) => tracing::error!(%error, "response could not be framed"),
                        }
                    }
                    drop(charge);
                    drop(permit);
                }
                .instrument(span),
            );
            Slot::Pending(receiver)
        }
    };
    // The writer is gone only when the client's socket failed; the reader learns it next.
    let _ = surroundings.slots.send(slot).await;
    Ok(())
}

/// Frames one response: size prefix and response header in front of the body's chunks, and
/// the whole charged to the connection's budget until written.
struct Framer {
    budget: ConnectionBudget,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    correlation_id: i32,
}

impl Framer {
    fn frame(&self, response: Response) -> Result<Outgoing, String> {
        let body_bytes = response.bytes();
        let head = response_head(self.api_key, self.version, self.correlation_id, body_bytes)
            .map_err(|error| error.to_string())?;
        let frame_bytes = head.len() + body_bytes;
        let mut reservation = response.held.unwrap_or_else(|| self.budget.empty());
        if frame_bytes > reservation.bytes() {
            // The bytes exist already; charging them makes further reads wait.
            reservation.merge(self.budget.charge(frame_bytes - reservation.bytes()));
        }
        let mut chunks = Vec::with_capacity(response.chunks.len() + 1);
        chunks.push(head);
        chunks.extend(response.chunks);
        Ok(Outgoing {
            chunks,
            _reservation: reservation,
        })
    }
}

/// Writes responses in slot order, gathering those already ready into one vectored write. A
/// socket that takes no byte for `write_stall` is given up on: the reader is told, and the
/// remaining responses (and their memory) are dropped.
async fn write_responses(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Slot>,
    write_stall: Duration,
    gone: Arc<Notify>,
) {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut held: Vec<Outgoing> = Vec::new();
    // A slot taken off the queue whose response is not ready yet: the next to wait for.
    let mut front: Option<Slot> = None;
    loop {
        let slot = match front.take() {
            Some(slot) => slot,
            None => match queued.recv().await {
                Some(slot) => slot,
                None => break,
            },
        };
        let Some(first) = resolve(slot).await else {
            continue;
        };
        let mut gathered = 0;
        let mut take = |outgoing: Outgoing, gathered: &mut usize| {
            *gathered += outgoing.chunks.iter().map(Bytes::len).sum::<usize>();
            pending.extend(outgoing.chunks.iter().cloned());
            held.push(outgoing);
        };
        take(first, &mut gathered);
        while gathered < WRITE_COALESCE_BYTES {
            let Ok(slot) = queued.try_recv() else {
                break;
            };
            match slot {
                Slot::Ready(outgoing) => take(outgoing, &mut gathered),
                Slot::Pending(mut receiver) => match receiver.try_recv() {
                    Ok(outgoing) => take(outgoing, &mut gathered),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        front = Some(Slot::Pending(receiver));
                        break;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => {}
                },
            }
        }
        let written = write_all_chunks(&mut writer, &mut pending, write_stall).await;
        // Written (or failed): either way the bytes are no longer needed.
        held.clear();
        if let Err(error) = written {
            if error.kind() == std::io::ErrorKind::TimedOut {
                tracing::warn!(
                    stall_ms = write_stall.as_millis() as u64,
                    "Kafka client stopped reading its responses; cutting the connection"
                );
            } else {
                tracing::debug!(%error, "write failed; dropping the remaining responses");
            }
            pending.clear();
            drop(writer);
            gone.notify_one();
            // Keep receiving so the reader never blocks on a dead connection.
            drop(front);
            while queued.recv().await.is_some() {}
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// The response of `slot`, once it is ready; `None` when none is owed after all.
async fn resolve(slot: Slot) -> Option<Outgoing> {
    match slot {
        Slot::Ready(outgoing) => Some(outgoing),
        Slot::Pending(receiver) => receiver.await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_length_includes_the_prefix_and_never_overflows() {
        let mut buffer = BytesMut::new();
        assert_eq!(frame_length(&buffer), None);
        buffer.put_u32(10);
        assert_eq!(frame_length(&buffer), Some(14));
        let mut huge = BytesMut::new();
        huge.put_u32(u32::MAX);
        assert!(frame_length(&huge).is_some());
    }
}
