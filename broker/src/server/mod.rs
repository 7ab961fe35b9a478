//! The native-protocol server: accepts TCP connections and runs one `connection` task each.
//! Shape after mini-redis: a semaphore bounds connections; a watch channel tells every task to
//! stop; `run` returns only after every connection has drained.

mod budget;
mod connection;
mod handlers;
mod response;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::BrokerContext;

/// Pause after a failed accept, so running out of file descriptors does not spin a core.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// Serves `listener` until the context's shutdown signal, then waits for every connection to
/// finish its in-flight requests.
pub(crate) async fn run(listener: TcpListener, context: Arc<BrokerContext>) {
    let connection_slots = Arc::new(Semaphore::new(context.config.limits.connections_max));
    let mut shutdown = context.shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        // Wait for a free slot before accepting: past the limit, new clients queue in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            permit = connection_slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let context = context.clone();
                connections.spawn(async move {
                    connection::serve(stream, peer, context).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Usually a client that reset before we accepted, or out of file descriptors:
                // log and keep serving everyone else.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let drain = std::time::Duration::from_millis(context.config.limits.shutdown_drain_ms_max);
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
