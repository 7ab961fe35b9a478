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
//! pushes back on the client. Frames are read by `net::read`, exactly as on the native
//! listener (charged to the broker's one budget as they are read, the idle, size-prefix and
//! frame-completion timeouts with this listener's values); a frame's charge is held until its
//! request is answered, a response's until it is written, and a socket that stalls a write
//! for `kafka.write_stall_timeout_ms` is cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::codec::{parse_request, response_head};
use super::dispatch;
use super::handlers::{Reply, Request, Response};
use super::KafkaContext;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::net::read::{FrameReader, ReaderParts};
use crate::net::write::write_all_chunks;

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
        let limits = &context.net.limits;
        let (slots, queued) = mpsc::channel(limits.response_queue_depth);
        let writer_gone = Arc::new(Notify::new());
        let write_stall = Duration::from_millis(limits.write_stall_timeout_ms);
        let writer =
            tokio::spawn(write_responses(writer, queued, write_stall, writer_gone.clone()).in_current_span());
        let in_flight = Arc::new(Semaphore::new(limits.in_flight_requests_per_connection_max));
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

/// Reads and dispatches until the client closes, the broker shuts down, a timeout cuts the
/// connection, or the stream cannot be trusted any more (the `Err` says why).
async fn read_requests(reader: OwnedReadHalf, surroundings: &Reader<'_>) -> Result<(), String> {
    let net = &surroundings.context.net;
    let mut frames = FrameReader::new(
        reader,
        ReaderParts {
            limits: &net.limits,
            budget: surroundings.budget,
            in_flight: surroundings.in_flight,
            writer_gone: surroundings.writer_gone,
            shutdown: net.shutdown.clone(),
        },
    );
    loop {
        match frames.next().await {
            Ok(Some(frame)) => start_request(frame.bytes, frame.charge, surroundings, frame.permit).await?,
            Ok(None) => return Ok(()),
            // Too large or empty: Kafka closes such a connection without a word, and so do we.
            Err(error) => return Err(error.to_string()),
        }
    }
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
