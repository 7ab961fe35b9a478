//! A small blocking client of the native protocol, written from docs/protocol.md rather than
//! shared with `tidelog-client`, so the two check each other. It can also write arbitrary bytes,
//! for the malformed-input tests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tidelog_proto::frame::{decode_frame, encode_frame};
use tidelog_proto::pb::{self, ApiKey, ErrorCode};
use tidelog_proto::PROTOCOL_VERSION;

/// Largest response frame accepted: the broker's fetch limit plus framing, with room to spare.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 128 << 20;
/// Default bound on any single read from the broker.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to a broker.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
    next_correlation_id: u64,
    /// Responses read while waiting for another correlation id.
    stashed: HashMap<u64, pb::Response>,
}

/// What a connection yielded after malformed input.
#[derive(Debug)]
pub enum Reaction {
    /// The broker answered (possibly more than once) and then closed the connection.
    RespondedThenClosed(Vec<pb::Response>),
    /// The broker answered and kept the connection open.
    Responded(Vec<pb::Response>),
    /// The broker closed the connection without a word (or reset it).
    Closed,
    /// Nothing arrived and the connection is still open.
    Silent,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(64 << 10),
            next_correlation_id: 1,
            stashed: HashMap::new(),
        })
    }

    /// Connects or panics.
    pub fn connect_or_panic(addr: SocketAddr) -> Self {
        Self::connect(addr).unwrap_or_else(|error| panic!("connecting to the broker at {addr}: {error}"))
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A request with a fresh correlation id (returned too) and protocol version 1.
    pub fn request(&mut self, body: pb::request::Body) -> (u64, pb::Request) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let request = pb::Request {
            header: Some(pb::RequestHeader {
                api: api_of(&body) as i32,
                version: PROTOCOL_VERSION,
                correlation_id,
                client_id: "tidelog-e2e".into(),
            }),
            body: Some(body),
        };
        (correlation_id, request)
    }

    pub fn send(&mut self, request: &pb::Request) -> io::Result<()> {
        let mut frame = BytesMut::new();
        encode_frame(request, &mut frame, usize::MAX).expect("request fits in a frame");
        self.stream.write_all(&frame)
    }

    /// Sends `body` with a fresh correlation id without waiting for the answer.
    pub fn send_body(&mut self, body: pb::request::Body) -> io::Result<u64> {
        let (correlation_id, request) = self.request(body);
        self.send(&request)?;
        Ok(correlation_id)
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next response frame; `Ok(None)` when the broker closed the connection
    /// between frames.
    pub fn read_response(&mut self) -> io::Result<Option<pb::Response>> {
        loop {
            match decode_frame(&mut self.buffer, RESPONSE_FRAME_BYTES_MAX) {
                Ok(Some(frame)) => {
                    return pb::Response::decode(frame)
                        .map(Some)
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error));
                }
                Ok(None) => {}
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            }
            let mut chunk = [0u8; 64 << 10];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed mid-frame ({} bytes pending)",
                            self.buffer.len()
                        ),
                    ))
                };
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads until the response to `correlation_id`, keeping others for later calls.
    pub fn wait_for(&mut self, correlation_id: u64) -> io::Result<pb::Response> {
        if let Some(response) = self.stashed.remove(&correlation_id) {
            return Ok(response);
        }
        loop {
            match self.read_response()? {
                Some(response) if response.correlation_id == correlation_id => return Ok(response),
                Some(response) => {
                    self.stashed.insert(response.correlation_id, response);
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed before the response to request {correlation_id}"),
                    ))
                }
            }
        }
    }

    /// Sends `body` and waits for its response.
    pub fn call(&mut self, body: pb::request::Body) -> io::Result<pb::Response> {
        let correlation_id = self.send_body(body)?;
        self.wait_for(correlation_id)
    }

    /// After malformed input: what the broker does within `timeout`. Reads responses until the
    /// connection closes, or until nothing more arrives for `quiet` (the connection is open).
    pub fn reaction(&mut self, quiet: Duration, timeout: Duration) -> Reaction {
        let deadline = Instant::now() + timeout;
        let mut responses = Vec::new();
        loop {
            let now = Instant::now();
            let wait = quiet
                .min(deadline.saturating_duration_since(now))
                .max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(wait))
                .expect("setting a read timeout");
            let result = self.read_response();
            self.stream
                .set_read_timeout(Some(READ_TIMEOUT))
                .expect("setting a read timeout");
            match result {
                Ok(Some(response)) => responses.push(response),
                Ok(None) => {
                    return if responses.is_empty() {
                        Reaction::Closed
                    } else {
                        Reaction::RespondedThenClosed(responses)
                    }
                }
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline || !responses.is_empty() {
                        return if responses.is_empty() {
                            Reaction::Silent
                        } else {
                            Reaction::Responded(responses)
                        };
                    }
                }
                // A reset counts as closed; whatever was answered before it still counts.
                Err(_) => {
                    return if responses.is_empty() {
                        Reaction::Closed
                    } else {
                        Reaction::RespondedThenClosed(responses)
                    }
                }
            }
        }
    }

    /// Half-closes the connection: the broker sees end of input.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    // ---- typed helpers; they panic on transport errors and on request-level errors ----

    /// Creates a topic; returns the per-topic result (not checked).
    pub fn create_topic_result(
        &mut self,
        name: &str,
        partitions: u32,
        config: Option<pb::TopicConfig>,
    ) -> pb::TopicResult {
        let body = pb::request::Body::CreateTopics(pb::CreateTopicsRequest {
            topics: vec![pb::create_topics_request::Topic {
                name: name.into(),
                partitions,
                config,
            }],
        });
        match self.call_ok(body) {
            pb::response::Body::CreateTopics(mut response) if response.topics.len() == 1 => {
                response.topics.remove(0)
            }
            other => panic!("unexpected CreateTopics response body: {other:?}"),
        }
    }

    /// Creates a topic and panics unless that succeeded.
    pub fn create_topic(&mut self, name: &str, partitions: u32, config: Option<pb::TopicConfig>) {
        let result = self.create_topic_result(name, partitions, config);
        assert_eq!(
            result.error(),
            ErrorCode::None,
            "creating topic {name}: {result:?}"
        );
    }

    pub fn metadata(&mut self, topics: &[&str]) -> pb::MetadataResponse {
        let body = pb::request::Body::Metadata(pb::MetadataRequest {
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
        });
        match self.call_ok(body) {
            pb::response::Body::Metadata(response) => response,
            other => panic!("unexpected Metadata response body: {other:?}"),
        }
    }

    /// A Produce request body for one partition.
    pub fn produce_body(topic: &str, partition: u32, records: Bytes, acks: pb::Acks) -> pb::request::Body {
        pb::request::Body::Produce(pb::ProduceRequest {
            acks: acks as i32,
            timeout_ms: 30_000,
            topics: vec![pb::produce_request::Topic {
                name: topic.into(),
                partitions: vec![pb::produce_request::Partition {
                    partition,
                    records,
                    ..Default::default()
                }],
            }],
        })
    }

    /// Produces with acks=leader and returns the partition's result (its error is not checked).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: Bytes,
    ) -> io::Result<pb::produce_response::Partition> {
        let response = self.call(Self::produce_body(topic, partition, records, pb::Acks::Leader))?;
        Ok(produce_partition(response))
    }

    /// Produces and panics unless the partition accepted the records; returns the base offset.
    pub fn produce_ok(&mut self, topic: &str, partition: u32, records: Bytes) -> i64 {
        let result = self
            .produce(topic, partition, records)
            .unwrap_or_else(|error| panic!("producing to {topic}/{partition}: {error}"));
        assert_eq!(
            result.error(),
            ErrorCode::None,
            "producing to {topic}/{partition}: {result:?}"
        );
        result.base_offset
    }

    pub fn fetch_body(
        topic: &str,
        partition: u32,
        fetch_offset: i64,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> pb::request::Body {
        pb::request::Body::Fetch(pb::FetchRequest {
            max_wait_ms,
            min_bytes,
            max_bytes: 4 << 20,
            topics: vec![pb::fetch_request::Topic {
                name: topic.into(),
                partitions: vec![pb::fetch_request::Partition {
                    partition,
                    fetch_offset,
                    max_bytes: 1 << 20,
                }],
            }],
        })
    }

    /// Fetches one partition; returns its result (its error is not checked).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        fetch_offset: i64,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> pb::fetch_response::Partition {
        let body = Self::fetch_body(topic, partition, fetch_offset, max_wait_ms, min_bytes);
        let response = self
            .call(body)
            .unwrap_or_else(|error| panic!("fetching {topic}/{partition}@{fetch_offset}: {error}"));
        fetch_partition(response)
    }

    /// ListOffsets for one partition: -1 latest, -2 earliest, or a timestamp.
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> pb::list_offsets_response::Partition {
        let body = pb::request::Body::ListOffsets(pb::ListOffsetsRequest {
            topics: vec![pb::list_offsets_request::Topic {
                name: topic.into(),
                partitions: vec![pb::list_offsets_request::Partition { partition, timestamp }],
            }],
        });
        match self.call_ok(body) {
            pb::response::Body::ListOffsets(response) => {
                let topic_result = response
                    .topics
                    .into_iter()
                    .next()
                    .expect("one topic in the response");
                topic_result
                    .partitions
                    .into_iter()
                    .next()
                    .expect("one partition in the response")
            }
            other => panic!("unexpected ListOffsets response body: {other:?}"),
        }
    }

    /// The high watermark of a partition, from ListOffsets(latest).
    pub fn high_watermark(&mut self, topic: &str, partition: u32) -> i64 {
        let result = self.list_offset(topic, partition, -1);
        assert_eq!(
            result.error(),
            ErrorCode::None,
            "ListOffsets {topic}/{partition}: {result:?}"
        );
        result.offset
    }

    /// Sends and waits; panics on a transport error or a request-level error.
    pub fn call_ok(&mut self, body: pb::request::Body) -> pb::response::Body {
        let api = api_of(&body);
        let response = self
            .call(body)
            .unwrap_or_else(|error| panic!("{api:?} request failed: {error}"));
        assert_eq!(
            response.error(),
            ErrorCode::None,
            "{api:?} request refused: {response:?}"
        );
        response
            .body
            .unwrap_or_else(|| panic!("{api:?} response without a body"))
    }
}

