//! The event store's error type: the client's errors, plus the one a caller of
//! [`EventStore::append`](super::EventStore::append) matches on, a typed
//! [`WrongExpectedVersion`](EventStoreError::WrongExpectedVersion).

use thiserror::Error;

use crate::streams::Expected;

/// Everything an [`EventStore`](super::EventStore) call can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// The stream's version was not what the append expected; nothing was appended. `actual`
    /// is the stream's version (the offset of its last record), -1 when it has none.
    #[error("wrong expected version: expected {expected}, actual {actual}")]
    WrongExpectedVersion { expected: Expected, actual: i64 },
    /// The client failed (connection, broker refusal, unknown topic...); the cause is kept.
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// A setting is out of its range.
    #[error("invalid event store configuration: {0}")]
    Config(String),
    /// The in-process broker of the `embedded` feature could not start or stop cleanly.
    #[error("embedded broker: {message}")]
    Embedded {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl EventStoreError {
    /// Whether retrying the same call later may succeed (a transient network failure).
    pub fn is_retriable(&self) -> bool {
        match self {
            EventStoreError::Client(error) => error.is_retriable(),
            _ => false,
        }
    }
}
