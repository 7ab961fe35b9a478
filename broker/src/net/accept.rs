//! The accept loop of every listener: admit each connection against the broker's shared caps
//! (`admission`) and serve it in its own task, or refuse it the listener's way; on shutdown,
//! stop accepting and wait for every connection to drain, at most `shutdown_drain_ms_max`.
//! Shape after mini-redis: the listener is bound by the caller (tests bind port 0), and
//! shutdown drains rather than abandons.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::admission::{RateLimitedWarn, Refusal};
use super::ListenerContext;

/// Pause after a failed accept, so running out of file descriptors does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Serves `listener` until `context`'s shutdown signal: `serve` runs each admitted
/// connection, `refuse` answers one past the caps. Returns once every connection has
/// finished its requests under way, or the drain limit has passed (the rest are cut).
pub(crate) async fn accept_loop<Serve, Served>(
    listener: TcpListener,
    context: &ListenerContext,
    serve: Serve,
    refuse: impl Fn(TcpStream, Refusal),
) where
    Serve: Fn(TcpStream, SocketAddr) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    let name = context.name;
    let mut shutdown = context.shutdown.clone();
    let mut connections = JoinSet::new();
    let accept_failures = RateLimitedWarn::default();
    loop {
        // Accept whatever arrives, also past the caps: a refused client is told so at once
        // (as far as its protocol has a way) instead of waiting unseen in the kernel's backlog.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        match accepted {
            // Shared with every other listener: connections of any protocol count against one cap.
            Ok((stream, peer)) => match context.admission.admit(peer.ip()) {
                Ok(admitted) => {
                    let served = serve(stream, peer);
                    connections.spawn(async move {
                        served.await;
                        drop(admitted);
                    });
                }
                Err(refusal) => refuse(stream, refusal),
            },
            Err(error) => {
                // Usually a client that reset before we accepted, or out of file descriptors:
                // log (at most once a second) and keep serving everyone else.
                accept_failures.warn(|suppressed| {
                    tracing::warn!(listener = name, %error, failed_since_last_warning = suppressed, "accept failed");
                });
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let drain = Duration::from_millis(context.limits.shutdown_drain_ms_max);
    let drained =
        tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            connections = connections.len(),
            "connections still busy after the shutdown drain limit; closing them"
        );
        connections.shutdown().await;
    }
}
