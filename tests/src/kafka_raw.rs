//! A small blocking Kafka-protocol client for the Kafka listener's tests: requests encoded with
//! kafka-protocol's own encoders (so the broker is checked against an independent codec),
//! responses decoded with its decoders, plus raw frames and bytes for malformed-input tests.
//! Responses are read in the order they arrive, so a test can check Kafka's ordering rule.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Default bound on any single read from the broker.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response frame accepted.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 128 << 20;

/// One Kafka connection to a broker.
#[derive(Debug)]
pub struct KafkaRaw {
    stream: TcpStream,
    next_correlation_id: i32,
    client_id: String,
}

impl KafkaRaw {
    /// Connects to `addr` (the broker's Kafka listener).
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .unwrap_or_else(|error| panic!("connecting to the Kafka listener at {addr}: {error}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            next_correlation_id: 1,
            client_id: "tidelog-e2e".into(),
        }
    }

    /// Changes how long a read may block before failing with `WouldBlock`/`TimedOut`.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("read timeout");
    }

    /// The frame of `request` in `version` with correlation id `correlation_id`.
    pub fn encode<R: Request>(&self, request: &R, version: i16, correlation_id: i32) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encoding a request header");
        request
            .encode(&mut body, version)
            .unwrap_or_else(|error| panic!("encoding {} v{version}: {error}", R::KEY));
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(u32::try_from(body.len()).expect("request fits a frame"));
        frame.extend_from_slice(&body);
        frame.freeze()
    }

    /// Sends `request` in `version`; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let frame = self.encode(request, version, correlation_id);
        self.stream.write_all(&frame).expect("sending a Kafka request");
        correlation_id
    }

    /// Writes `bytes` as they are (frames built by hand, garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next response frame whole (size prefix removed).
    pub fn read_frame(&mut self) -> io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = u32::from_be_bytes(size) as usize;
        if size > RESPONSE_FRAME_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response frame of {size} bytes"),
            ));
        }
        let mut frame = vec![0u8; size];
        self.stream.read_exact(&mut frame)?;
        Ok(Bytes::from(frame))
    }

    /// Reads the next response as the answer to an `R` request of `version`: its correlation
    /// id and body.
    pub fn receive<R: Request>(&mut self, version: i16) -> (i32, R::Response) {
        let mut frame = self
            .read_frame()
            .unwrap_or_else(|error| panic!("reading the response to {} v{version}: {error}", R::KEY));
        decode_response::<R>(&mut frame, version)
    }

    /// Sends `request` and reads its response, which must carry its correlation id.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let sent = self.send(request, version);
        let (correlation_id, response) = self.receive::<R>(version);
        assert_eq!(correlation_id, sent, "response to another request");
        response
    }

    /// Whether the broker has closed the connection: a read returns end of stream (or a
    /// reset) within `within`. A response arriving instead is an error.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.set_read_timeout(within);
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("the broker answered instead of closing the connection"),
            Err(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
            ),
        }
    }
}

/// Decodes a response frame (header and body) to an `R` request of `version`.
pub fn decode_response<R: Request>(frame: &mut Bytes, version: i16) -> (i32, R::Response) {
    let header_version = R::Response::header_version(version);
    let header = ResponseHeader::decode(frame, header_version)
        .unwrap_or_else(|error| panic!("decoding a {} v{version} response header: {error}", R::KEY));
    let response = R::Response::decode(frame, version)
        .unwrap_or_else(|error| panic!("decoding a {} v{version} response: {error}", R::KEY));
    assert_eq!(
        frame.remaining(),
        0,
        "{} v{version} response has {} bytes after its body",
        R::KEY,
        frame.remaining()
    );
    (header.correlation_id, response)
}

/// The API key of a request type, for messages.
pub fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("a known API key")
}
