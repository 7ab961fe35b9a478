//! The Kafka-protocol listener: unmodified Kafka clients talk to the same topics, groups,
//! offsets and producer state as native clients. Codecs come from the `kafka-protocol` crate;
//! framing, header versions, ordering and limits are ours:
//! * `codec`: a frame's request header; the size prefix and response header of an answer;
//! * `connection`: one client, with requests pipelined and responses in request order;
//! * `dispatch`: the table of served APIs and versions (ApiVersions reads it too);
//! * `handlers`: one module per API, translating between Kafka types and the broker.
//!
//! Connections count against the broker's one connection cap and draw on its one memory
//! budget (`net::admission`, `net::budget`); the listener has its own frame size,
//! in-flight and timeout limits (`[kafka]`, as `net::ListenerLimits`).

pub mod codec;
mod connection;
pub(crate) mod dispatch;
mod error;
pub(crate) mod handlers;

use std::sync::Arc;

use kafka_protocol::messages::BrokerId;
use tokio::net::TcpListener;

use crate::core::Core;
use crate::net::accept::accept_loop;
use crate::net::ListenerContext;

/// Decodes one request frame (size prefix removed) the way the listener does: the header,
/// then the body of a served API and version, with kafka-protocol or a hand codec. For the
/// fuzz target and property tests; `Err` says why the listener would close the connection.
#[doc(hidden)]
pub fn decode_request(frame: bytes::Bytes) -> Result<(), String> {
    use kafka_protocol::messages::{ApiKey, RequestKind};

    let parsed = codec::parse_request(frame).map_err(|error| error.to_string())?;
    let version = parsed.version();
    let served = dispatch::served(parsed.api_key).ok_or("API not served")?;
    if !(served.min_version..=served.max_version).contains(&version) {
        return Err(format!("v{version} not served"));
    }
    let body = parsed.body;
    // The versions kafka-protocol lacks, decoded as their handlers decode them.
    let legacy = match (parsed.api_key, version) {
        (ApiKey::OffsetForLeaderEpoch, 0..=1) => Some(
            handlers::legacy::decode_offset_for_leader_epoch_v0_v1(body.clone())
                .map(drop)
                .map_err(|e| e.to_string()),
        ),
        (ApiKey::CreateTopics, 0) => Some(
            handlers::legacy::decode_create_topics_v0(body.clone())
                .map(drop)
                .map_err(|e| e.to_string()),
        ),
        (ApiKey::DescribeConfigs, 0) => Some(
            handlers::legacy::decode_describe_configs_v0(body.clone())
                .map(drop)
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    };
    if let Some(result) = legacy {
        return result;
    }
    // CreateTopics v1 and DeleteTopics v0 are byte for byte the crate's lowest version.
    let version = match (parsed.api_key, version) {
        (ApiKey::CreateTopics, 1) => 2,
        (ApiKey::DeleteTopics, 0) => 1,
        _ => version,
    };
    RequestKind::decode(parsed.api_key, &mut body.clone(), version)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Reads a classic consumer's embedded subscription and assignment payloads (JoinGroup
/// metadata, SyncGroup assignments: bytes a client chooses) the way describing a group does.
/// For the fuzz target; `None` halves mean "not the consumer protocol".
#[doc(hidden)]
pub fn decode_consumer_protocol(bytes: &[u8]) -> (Option<usize>, Option<usize>) {
    let topics = crate::groups::consumer_protocol::subscription_topics(bytes).map(|topics| topics.len());
    let assigned = crate::groups::consumer_protocol::assignment_partitions(bytes)
        .map(|assignment| assignment.values().map(|partitions| partitions.len()).sum());
    (topics, assigned)
}

/// What the Kafka listener's handlers may look at: the core and what every listener shares,
/// and this listener's own settings.
#[derive(Debug)]
pub(crate) struct KafkaContext {
    /// The core, this listener's limits (`[kafka]`) and shutdown signal, the shared memory
    /// budget and connection cap.
    pub net: Arc<ListenerContext>,
    /// Host and port that Metadata and FindCoordinator tell clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
}

impl KafkaContext {
    /// The context of a listener bound to `net.advertised`. The advertised address is
    /// `kafka.advertised` when set (validated at start), else the bound address with its host
    /// replaced by the broker's `advertised_host` when that is set.
    pub(crate) fn new(net: Arc<ListenerContext>) -> Self {
        let bound = net.advertised;
        let (advertised_host, advertised_port) = match net.core.config.kafka.advertised_host_port() {
            Ok(Some(host_port)) => host_port,
            _ => (
                net.core
                    .config
                    .advertised_host
                    .clone()
                    .unwrap_or_else(|| bound.ip().to_string()),
                bound.port(),
            ),
        };
        Self {
            net,
            advertised_host,
            advertised_port,
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.net.core
    }

    /// This broker's id as Kafka clients see it.
    pub(crate) fn broker_id(&self) -> BrokerId {
        // Broker ids are chosen by the operator; one above i32::MAX cannot be told to a
        // Kafka client, and saturating keeps the answer consistent across responses.
        BrokerId(i32::try_from(self.core().config.broker_id).unwrap_or(i32::MAX))
    }
}

/// Serves `listener` until the broker's shutdown signal, then waits for every connection to
/// finish its in-flight requests (at most `limits.shutdown_drain_ms_max`).
pub(crate) async fn run(listener: TcpListener, context: Arc<KafkaContext>) {
    accept_loop(
        listener,
        &context.net,
        |stream, peer| connection::serve(stream, peer, context.clone()),
        // Kafka has no frame a client would read before its first request: closing is the
        // refusal (admission logged it, rate-limited).
        |stream, _refusal| drop(stream),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    /// A request frame of `api_key` v`version` with a header of the right version (a null
    /// client id, and an empty tagged-field section when flexible) and `body` after it.
    fn frame(api_key: kafka_protocol::messages::ApiKey, version: i16, body: &[u8]) -> bytes::Bytes {
        let mut frame = BytesMut::new();
        frame.put_i16(api_key as i16);
        frame.put_i16(version);
        frame.put_i32(1);
        frame.put_i16(-1);
        if api_key.request_header_version(version) >= 2 {
            frame.put_u8(0);
        }
        frame.extend_from_slice(body);
        frame.freeze()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn random_bodies_of_every_served_api_and_version_never_panic(
            index in 0usize..64,
            version_offset in 0i16..16,
            body in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let served = &dispatch::SERVED[index % dispatch::SERVED.len()];
            let span = served.max_version - served.min_version + 1;
            let version = served.min_version + version_offset % span;
            let _ = decode_request(frame(served.key, version, &body));
        }

        #[test]
        fn random_frames_never_panic_the_request_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_request(bytes::Bytes::from(bytes));
        }
    }

    #[test]
    fn every_served_api_and_version_decodes_its_own_empty_request() {
        // Each served version must have a decoder: an all-defaults request (here: the
        // smallest body that is not garbage for most APIs) must not be "not served".
        for served in dispatch::SERVED {
            for version in served.min_version..=served.max_version {
                let result = decode_request(frame(served.key, version, &[]));
                if let Err(error) = result {
                    assert!(
                        !error.contains("not served"),
                        "{:?} v{version}: {error}",
                        served.key
                    );
                }
            }
        }
    }
}
