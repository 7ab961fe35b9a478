//! [`Admin`]: create, delete, list and describe topics, and look up offsets. Also the topic
//! and partition description types the metadata cache holds.

use std::collections::BTreeMap;
use std::fmt;

use tidelog_proto::pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{BrokerId, ErrorCode, Offset, OffsetSpec, PartitionId};
use crate::wire;

pub use crate::cleaner_status::{CleanerState, CleanerStatus};
pub use crate::topic_config::{TopicConfig, TOPIC_CONFIG_NAMES};

/// A topic to create: `NewTopic::new("events", 3).retention_ms(86_400_000)`.
#[derive(Debug, Clone)]
pub struct NewTopic {
    name: String,
    partitions: u32,
    config: TopicConfig,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            config: TopicConfig::default(),
        }
    }

    pub fn retention_ms(mut self, ms: i64) -> Self {
        self.config.retention_ms = Some(ms);
        self
    }

    pub fn retention_bytes(mut self, bytes: i64) -> Self {
        self.config.retention_bytes = Some(bytes);
        self
    }

    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.config.segment_bytes = Some(bytes);
        self
    }

    pub fn segment_ms(mut self, ms: i64) -> Self {
        self.config.segment_ms = Some(ms);
        self
    }

    /// `always`, `interval:<ms>` or `never`; the broker validates it.
    pub fn flush(mut self, policy: impl Into<String>) -> Self {
        self.config.flush = Some(policy.into());
        self
    }

    pub fn index_interval_bytes(mut self, bytes: u32) -> Self {
        self.config.index_interval_bytes = Some(bytes);
        self
    }

    /// `delete`, `compact` or `compact,delete`; the broker validates it. A compacted topic
    /// refuses keyless records.
    pub fn cleanup_policy(mut self, policy: impl Into<String>) -> Self {
        self.config.cleanup_policy = Some(policy.into());
        self
    }

    /// 0 to 1: compact once this share of the closed bytes is not yet cleaned.
    pub fn min_cleanable_dirty_ratio(mut self, ratio: f64) -> Self {
        self.config.min_cleanable_dirty_ratio = Some(ratio);
        self
    }

    pub fn min_compaction_lag_ms(mut self, ms: i64) -> Self {
        self.config.min_compaction_lag_ms = Some(ms);
        self
    }

    pub fn max_compaction_lag_ms(mut self, ms: i64) -> Self {
        self.config.max_compaction_lag_ms = Some(ms);
        self
    }

    pub fn delete_retention_ms(mut self, ms: i64) -> Self {
        self.config.delete_retention_ms = Some(ms);
        self
    }

    /// Any setting by its Kafka name ([`TOPIC_CONFIG_NAMES`]), as `tidelog topic create
    /// --config NAME=VALUE` gives it.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown name or a value of the wrong type.
    pub fn config(mut self, name: &str, value: &str) -> Result<Self> {
        self.config.set(name, value)?;
        Ok(self)
    }
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionDescription {
    pub(crate) partition: PartitionId,
    pub(crate) leader: BrokerId,
    pub(crate) log_start_offset: Offset,
    pub(crate) high_watermark: Offset,
    pub(crate) error: Option<ErrorCode>,
    pub(crate) cleaner: Option<CleanerStatus>,
}

impl PartitionDescription {
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn leader(&self) -> BrokerId {
        self.leader
    }

    /// The oldest offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }

    /// The offset the next record will get (the log end).
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn error(&self) -> Option<ErrorCode> {
        self.error
    }

    /// The cleaner's status; `None` when it has nothing to do with this partition (a topic
    /// that does not compact, with no erasure pending) or the broker does not report it.
    pub fn cleaner(&self) -> Option<&CleanerStatus> {
        self.cleaner.as_ref()
    }
}

/// A topic as the metadata describes it, offsets as of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    pub(crate) name: String,
    pub(crate) topic_id: String,
    pub(crate) partitions: Vec<PartitionDescription>,
    pub(crate) config: TopicConfig,
}

impl TopicDescription {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's persistent id (Kafka's topic id) as a hyphenated UUID; empty from a broker
    /// older than topic ids.
    pub fn topic_id(&self) -> &str {
        &self.topic_id
    }

    /// Sorted by partition id.
    pub fn partitions(&self) -> &[PartitionDescription] {
        &self.partitions
    }

    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionDescription> {
        self.partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|index| &self.partitions[index])
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The effective configuration.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }
}

impl fmt::Display for TopicDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} partitions)", self.name, self.partitions.len())
    }
}

/// The answer of [`Admin::list_offsets`] for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub(crate) partition: PartitionId,
    pub(crate) offset: Option<Offset>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl PartitionOffset {
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// `None` when a timestamp lookup found no record at or after the timestamp.
    pub fn offset(&self) -> Option<Offset> {
        self.offset
    }

    /// The found record's timestamp, for timestamp lookups.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
}

