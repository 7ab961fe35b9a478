//! The producer's sender task: drains sealed batches from the accumulator, groups them by
//! partition leader into produce requests, keeps several in flight per connection and turns
//! the answers into completions or retries. Also the InitProducerId exchange.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tidelog_proto::batch::{compress_batch, BatchHeader, Compression};
use tidelog_proto::pb;

use super::{Shared, REQUEST_OVERHEAD_BYTES};
use crate::accumulator::{ProducerIdentity, ReadyBatch};
use crate::connection::{Connection, InFlight};
use crate::error::{Error, Result};
use crate::types::{ErrorCode, Offset};
use crate::wire::{self, ProducePartition, ProduceTopic};

/// Asks any broker for a new producer id, retrying retriable failures with backoff.
pub(super) async fn init_producer_id(shared: &Shared) -> Result<ProducerIdentity> {
    let mut attempt = 0u32;
    loop {
        let request = pb::request::Body::InitProducerId(pb::InitProducerIdRequest {
            producer_id: -1,
            producer_epoch: -1,
        });
        let result = match shared.client.request_any(request).await {
            Ok(pb::response::Body::InitProducerId(response)) => match wire::error_code(response.error) {
                None => match i16::try_from(response.producer_epoch) {
                    Ok(epoch) if response.producer_id >= 0 && epoch >= 0 => Ok(ProducerIdentity {
                        producer_id: response.producer_id,
                        epoch,
                    }),
                    _ => Err(Error::Protocol {
                        addr: String::new(),
                        reason: format!(
                            "InitProducerId gave producer id {} epoch {}",
                            response.producer_id, response.producer_epoch
                        ),
                    }),
                },
                Some(code) => Err(Error::Broker {
                    code,
                    message: response.message,
                }),
            },
            Ok(_) => Err(Error::Protocol {
                addr: String::new(),
                reason: "InitProducerId answered with another body".into(),
            }),
            Err(error) => Err(error),
        };
        match result {
            Ok(identity) => return Ok(identity),
            Err(error) if error.is_retriable() && attempt < shared.config.retries => {
                let backoff = shared
                    .config
                    .retry_backoff_initial
                    .saturating_mul(1 << attempt.min(16))
                    .min(shared.config.retry_backoff_max);
                tracing::debug!(%error, attempt, "retrying InitProducerId");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

pub(super) async fn run_sender(shared: Arc<Shared>) {
    loop {
        let (batches, next_deadline) = {
            let mut accumulator = shared.lock();
            if shared.closing.load(Ordering::Acquire) {
                accumulator.seal_all();
            }
            accumulator.drain(Instant::now())
        };
        // Outside the accumulator's lock: senders keep appending while batches compress.
        let batches = compress(shared.config.compression, batches);
        if batches.is_empty() {
            if shared.closing.load(Ordering::Acquire) && shared.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            match next_deadline {
                Some(deadline) => {
                    tokio::select! {
                        () = shared.wake_sender.notified() => {}
                        () = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => shared.wake_sender.notified().await,
            }
            continue;
        }
        send_batches(&shared, batches).await;
    }
}

/// Compresses each batch's records with `codec`, unless it is compressed already (a retry) or
/// would not shrink. Compression runs on the sender task: a 1 MiB batch takes a few ms.
fn compress(codec: Compression, mut batches: Vec<ReadyBatch>) -> Vec<ReadyBatch> {
    if codec == Compression::None {
        return batches;
    }
    for batch in &mut batches {
        let plain = BatchHeader::parse(&batch.records).and_then(|header| header.compression());
        if plain != Ok(Compression::None) {
            continue;
        }
        match compress_batch(&batch.records, codec) {
            Ok(compressed) if compressed.len() < batch.records.len() => batch.records = compressed,
            Ok(_) => {}
            // Not expected from an in-memory codec; the records still go, uncompressed.
            Err(error) => tracing::warn!(%error, topic = %batch.topic, "sending a batch uncompressed"),
        }
    }
    batches
}

/// Groups batches by leader and sends them as requests of at most `max_request_bytes`, with at
/// most one batch per partition in a request (the response has one result per partition).
async fn send_batches(shared: &Arc<Shared>, batches: Vec<ReadyBatch>) {
    let mut by_leader: HashMap<String, (Connection, Vec<ReadyBatch>)> = HashMap::new();
    for batch in batches {
        match shared
            .client
            .leader_connection(batch.topic.as_str(), batch.partition)
            .await
        {
            Ok(connection) => {
                by_leader
                    .entry(connection.addr().to_owned())
                    .or_insert_with(|| (connection, Vec::new()))
                    .1
                    .push(batch);
            }
            Err(error) => shared.fail_or_retry(batch, Arc::new(error)),
        }
    }
    for (connection, batches) in by_leader.into_values() {
        for request in split_into_requests(batches, shared.config.max_request_bytes - REQUEST_OVERHEAD_BYTES)
        {
            send_request(shared, &connection, request).await;
        }
    }
}

fn split_into_requests(batches: Vec<ReadyBatch>, max_bytes: usize) -> Vec<Vec<ReadyBatch>> {
    let mut requests: Vec<(usize, Vec<ReadyBatch>)> = Vec::new();
    for batch in batches {
        let size = batch.records.len();
        let fits = |(bytes, request): &(usize, Vec<ReadyBatch>)| {
            bytes + size <= max_bytes
                && !request
                    .iter()
                    .any(|b| b.partition == batch.partition && b.topic == batch.topic)
        };
        match requests.iter_mut().find(|r| fits(r)) {
            Some((bytes, request)) => {
                *bytes += size;
                request.push(batch);
            }
            None => requests.push((size, vec![batch])),
        }
    }
    requests.into_iter().map(|(_, request)| request).collect()
}

async fn send_request(shared: &Arc<Shared>, connection: &Connection, batches: Vec<ReadyBatch>) {
    let mut topics: Vec<ProduceTopic<'_>> = Vec::new();
    for batch in &batches {
        let partition = ProducePartition {
            partition: batch.partition.get(),
            records: batch.records.clone(),
        };
        match topics.iter_mut().find(|t| t.name == batch.topic.as_str()) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(ProduceTopic {
                name: batch.topic.as_str(),
                partitions: vec![partition],
            }),
        }
    }
    let timeout_ms = u32::try_from(shared.config.request_timeout.as_millis()).unwrap_or(u32::MAX);
    let started = connection
        .start_produce(shared.config.acks, timeout_ms, &topics)
        .await;
    drop(topics);
    match started {
        Ok(in_flight) => {
            let shared = shared.clone();
            tokio::spawn(async move { complete_request(&shared, in_flight, batches).await });
        }
        Err(error) => {
            let error = Arc::new(error);
            for batch in batches {
                shared.fail_or_retry(batch, error.clone());
            }
        }
    }
}

async fn complete_request(shared: &Arc<Shared>, in_flight: InFlight, batches: Vec<ReadyBatch>) {
    let response = match in_flight.wait().await {
        Ok(None) => {
            for batch in batches {
                shared.complete(batch, Ok(None));
            }
            return;
        }
        Ok(Some(response)) => response,
        Err(error) => {
            let error = Arc::new(error);
            for batch in batches {
                shared.fail_or_retry(batch, error.clone());
            }
            return;
        }
    };
    if let Some(code) = wire::error_code(response.error) {
        let error = Arc::new(Error::Broker {
            code,
            message: response.error_message,
        });
        for batch in batches {
            shared.fail_or_retry(batch, error.clone());
        }
        return;
    }
    let Some(pb::response::Body::Produce(body)) = response.body else {
        let error = Arc::new(Error::Protocol {
            addr: String::new(),
            reason: "produce request answered without a produce body".into(),
        });
        for batch in batches {
            shared.complete(batch, Err(error.clone()));
        }
        return;
    };
    let mut results: HashMap<(&str, u32), &pb::produce_response::Partition> = HashMap::new();
    for topic in &body.topics {
        for partition in &topic.partitions {
            results.insert((topic.name.as_str(), partition.partition), partition);
        }
    }
    for batch in batches {
        let Some(result) = results.get(&(batch.topic.as_str(), batch.partition.get())) else {
            let error = Error::Protocol {
                addr: String::new(),
                reason: format!("no produce result for {}/{}", batch.topic, batch.partition),
            };
            shared.complete(batch, Err(Arc::new(error)));
            continue;
        };
        match wire::error_code(result.error) {
            None => {
                let base = Offset::new(result.base_offset);
                shared.complete(batch, Ok(Some(base)));
            }
            Some(ErrorCode::UnknownTopicOrPartition) => {
                let error = Error::UnknownTopicOrPartition {
                    topic: batch.topic.to_string(),
                    partition: Some(batch.partition),
                };
                shared.fail_or_retry(batch, Arc::new(error));
            }
            Some(code) => {
                let error = Error::Broker {
                    code,
                    message: result.message.clone(),
                };
                shared.fail_or_retry(batch, Arc::new(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::accumulator::{Reserve, Track};
    use crate::types::{PartitionId, ProducerRecord};

    #[test]
    fn requests_hold_one_batch_per_partition_and_respect_the_size_limit() {
        use crate::accumulator::{Accumulator, BatchLimits};
        use crate::types::TopicName;
        let mut accumulator = Accumulator::new(
            BatchLimits {
                batch_size_bytes: 1000,
                linger: Duration::ZERO,
            },
            StdRng::seed_from_u64(1),
        );
        let topic = TopicName::new("t");
        accumulator.set_partition_count(&topic, 2);
        for i in 0..30u32 {
            let record = ProducerRecord::new(topic.clone(), Bytes::from(vec![0u8; 200]))
                .partition(PartitionId::new(i % 2));
            let _ = accumulator.append(&record, 224, 0, Instant::now, Reserve::Held, Track::Future);
        }
        let (batches, _) = accumulator.drain(Instant::now());
        let count = batches.len();
        let requests = split_into_requests(batches, 2500);
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), count);
        for request in &requests {
            let bytes: usize = request.iter().map(|b| b.records.len()).sum();
            assert!(bytes <= 2500);
            let mut partitions: Vec<u32> = request.iter().map(|b| b.partition.get()).collect();
            partitions.sort_unstable();
            partitions.dedup();
            assert_eq!(
                partitions.len(),
                request.len(),
                "two batches of one partition in a request"
            );
        }
    }
}
