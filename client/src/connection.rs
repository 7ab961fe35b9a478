//! One TCP connection to a broker: a writer task that drains a bounded queue of frames onto
//! the socket, a reader task that cuts response frames off the socket and hands each to the
//! request waiting on its correlation id. Many requests may be in flight (pipelining) and
//! responses may come back in any order; a semaphore bounds the requests in flight.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use tidelog_proto::frame::decode_frame;
use tidelog_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::types::Acks;
use crate::wire::{self, ProduceTopic};

/// Frames waiting for the writer task, beyond those already in flight.
const WRITE_QUEUE_FRAMES: usize = 64;
/// The writer hands at most this many buffers to one `writev`.
const WRITE_SLICES_MAX: usize = 64;
/// The reader grows its buffer by at least this much before a read, so that a stream of
/// small frames is not read a few bytes at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Settings every connection shares; built by the client from its config.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionConfig {
    pub client_id: Arc<str>,
    pub max_frame_bytes: usize,
    pub max_in_flight_requests: usize,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

type ResponseResult = Result<pb::Response>;

/// A request waiting for its response. Holding the permit keeps its in-flight slot taken.
#[derive(Debug)]
struct Pending {
    tx: oneshot::Sender<ResponseResult>,
    _permit: OwnedSemaphorePermit,
}

/// A frame for the writer task.
#[derive(Debug)]
struct Outgoing {
    parts: Vec<Bytes>,
    /// Told once the frame is on the socket; used when no response will come (acks=none).
    written: Option<oneshot::Sender<Result<()>>>,
    /// Released once the frame is written, for frames that get no response.
    _permit: Option<OwnedSemaphorePermit>,
}

/// State shared by the handle and both tasks.
#[derive(Debug)]
struct Shared {
    addr: String,
    /// `None` once the connection is closed: nothing new may register after that.
    pending: Mutex<Option<HashMap<u64, Pending>>>,
    in_flight: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Option<HashMap<u64, Pending>>> {
        // A panic while holding this lock leaves the map consistent (every operation on it is a
        // single insert or remove), so a poisoned lock is safe to keep using.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the connection: every waiting request fails, later ones fail at once.
    fn close(&self, reason: &Error) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            tracing::debug!(addr = %self.addr, error = %reason, "connection closed");
        }
        self.in_flight.close();
        let pending = self.lock_pending().take();
        for (_, waiter) in pending.into_iter().flatten() {
            let _ = waiter.tx.send(Err(Error::ConnectionClosed {
                addr: self.addr.clone(),
            }));
        }
    }

    fn closed_error(&self) -> Error {
        Error::ConnectionClosed {
            addr: self.addr.clone(),
        }
    }
}

/// Removes a pending entry when the waiting future goes away (timeout or cancellation), so
/// its in-flight slot is not held until a response that may never come.
#[derive(Debug)]
struct PendingGuard {
    shared: Arc<Shared>,
    correlation_id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(map) = self.shared.lock_pending().as_mut() {
            map.remove(&self.correlation_id);
        }
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    config: ConnectionConfig,
    next_correlation_id: AtomicU64,
    writer_tx: mpsc::Sender<Outgoing>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer ends by itself once the queue's sender (ours) is gone, after writing what
        // is queued; the reader would wait on the socket forever.
        self.reader.abort();
        self.shared.close(&Error::ConnectionClosed {
            addr: self.shared.addr.clone(),
        });
    }
}

/// A cheap-to-clone handle to one broker connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    inner: Arc<Inner>,
}

/// A request that has been queued for writing; await its outcome with [`InFlight::wait`].
#[derive(Debug)]
pub(crate) enum InFlight {
    Response {
        rx: oneshot::Receiver<ResponseResult>,
        guard: PendingGuardHandle,
        timeout: Duration,
    },
    Written {
        rx: oneshot::Receiver<Result<()>>,
        addr: String,
    },
}

/// Opaque wrapper so `InFlight` can be named outside this module.
#[derive(Debug)]
pub(crate) struct PendingGuardHandle(PendingGuard);

impl InFlight {
    /// Gives the response `more` time on top of the request timeout.
    fn extend_timeout(&mut self, more: Duration) {
        if let InFlight::Response { timeout, .. } = self {
            *timeout = timeout.saturating_add(more);
        }
    }

