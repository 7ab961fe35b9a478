//! What catch-up subscriptions read from: `PartitionSource`, a whole partition over the
//! pipelined fetch of [`Consumer`], and `StreamSource`, one key's records over `read_stream`
//! (the broker's per-key index, long-polling at the end).

use std::time::Duration;

use futures::future::BoxFuture;

use super::catch_up::{Mode, Page, Positioned, ReadPlan};
use super::error::EventStoreError;
use super::subscription::{Source, SubscriptionConfig};
use super::StreamId;
use crate::admin::list_offsets;
use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, Seek};
use crate::stream_read::{ReadDirection, ReadStreamOptions};
use crate::types::{Offset, OffsetSpec, PartitionId, Record, TopicName};

impl Positioned for Record {
    fn offset(&self) -> i64 {
        Record::offset(self).get()
    }
}

/// Every record of one partition, in offset order.
#[derive(Debug)]
pub(crate) struct PartitionSource {
    client: Client,
    consumer: Consumer,
    topic: TopicName,
    partition: PartitionId,
    /// The latest high watermark seen (a fetch answer or a ListOffsets).
    high_watermark: i64,
    /// How long a history read may take: a fetch that finds data answers at once, so this
    /// only bounds a slow broker.
    history_timeout: Duration,
    live_wait: Duration,
}

impl PartitionSource {
    pub(crate) async fn open(
        client: Client,
        topic: &str,
        partition: PartitionId,
        config: &SubscriptionConfig,
    ) -> Result<Self, EventStoreError> {
        let consumer_config = ConsumerConfig::default()
            .max_poll_records(config.page_records_value())
            .fetch_max_wait(config.live_wait_value())
            // A start below the log start (retention) begins at the oldest record kept.
            .offset_reset(OffsetReset::Earliest);
        let mut consumer = Consumer::new(client.clone(), consumer_config)?;
        consumer.assign(topic, &[partition]).await?;
        let history_timeout = client.config().request_timeout_value() + config.live_wait_value();
        let mut source = Self {
            client,
            consumer,
            topic: TopicName::new(topic),
            partition,
            high_watermark: 0,
            history_timeout,
            live_wait: config.live_wait_value(),
        };
        source.refresh_high_watermark().await?;
        Ok(source)
    }

    async fn refresh_high_watermark(&mut self) -> Result<(), EventStoreError> {
        let found = list_offsets(
            &self.client,
            self.topic.as_str(),
            &[self.partition],
            OffsetSpec::Latest,
        )
        .await?;
        if let Some(offset) = found.iter().find_map(|answer| answer.offset()) {
            self.high_watermark = self.high_watermark.max(offset.get());
        }
        Ok(())
    }

    async fn read_page(&mut self, plan: ReadPlan) -> Result<Page<Record>, EventStoreError> {
        let (topic, partition) = (self.topic.as_str(), self.partition);
        // A start past the end is read from the end (a fetch past it is out of range, and the
        // reset would start over at the oldest record): the machine drops what lies below
        // `from`. So a position between the two is where it should be.
        let target = plan.from.min(self.high_watermark);
        let on_track = self
            .consumer
            .position(topic, partition)
            .is_some_and(|position| (target..=plan.from).contains(&position.get()));
        if !on_track {
            self.consumer
                .seek(topic, partition, Seek::Offset(Offset::new(target)))?;
        }
        if plan.mode == Mode::History && plan.from >= self.high_watermark {
            // Possibly at the end: ask, rather than let a fetch long-poll before `CaughtUp`.
            self.refresh_high_watermark().await?;
            if plan.from >= self.high_watermark {
                return Ok(Page {
                    records: Vec::new(),
                    next_offset: plan.from,
                    at_end: true,
                });
            }
        }
        let timeout = match plan.mode {
            Mode::History => self.history_timeout,
            // The broker holds the fetch this long at the end; the fetch stays in flight past
            // an empty poll, so nothing is lost by returning.
            Mode::Live => self.live_wait,
        };
        let records = self.consumer.poll(timeout).await?;
        let (topic, partition) = (self.topic.as_str(), self.partition);
        if let Some(high_watermark) = self.consumer.high_watermark(topic, partition) {
            self.high_watermark = self.high_watermark.max(high_watermark.get());
        }
        let next_offset = self
            .consumer
            .position(topic, partition)
            .map_or(plan.from, |offset| offset.get());
        Ok(Page {
            records,
            next_offset,
            at_end: next_offset >= self.high_watermark,
        })
    }
}

impl Source for PartitionSource {
    type Record = Record;

    fn read(&mut self, plan: ReadPlan) -> BoxFuture<'_, Result<Page<Record>, EventStoreError>> {
        Box::pin(self.read_page(plan))
    }
}

/// The records of one key, over `read_stream`: the broker's per-key index, so a read costs in
/// proportion to the stream, not the partition; live reads long-poll at the end.
#[derive(Debug)]
pub(crate) struct StreamSource {
    client: Client,
    stream: StreamId,
    live_wait: Duration,
}

impl StreamSource {
    pub(crate) fn new(client: Client, stream: StreamId, config: &SubscriptionConfig) -> Self {
        Self {
            client,
            stream,
            live_wait: config.live_wait_value(),
        }
    }

    async fn read_page(&mut self, plan: ReadPlan) -> Result<Page<Record>, EventStoreError> {
        let options = ReadStreamOptions {
            from: plan.from,
            direction: ReadDirection::Forward,
            limit: u32::try_from(plan.limit).unwrap_or(u32::MAX),
            max_wait: match plan.mode {
                Mode::History => Duration::ZERO,
                Mode::Live => self.live_wait,
            },
        };
        let page = self
            .client
            .read_stream(&self.stream.topic, &self.stream.key, options)
            .await?;
        Ok(Page {
            records: page.records,
            next_offset: page.next_offset,
            at_end: page.end_of_stream,
        })
    }
}

impl Source for StreamSource {
    type Record = Record;

    fn read(&mut self, plan: ReadPlan) -> BoxFuture<'_, Result<Page<Record>, EventStoreError>> {
        Box::pin(self.read_page(plan))
    }
}
