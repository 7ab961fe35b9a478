//! The native front end: accepts TCP connections and runs one `connection` task each, whose
//! `handlers` translate protobuf requests into core operations. The accept loop is every
//! listener's (`net::accept`): `net::admission` bounds connections (in all and per source
//! address, shared with every listener); the listener's watch channel tells every task to
//! stop; `run` returns only after every connection has drained. `net::budget` is the one memory budget every connection of
//! every listener draws from.

mod connection;
pub(crate) mod error;
mod handlers;
mod response;
mod socket;

use std::sync::Arc;

use crate::net::accept::accept_loop;
use crate::net::ListenerContext;
use tidelog_proto::pb::ErrorCode;
use tokio::net::TcpListener;

/// Serves `listener` until the context's shutdown signal, then waits for every connection to
/// finish its in-flight requests.
pub(crate) async fn run(listener: TcpListener, context: Arc<ListenerContext>) {
    accept_loop(
        listener,
        &context,
        |stream, peer| connection::serve(stream, peer, context.clone()),
        // A refused client is told why in an error frame before the socket closes.
        |stream, refusal| connection::refuse(stream, ErrorCode::TooManyConnections, refusal.to_string()),
    )
    .await;
}
