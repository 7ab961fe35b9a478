//! `tidelog stream read TOPIC KEY --follow`: the stream's history, then its live records as
//! they arrive, through the client's catch-up subscription (`EventStore::subscribe`); runs until
//! SIGINT or SIGTERM, `--limit` records, or `--timeout-ms` without a new record, exiting 0.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tidelog_client::event_store::{EventStore, StreamId, SubscriptionEvent};
use tidelog_client::Client;
use tokio::time::Instant;

use crate::cli::consume::{interrupted, write_record, written, Written};

/// How long one wait for the next event lasts when no `--timeout-ms` bounds it; the loop just
/// waits again.
const FOLLOW_WAIT: Duration = Duration::from_secs(3600);

/// What `--follow` needs of `stream read`'s arguments.
#[derive(Debug)]
pub struct Follow<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub from: i64,
    pub limit: Option<u64>,
    pub print_offset: bool,
    pub timeout: Option<Duration>,
}

pub async fn run(client: &Client, follow: Follow<'_>) -> anyhow::Result<()> {
    let store = EventStore::new(client.clone());
    let stream = StreamId::new(follow.topic, Bytes::copy_from_slice(follow.key.as_bytes()));
    let mut subscription = store
        .subscribe(&stream, follow.from.max(0))
        .await
        .with_context(|| format!("cannot follow stream {:?} of topic {}", follow.key, follow.topic))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut remaining = follow.limit.unwrap_or(u64::MAX);
    let mut last_record = Instant::now();
    // History is flushed as the buffer fills; live records one by one, as they arrive.
    let mut live = false;
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    while remaining > 0 {
        let wait = match follow.timeout {
            Some(timeout) => {
                let deadline = last_record + timeout;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                deadline - now
            }
            None => FOLLOW_WAIT,
        };
        let event = tokio::select! {
            event = tokio::time::timeout(wait, subscription.next()) => event,
            () = &mut interrupted => break,
        };
        let event = match event {
            // The deadline is checked at the top of the loop.
            Err(_elapsed) => continue,
            Ok(None) => anyhow::bail!("the subscription to stream {:?} ended", follow.key),
            Ok(Some(event)) => event
                .with_context(|| format!("cannot read stream {:?} of topic {}", follow.key, follow.topic))?,
        };
        match event {
            SubscriptionEvent::Record(record) => {
                last_record = Instant::now();
                if let Written::Closed = written(write_record(&mut out, &record, false, follow.print_offset))?
                {
                    return Ok(());
                }
                remaining -= 1;
                if live {
                    if let Written::Closed = written(out.flush())? {
                        return Ok(());
                    }
                }
            }
            SubscriptionEvent::CaughtUp => {
                live = true;
                if let Written::Closed = written(out.flush())? {
                    return Ok(());
                }
            }
            SubscriptionEvent::FellBehind => live = false,
        }
    }
    if let Written::Closed = written(out.flush())? {
        return Ok(());
    }
    Ok(())
}