/// Topic administration over a [`Client`].
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Creates one topic.
    ///
    /// # Errors
    /// [`Error::Broker`] with [`ErrorCode::TopicAlreadyExists`], `InvalidPartitions`,
    /// `InvalidConfig` or `InvalidTopic` when the broker refuses it.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let name = topic.name.clone();
        let results = self.create_topics(vec![topic]).await?;
        results
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, result)| result)
            .unwrap_or_else(|| {
                Err(Error::Protocol {
                    addr: String::new(),
                    reason: format!("no result for topic {name}"),
                })
            })
    }

    /// Creates several topics; one result per topic.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<(String, Result<()>)>> {
        let request = pb::CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|t| pb::create_topics_request::Topic {
                    name: t.name.clone(),
                    partitions: t.partitions,
                    config: Some(t.config.to_wire()),
                })
                .collect(),
        };
        let body = self
            .client
            .request_any(pb::request::Body::CreateTopics(request))
            .await?;
        let pb::response::Body::CreateTopics(response) = body else {
            return Err(wrong_body("create topics"));
        };
        for topic in &topics {
            self.client.invalidate_topic(&topic.name);
        }
        Ok(response.topics.into_iter().map(topic_result).collect())
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] when it does not exist.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let body = self
            .client
            .request_any(pb::request::Body::DeleteTopics(pb::DeleteTopicsRequest {
                names: vec![name.to_owned()],
            }))
            .await?;
        let pb::response::Body::DeleteTopics(response) = body else {
            return Err(wrong_body("delete topics"));
        };
        self.client.invalidate_topic(name);
        response
            .topics
            .into_iter()
            .map(topic_result)
            .find(|(n, _)| n == name)
            .map(|(_, result)| result)
            .unwrap_or_else(|| {
                Err(Error::Protocol {
                    addr: String::new(),
                    reason: format!("no result for topic {name}"),
                })
            })
    }

    /// Every topic, sorted by name, with fresh offsets.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        let mut topics: Vec<TopicDescription> = self
            .client
            .refresh_metadata(&[])
            .await?
            .into_iter()
            .map(|t| (*t).clone())
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic with fresh offsets and its effective config.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] when it does not exist.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let mut topics = self.client.refresh_metadata(&[name]).await?;
        topics
            .pop()
            .map(|t| (*t).clone())
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_owned(),
                partition: None,
            })
    }

    /// Looks up an offset per partition (all partitions when `partitions` is empty), asking
    /// each partition's leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[PartitionId],
        spec: OffsetSpec,
    ) -> Result<Vec<PartitionOffset>> {
        list_offsets(&self.client, topic, partitions, spec).await
    }
}

pub(crate) async fn list_offsets(
    client: &Client,
    topic: &str,
    partitions: &[PartitionId],
    spec: OffsetSpec,
) -> Result<Vec<PartitionOffset>> {
    let description = client.topic(topic).await?;
    let wanted: Vec<PartitionId> = if partitions.is_empty() {
        description.partitions().iter().map(|p| p.partition()).collect()
    } else {
        partitions.to_vec()
    };
    // Group by leader connection: one request per broker.
    let mut by_leader: BTreeMap<String, (crate::connection::Connection, Vec<PartitionId>)> = BTreeMap::new();
    for partition in wanted {
        let connection = client.leader_connection(topic, partition).await?;
        by_leader
            .entry(connection.addr().to_owned())
            .or_insert_with(|| (connection, Vec::new()))
            .1
            .push(partition);
    }
    let mut results = Vec::new();
    for (connection, partitions) in by_leader.into_values() {
        let request = pb::ListOffsetsRequest {
            topics: vec![pb::list_offsets_request::Topic {
                name: topic.to_owned(),
                partitions: partitions
                    .iter()
                    .map(|p| pb::list_offsets_request::Partition {
                        partition: p.get(),
                        timestamp: spec.to_wire(),
                    })
                    .collect(),
            }],
        };
        let body = connection
            .request(pb::request::Body::ListOffsets(request))
            .await?;
        let pb::response::Body::ListOffsets(response) = body else {
            return Err(wrong_body("list offsets"));
        };
        for answer in response.topics.into_iter().flat_map(|t| t.partitions) {
            let partition = PartitionId::new(answer.partition);
            if let Some(code) = wire::error_code(answer.error) {
                if code == ErrorCode::UnknownTopicOrPartition {
                    client.invalidate_topic(topic);
                    return Err(Error::UnknownTopicOrPartition {
                        topic: topic.to_owned(),
                        partition: Some(partition),
                    });
                }
                return Err(Error::Broker {
                    code,
                    message: answer.message,
                });
            }
            let found = answer.offset >= 0;
            results.push(PartitionOffset {
                partition,
                offset: found.then_some(Offset::new(answer.offset)),
                timestamp_ms: (found && matches!(spec, OffsetSpec::Timestamp(_))).then_some(answer.timestamp),
            });
        }
    }
    results.sort_by_key(|r| r.partition);
    Ok(results)
}

pub(crate) fn wrong_body(what: &str) -> Error {
    Error::Protocol {
        addr: String::new(),
        reason: format!("{what} request answered with another body"),
    }
}

pub(crate) fn topic_result(result: pb::TopicResult) -> (String, Result<()>) {
    let outcome = match wire::error_code(result.error) {
        None => Ok(()),
        Some(ErrorCode::UnknownTopicOrPartition) => Err(Error::UnknownTopicOrPartition {
            topic: result.name.clone(),
            partition: None,
        }),
        Some(code) => Err(Error::Broker {
            code,
            message: result.message,
        }),
    };
    (result.name, outcome)
}
