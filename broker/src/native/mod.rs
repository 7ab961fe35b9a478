//! The native front end: accepts TCP connections and runs one `connection` task each, whose
//! `handlers` translate protobuf requests into core operations. Shape after mini-redis:
//! `net::admission` bounds connections (in all and per source address, shared with every
//! listener); the listener's watch channel tells every task to stop; `run` returns only after
//! every connection has drained. `net::budget` is the one memory budget every connection of
//! every listener draws from.

mod connection;
pub(crate) mod error;
mod handlers;
mod response;

use std::sync::Arc;

use tidelog_proto::pb::ErrorCode;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::net::admission::RateLimitedWarn;
use crate::net::ListenerContext;

/// Pause after a failed accept, so running out of file descriptors does not spin a core.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// Serves `listener` until the context's shutdown signal, then waits for every connection to
/// finish its in-flight requests.
pub(crate) async fn run(listener: TcpListener, context: Arc<ListenerContext>) {
    // Shared with every other listener: connections of any protocol count against one cap.
    let admission = &context.admission;
    let mut shutdown = context.shutdown.clone();
    let mut connections = JoinSet::new();
    let accept_failures = RateLimitedWarn::default();
    loop {
        // Accept whatever arrives, also past the caps: a refused client is told so at once
        // instead of waiting unseen in the kernel's backlog.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => match admission.admit(peer.ip()) {
                Ok(admitted) => {
                    let context = context.clone();
                    connections.spawn(async move {
                        connection::serve(stream, peer, context).await;
                        drop(admitted);
                    });
                }
                Err(refusal) => {
                    connection::refuse(stream, ErrorCode::TooManyConnections, refusal.to_string())
                }
            },
            Err(error) => {
                // Usually a client that reset before we accepted, or out of file descriptors:
                // log (at most once a second) and keep serving everyone else.
                accept_failures.warn(|suppressed| {
                    tracing::warn!(%error, failed_since_last_warning = suppressed, "accept failed");
                });
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let drain = std::time::Duration::from_millis(context.limits.shutdown_drain_ms_max);
    let drained =
        tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still busy after the shutdown drain limit; closing them"
        );
        connections.shutdown().await;
    }
}