    /// The response, or `None` for a request that gets no response (resolved once written).
    pub async fn wait(self) -> Result<Option<pb::Response>> {
        match self {
            InFlight::Response { rx, guard, timeout } => {
                let addr = guard.0.shared.addr.clone();
                match tokio::time::timeout(timeout, rx).await {
                    Err(_) => Err(Error::Timeout { addr, timeout }),
                    Ok(Err(_)) => Err(Error::ConnectionClosed { addr }),
                    Ok(Ok(result)) => result.map(Some),
                }
            }
            InFlight::Written { rx, addr } => match rx.await {
                Ok(result) => result.map(|()| None),
                Err(_) => Err(Error::ConnectionClosed { addr }),
            },
        }
    }
}

impl Connection {
    /// Opens a TCP connection to one resolved address and starts its tasks.
    pub async fn connect(
        addr: std::net::SocketAddr,
        label: String,
        config: ConnectionConfig,
    ) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        // Requests are written whole, as soon as they are ready: Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok(Self::from_stream(stream, label, config))
    }

    fn from_stream(stream: TcpStream, addr: String, config: ConnectionConfig) -> Self {
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared {
            addr,
            pending: Mutex::new(Some(HashMap::new())),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests.max(1))),
            closed: AtomicBool::new(false),
        });
        let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE_FRAMES);
        tokio::spawn(write_loop(write_half, writer_rx, shared.clone()));
        let reader = tokio::spawn(read_loop(read_half, shared.clone(), config.max_frame_bytes));
        Self {
            inner: Arc::new(Inner {
                shared,
                config,
                next_correlation_id: AtomicU64::new(1),
                writer_tx,
                reader,
            }),
        }
    }

    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    pub fn is_closed(&self) -> bool {
        self.inner.shared.closed.load(Ordering::SeqCst)
    }

    /// Sends a request and waits for its response body. A response-level error code becomes
    /// [`Error::Broker`].
    pub async fn request(&self, body: pb::request::Body) -> Result<pb::response::Body> {
        self.request_held(body, Duration::ZERO).await
    }

    /// [`request`](Self::request) for a request the broker may hold up to `broker_wait` before
    /// it answers (a long poll, a wait for a commit): the response may take the request timeout
    /// plus that.
    pub async fn request_held(
        &self,
        body: pb::request::Body,
        broker_wait: Duration,
    ) -> Result<pb::response::Body> {
        let mut in_flight = self
            .start(true, |correlation_id, config| {
                let frame =
                    wire::encode_request(correlation_id, &config.client_id, body, config.max_frame_bytes)?;
                Ok(vec![frame])
            })
            .await?;
        in_flight.extend_timeout(broker_wait);
        let response = in_flight.wait().await?.ok_or_else(|| Error::Protocol {
            addr: self.addr().to_owned(),
            reason: "no response to a request that expects one".into(),
        })?;
        if let Some(code) = wire::error_code(response.error) {
            return Err(Error::Broker {
                code,
                message: response.error_message,
            });
        }
        response.body.ok_or_else(|| Error::Protocol {
            addr: self.addr().to_owned(),
            reason: "response without a body".into(),
        })
    }

    /// Queues a produce request built around `topics`' batches. Returns once the frame is
    /// queued (waiting first for an in-flight slot: that is the producer's backpressure).
    pub async fn start_produce(
        &self,
        acks: Acks,
        timeout_ms: u32,
        topics: &[ProduceTopic<'_>],
    ) -> Result<InFlight> {
        self.start(acks == Acks::Leader, |correlation_id, config| {
            let frame = wire::encode_produce(
                correlation_id,
                &config.client_id,
                acks,
                timeout_ms,
                topics,
                config.max_frame_bytes,
            )?;
            Ok(frame.parts)
        })
        .await
    }

    async fn start(
        &self,
        expect_response: bool,
        encode: impl FnOnce(u64, &ConnectionConfig) -> Result<Vec<Bytes>>,
    ) -> Result<InFlight> {
        let shared = &self.inner.shared;
        let permit = shared
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shared.closed_error())?;
        let correlation_id = self.inner.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let parts = encode(correlation_id, &self.inner.config)?;
        if expect_response {
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = shared.lock_pending();
                let map = pending.as_mut().ok_or_else(|| shared.closed_error())?;
                map.insert(correlation_id, Pending { tx, _permit: permit });
            }
            let guard = PendingGuard {
                shared: shared.clone(),
                correlation_id,
            };
            let outgoing = Outgoing {
                parts,
                written: None,
                _permit: None,
            };
            // On failure the guard drops and unregisters the request.
            self.inner
                .writer_tx
                .send(outgoing)
                .await
                .map_err(|_| shared.closed_error())?;
            Ok(InFlight::Response {
                rx,
                guard: PendingGuardHandle(guard),
                timeout: self.inner.config.request_timeout,
            })
        } else {
            let (tx, rx) = oneshot::channel();
            let outgoing = Outgoing {
                parts,
                written: Some(tx),
                _permit: Some(permit),
            };
            self.inner
                .writer_tx
                .send(outgoing)
                .await
                .map_err(|_| shared.closed_error())?;
            Ok(InFlight::Written {
                rx,
                addr: shared.addr.clone(),
            })
        }
    }
}

