//! A raw protocol client for tests: hand-built frames over real TCP on 127.0.0.1, with
//! pipelining (responses matched by correlation id) and bounded waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tidelog_broker::{Broker, BrokerConfig, BrokerHandle};
use tidelog_proto::frame::{decode_frame, encode_frame};
use tidelog_proto::pb::{self, request::Body, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test waits for one response.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const FRAME_BYTES_MAX: usize = 64 << 20;

pub struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
    next_id: u64,
    /// Responses that arrived while waiting for another.
    pub early: HashMap<u64, pb::Response>,
}

impl RawClient {
    pub async fn connect(broker: &BrokerHandle) -> Self {
        Self {
            stream: TcpStream::connect(broker.local_addr()).await.unwrap(),
            buffer: BytesMut::new(),
            next_id: 1,
            early: HashMap::new(),
        }
    }

    /// A request for `body` under the API the header names (normally the body's own).
    pub fn request_as(&mut self, api: pb::ApiKey, body: Body) -> (u64, pb::Request) {
        let id = self.next_id;
        self.next_id += 1;
        let request = pb::Request {
            header: Some(pb::RequestHeader {
                api: api as i32,
                version: 1,
                correlation_id: id,
                client_id: "broker-test".into(),
            }),
            body: Some(body),
        };
        (id, request)
    }

    pub fn request(&mut self, body: Body) -> (u64, pb::Request) {
        self.request_as(body.api_key(), body)
    }

    pub async fn send(&mut self, request: &pb::Request) {
        let mut frame = BytesMut::new();
        encode_frame(request, &mut frame, FRAME_BYTES_MAX).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response frame, whatever its correlation id; `None` when the broker closed.
    pub async fn next_response(&mut self) -> Option<pb::Response> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(frame) = decode_frame(&mut self.buffer, FRAME_BYTES_MAX).unwrap() {
                return Some(pb::Response::decode(frame).unwrap());
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer))
                .await
                .expect("no response within the timeout")
                .unwrap();
            if read == 0 {
                return None;
            }
        }
    }

    pub async fn response_to(&mut self, id: u64) -> pb::Response {
        if let Some(response) = self.early.remove(&id) {
            return response;
        }
        loop {
            let response = self.next_response().await.expect("connection closed");
            if response.correlation_id == id {
                return response;
            }
            self.early.insert(response.correlation_id, response);
        }
    }

    pub async fn call(&mut self, body: Body) -> pb::Response {
        let (id, request) = self.request(body);
        self.send(&request).await;
        self.response_to(id).await
    }

    /// `call` for a request that must succeed as a whole; returns its body.
    pub async fn call_ok(&mut self, body: Body) -> response::Body {
        let response = self.call(body).await;
        assert_eq!(response.error, 0, "{}", response.error_message);
        response.body.expect("a successful response has a body")
    }

    pub async fn create_topic(&mut self, name: &str, partitions: u32) -> pb::TopicResult {
        let body = Body::CreateTopics(pb::CreateTopicsRequest {
            topics: vec![pb::create_topics_request::Topic {
                name: name.into(),
                partitions,
                config: None,
            }],
        });
        match self.call_ok(body).await {
            response::Body::CreateTopics(mut created) => created.topics.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// An in-process broker on a free port of 127.0.0.1, its data in `dir`.
pub async fn start_broker(dir: &Path, adjust: impl FnOnce(&mut BrokerConfig)) -> BrokerHandle {
    let mut config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    };
    // Never Kafka's default port: tests run many brokers at once.
    config.kafka.listen = Some("127.0.0.1:0".parse().unwrap());
    adjust(&mut config);
    Broker::start(config).await.unwrap()
}

/// Produces `records` to partition 0 of `topic` (acks = leader) and returns that partition's
/// answer.
pub async fn produce_partition(
    client: &mut RawClient,
    topic: &str,
    records: Bytes,
) -> pb::produce_response::Partition {
    let body = Body::Produce(pb::ProduceRequest {
        acks: pb::Acks::Leader as i32,
        timeout_ms: 10_000,
        topics: vec![pb::produce_request::Topic {
            name: topic.into(),
            // Built from the default so fields later added to the request keep their defaults.
            #[allow(clippy::needless_update)]
            partitions: vec![pb::produce_request::Partition {
                partition: 0,
                records,
                ..Default::default()
            }],
        }],
    });
    match client.call_ok(body).await {
        response::Body::Produce(mut produced) => produced.topics.remove(0).partitions.remove(0),
        other => panic!("unexpected {other:?}"),
    }
}