/// The `ApiKey` that goes with a request body. Bodies of APIs added after this harness was
/// written map to `Unspecified`; give those an explicit header with [`RawClient::send`].
#[allow(unreachable_patterns)]
pub fn api_of(body: &pb::request::Body) -> ApiKey {
    match body {
        pb::request::Body::CreateTopics(_) => ApiKey::CreateTopics,
        pb::request::Body::DeleteTopics(_) => ApiKey::DeleteTopics,
        pb::request::Body::Metadata(_) => ApiKey::Metadata,
        pb::request::Body::Produce(_) => ApiKey::Produce,
        pb::request::Body::Fetch(_) => ApiKey::Fetch,
        pb::request::Body::ListOffsets(_) => ApiKey::ListOffsets,
        // The proto crate knows every body's API; the arms above predate it.
        other => other.api_key(),
    }
}

/// The single partition result of a single-partition Produce response; panics on a
/// request-level error.
pub fn produce_partition(response: pb::Response) -> pb::produce_response::Partition {
    assert_eq!(response.error(), ErrorCode::None, "Produce refused: {response:?}");
    match response.body {
        Some(pb::response::Body::Produce(body)) => {
            let topic = body
                .topics
                .into_iter()
                .next()
                .expect("one topic in the Produce response");
            topic
                .partitions
                .into_iter()
                .next()
                .expect("one partition in the Produce response")
        }
        other => panic!("unexpected Produce response body: {other:?}"),
    }
}

/// The single partition result of a single-partition Fetch response; panics on a
/// request-level error.
pub fn fetch_partition(response: pb::Response) -> pb::fetch_response::Partition {
    assert_eq!(response.error(), ErrorCode::None, "Fetch refused: {response:?}");
    match response.body {
        Some(pb::response::Body::Fetch(body)) => {
            let topic = body
                .topics
                .into_iter()
                .next()
                .expect("one topic in the Fetch response");
            topic
                .partitions
                .into_iter()
                .next()
                .expect("one partition in the Fetch response")
        }
        other => panic!("unexpected Fetch response body: {other:?}"),
    }
}
