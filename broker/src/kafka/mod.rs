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
//! in-flight and timeout limits (`config::KafkaListenerConfig`).

pub mod codec;
mod connection;
pub(crate) mod dispatch;
pub(crate) mod handlers;

use std::sync::Arc;

use kafka_protocol::messages::BrokerId;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::KafkaListenerConfig;
use crate::core::Core;
use crate::net::admission::RateLimitedWarn;
use crate::net::ListenerContext;

/// Pause after a failed accept, so running out of file descriptors does not spin a core.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// What the Kafka listener's handlers may look at: the core and what every listener shares,
/// and this listener's own settings.
#[derive(Debug)]
pub(crate) struct KafkaContext {
    /// The core, this listener's shutdown signal, the shared memory budget and connection cap.
    pub net: Arc<ListenerContext>,
    pub config: KafkaListenerConfig,
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
        let config = net.core.config.kafka.clone();
        let (advertised_host, advertised_port) = match config.advertised_host_port() {
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
            config,
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
    let mut shutdown = context.net.shutdown.clone();
    let mut connections = JoinSet::new();
    let accept_failures = RateLimitedWarn::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => match context.net.admission.admit(peer.ip()) {
                Ok(admitted) => {
                    let context = context.clone();
                    connections.spawn(async move {
                        connection::serve(stream, peer, context).await;
                        drop(admitted);
                    });
                }
                // Kafka has no frame a client would read before its first request: closing
                // is the refusal (admission logged it, rate-limited).
                Err(_refusal) => drop(stream),
            },
            Err(error) => {
                accept_failures.warn(|suppressed| {
                    tracing::warn!(%error, failed_since_last_warning = suppressed, "Kafka listener: accept failed");
                });
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let drain = std::time::Duration::from_millis(context.core().config.limits.shutdown_drain_ms_max);
    let drained =
        tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "Kafka connections still busy after the shutdown drain limit; closing them"
        );
        connections.shutdown().await;
    }
}
