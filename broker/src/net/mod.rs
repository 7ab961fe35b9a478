//! What every listener shares, whatever its protocol: the accept loop (`accept`), connection
//! admission (`admission`: the caps on connections in all and per source address), the
//! broker's one memory budget (`budget`), which every connection of every listener draws
//! from, the one read loop that cuts frames under that budget and the listener's timeouts
//! (`read`), vectored socket writes (`write`), and the state one listener hands its
//! connections (`ListenerContext`, with its own `ListenerLimits`). Knows no wire format.

pub(crate) mod accept;
pub(crate) mod admission;
pub(crate) mod budget;
pub(crate) mod read;
pub(crate) mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{KafkaListenerConfig, Limits};
use crate::core::Core;
use admission::Admission;
use budget::MemoryBudget;

/// What one listener's connections see: the core they translate to, the listener's own state
/// (its name, the address it is bound to, its limits, its shutdown signal), and what every
/// listener shares: the broker's one memory budget and its one connection cap.
#[derive(Debug)]
pub(crate) struct ListenerContext {
    pub core: Arc<Core>,
    /// The listener's name in logs and `BrokerHandle::listener_addr` ("native", "kafka").
    pub name: &'static str,
    /// The address the listener is bound to: what metadata tells clients unless configured
    /// otherwise.
    pub advertised: SocketAddr,
    pub limits: ListenerLimits,
    /// Tells this listener to stop accepting and drain.
    pub shutdown: watch::Receiver<bool>,
    /// The broker's one memory budget (`net::budget`).
    pub memory: Arc<MemoryBudget>,
    /// The broker's one connection cap (`net::admission`), shared by every listener: each
    /// connection is a file descriptor, and the descriptor budget reserves
    /// `limits.connections_max` of them whatever the protocol.
    pub admission: Arc<Admission>,
}

/// The bounds of one listener's connections. Each listener has its own (the native one's come
/// from `[limits]`, the Kafka one's from `[kafka]`); the memory budget and the connection caps
/// are the broker's, shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerLimits {
    pub frame_bytes_max: usize,
    pub connection_idle_timeout_ms: u64,
    pub request_header_timeout_ms: u64,
    pub frame_completion_timeout_ms: u64,
    pub write_stall_timeout_ms: u64,
    pub in_flight_requests_per_connection_max: usize,
    pub response_queue_depth: usize,
    pub shutdown_drain_ms_max: u64,
    /// Longest a connection waits for memory before it answers "no memory" (produce copies).
    pub memory_wait_ms_max: u64,
}

impl ListenerLimits {
    /// The native listener's limits, named in `[limits]`.
    pub(crate) fn from_limits(limits: &Limits) -> Self {
        ListenerLimits {
            frame_bytes_max: limits.frame_bytes_max,
            connection_idle_timeout_ms: limits.connection_idle_timeout_ms,
            request_header_timeout_ms: limits.request_header_timeout_ms,
            frame_completion_timeout_ms: limits.frame_completion_timeout_ms,
            write_stall_timeout_ms: limits.write_stall_timeout_ms,
            in_flight_requests_per_connection_max: limits.in_flight_requests_per_connection_max,
            response_queue_depth: limits.response_queue_depth,
            shutdown_drain_ms_max: limits.shutdown_drain_ms_max,
            memory_wait_ms_max: limits.memory_wait_ms_max,
        }
    }

    /// The Kafka listener's limits: its own from `[kafka]`, the broker-wide ones from `[limits]`.
    pub(crate) fn kafka(kafka: &KafkaListenerConfig, limits: &Limits) -> Self {
        ListenerLimits {
            frame_bytes_max: kafka.frame_bytes_max,
            connection_idle_timeout_ms: kafka.connection_idle_timeout_ms,
            request_header_timeout_ms: kafka.request_header_timeout_ms,
            frame_completion_timeout_ms: kafka.frame_completion_timeout_ms,
            write_stall_timeout_ms: kafka.write_stall_timeout_ms,
            in_flight_requests_per_connection_max: kafka.in_flight_requests_per_connection_max,
            response_queue_depth: kafka.response_queue_depth,
            ..ListenerLimits::from_limits(limits)
        }
    }
}