async fn write_loop(mut stream: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, shared: Arc<Shared>) {
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut done: Vec<Outgoing> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Coalesce whatever else is already queued into the same writes.
        queue.extend(first.parts.iter().cloned());
        done.push(first);
        while done.len() < WRITE_QUEUE_FRAMES {
            match rx.try_recv() {
                Ok(next) => {
                    queue.extend(next.parts.iter().cloned());
                    done.push(next);
                }
                Err(_) => break,
            }
        }
        let result = write_all(&mut stream, &mut queue).await;
        for outgoing in done.drain(..) {
            if let Some(written) = outgoing.written {
                let _ = written.send(match &result {
                    Ok(()) => Ok(()),
                    Err(_) => Err(shared.closed_error()),
                });
            }
        }
        if let Err(source) = result {
            shared.close(&Error::Io {
                addr: shared.addr.clone(),
                source,
            });
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Writes every buffer in `queue`, several per system call.
async fn write_all(stream: &mut OwnedWriteHalf, queue: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !queue.is_empty() {
        let slices: Vec<IoSlice<'_>> = queue
            .iter()
            .take(WRITE_SLICES_MAX)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = queue.front_mut() else { break };
            if front.len() <= written {
                written -= front.len();
                queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

async fn read_loop(mut stream: OwnedReadHalf, shared: Arc<Shared>, max_frame_bytes: usize) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        loop {
            match decode_frame(&mut buf, max_frame_bytes) {
                Ok(Some(frame)) => {
                    if let Err(error) = dispatch(&shared, frame) {
                        shared.close(&error);
                        return;
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    shared.close(&Error::Frame {
                        addr: shared.addr.clone(),
                        source,
                    });
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 8 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                shared.close(&shared.closed_error());
                return;
            }
            Ok(_) => {}
            Err(source) => {
                shared.close(&Error::Io {
                    addr: shared.addr.clone(),
                    source,
                });
                return;
            }
        }
    }
}

fn dispatch(shared: &Shared, frame: Bytes) -> Result<()> {
    let response = pb::Response::decode(frame).map_err(|source| Error::Decode {
        addr: shared.addr.clone(),
        source: Box::new(source),
    })?;
    let waiter = shared
        .lock_pending()
        .as_mut()
        .and_then(|map| map.remove(&response.correlation_id));
    match waiter {
        Some(waiter) => {
            let _ = waiter.tx.send(Ok(response));
        }
        // A request that timed out or was cancelled: its response is simply dropped.
        None => {
            tracing::debug!(addr = %shared.addr, correlation_id = response.correlation_id, "response for no waiting request")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidelog_proto::frame::encode_frame;
    use tokio::net::TcpListener;

    fn config(max_in_flight_requests: usize) -> ConnectionConfig {
        ConnectionConfig {
            client_id: Arc::from("test"),
            max_frame_bytes: 1 << 20,
            max_in_flight_requests,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn metadata_request(topic: &str) -> pb::request::Body {
        pb::request::Body::Metadata(pb::MetadataRequest {
            topics: vec![topic.to_owned()],
        })
    }

    /// Reads `count` request frames from the socket.
    async fn read_requests(stream: &mut TcpStream, count: usize) -> Vec<pb::Request> {
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        while requests.len() < count {
            while let Some(frame) = decode_frame(&mut buf, 1 << 20).unwrap() {
                requests.push(pb::Request::decode(frame).unwrap());
            }
            if requests.len() < count {
                assert_ne!(stream.read_buf(&mut buf).await.unwrap(), 0, "client hung up");
            }
        }
        requests
    }

    fn answer(request: &pb::Request) -> pb::Response {
        let header = request.header.clone().unwrap();
        let Some(pb::request::Body::Metadata(metadata)) = &request.body else {
            panic!("unexpected request");
        };
        // Echo the requested topic name back, so the test can see which answer went where.
        pb::Response {
            correlation_id: header.correlation_id,
            body: Some(pb::response::Body::Metadata(pb::MetadataResponse {
                brokers: vec![],
                topics: vec![pb::TopicMetadata {
                    name: metadata.topics[0].clone(),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn out_of_order_responses_reach_the_right_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let requests = read_requests(&mut stream, 5).await;
            // Answer in reverse order of arrival.
            let mut out = BytesMut::new();
            for request in requests.iter().rev() {
                encode_frame(&answer(request), &mut out, 1 << 20).unwrap();
            }
            stream.write_all(&out).await.unwrap();
            stream
        });
        let connection = Connection::connect(addr, addr.to_string(), config(8))
            .await
            .unwrap();
        let requests = (0..5).map(|i| {
            let connection = connection.clone();
            async move {
                let topic = format!("topic-{i}");
                let body = connection.request(metadata_request(&topic)).await.unwrap();
                let pb::response::Body::Metadata(metadata) = body else {
                    panic!("wrong body")
                };
                assert_eq!(metadata.topics[0].name, topic);
            }
        });
        futures::future::join_all(requests).await;
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn in_flight_requests_are_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connection = Connection::connect(addr, addr.to_string(), config(2))
            .await
            .unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..3 {
            let connection = connection.clone();
            tasks.push(tokio::spawn(async move {
                connection.request(metadata_request(&format!("t{i}"))).await
            }));
        }
        // Two requests arrive; the third waits for a slot, so answering the first two frees it.
        let first_two = read_requests(&mut stream, 2).await;
        assert_eq!(connection.inner.shared.in_flight.available_permits(), 0);
        let mut out = BytesMut::new();
        for request in &first_two {
            encode_frame(&answer(request), &mut out, 1 << 20).unwrap();
        }
        stream.write_all(&out).await.unwrap();
        let third = read_requests(&mut stream, 1).await;
        let mut out = BytesMut::new();
        encode_frame(&answer(&third[0]), &mut out, 1 << 20).unwrap();
        stream.write_all(&out).await.unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn peer_hang_up_fails_waiting_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connection = Connection::connect(addr, addr.to_string(), config(4))
            .await
            .unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.request(metadata_request("t")).await })
        };
        read_requests(&mut stream, 1).await;
        drop(stream);
        let result = request.await.unwrap();
        assert!(
            matches!(result, Err(Error::ConnectionClosed { .. })),
            "{result:?}"
        );
        assert!(connection.is_closed());
        let again = connection.request(metadata_request("t")).await;
        assert!(matches!(again, Err(Error::ConnectionClosed { .. })), "{again:?}");
    }

    #[tokio::test]
    async fn oversized_response_frame_closes_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut small = config(4);
        small.max_frame_bytes = 64;
        let connection = Connection::connect(addr, addr.to_string(), small).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.request(metadata_request("t")).await })
        };
        read_requests(&mut stream, 1).await;
        stream.write_all(&[0, 0, 1, 0]).await.unwrap();
        let result = request.await.unwrap();
        assert!(
            matches!(result, Err(Error::ConnectionClosed { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn acks_none_produce_resolves_once_written_without_a_response() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connection = Connection::connect(addr, addr.to_string(), config(1))
            .await
            .unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let topics = [ProduceTopic {
            name: "t",
            partitions: vec![wire::ProducePartition {
                partition: 0,
                records: Bytes::from_static(b"batch"),
            }],
        }];
        // With one in-flight slot, the second send only proceeds if the first released it
        // when written (no response ever comes).
        for _ in 0..2 {
            let in_flight = connection.start_produce(Acks::None, 100, &topics).await.unwrap();
            assert!(in_flight.wait().await.unwrap().is_none());
        }
        let requests = read_requests(&mut stream, 2).await;
        assert!(matches!(requests[1].body, Some(pb::request::Body::Produce(_))));
    }
}
