//! [`Admin`] changes to existing topics: more partitions, named config changes, and
//! advancing a partition's log start (Kafka's CreatePartitions, IncrementalAlterConfigs and
//! DeleteRecords over the native protocol).

use tidelog_proto::pb;

use crate::admin::{topic_result, wrong_body, Admin};
use crate::error::{Error, Result};
use crate::types::{Offset, PartitionId};
use crate::wire;

/// What to change on a topic; built up, then passed to [`Admin::alter_topic`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicChange {
    partitions: Option<u32>,
    config: Vec<(String, Option<String>)>,
    validate_only: bool,
}

impl TopicChange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Grow the topic to `count` partitions (a topic never shrinks).
    pub fn partitions(mut self, count: u32) -> Self {
        self.partitions = Some(count);
        self
    }

    /// Set a config by its Kafka name (`retention.ms`, `retention.bytes`, `segment.bytes`,
    /// `segment.ms`, `index.interval.bytes`; `tidelog.flush.policy` only at create).
    pub fn set_config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((name.into(), Some(value.into())));
        self
    }

    /// Drop the topic's own value of a config: the broker default applies again.
    pub fn delete_config(mut self, name: impl Into<String>) -> Self {
        self.config.push((name.into(), None));
        self
    }

    /// Have the broker check the change and apply nothing.
    pub fn validate_only(mut self) -> Self {
        self.validate_only = true;
        self
    }
}

impl Admin {
    /// Applies `change` to topic `name`: the partitions first, then each config change in
    /// order.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Broker`] with `InvalidPartitions` (fewer
    /// or as many partitions as now, past a limit) or `InvalidConfig`.
    pub async fn alter_topic(&self, name: &str, change: TopicChange) -> Result<()> {
        let request = pb::AlterTopicRequest {
            name: name.to_owned(),
            partitions: change.partitions,
            config: change
                .config
                .into_iter()
                .map(|(name, value)| pb::ConfigChange { name, value })
                .collect(),
            validate_only: change.validate_only,
        };
        let body = self
            .client()
            .request_any(pb::request::Body::AlterTopic(request))
            .await?;
        let pb::response::Body::AlterTopic(response) = body else {
            return Err(wrong_body("alter topic"));
        };
        self.client().invalidate_topic(name);
        let result = response.topic.ok_or_else(|| wrong_body("alter topic"))?;
        topic_result(result).1
    }

    /// Makes every offset of `partition` below `before` unreadable (`None`: below the log
    /// end); returns the partition's log start after the trim.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`]; [`Error::Broker`] with `OffsetOutOfRange` for an
    /// offset past the log end.
    pub async fn trim_topic(
        &self,
        name: &str,
        partition: PartitionId,
        before: Option<Offset>,
    ) -> Result<Offset> {
        let request = pb::TrimTopicRequest {
            topic: name.to_owned(),
            partitions: vec![pb::trim_topic_request::Partition {
                partition: partition.get(),
                before: before.map_or(-1, Offset::get),
            }],
        };
        let body = self
            .client()
            .request_any(pb::request::Body::TrimTopic(request))
            .await?;
        let pb::response::Body::TrimTopic(response) = body else {
            return Err(wrong_body("trim topic"));
        };
        let answer = response
            .partitions
            .into_iter()
            .find(|answer| answer.partition == partition.get())
            .ok_or_else(|| wrong_body("trim topic"))?;
        match wire::error_code(answer.error) {
            None => Ok(Offset::new(answer.log_start_offset)),
            Some(crate::types::ErrorCode::UnknownTopicOrPartition) => Err(Error::UnknownTopicOrPartition {
                topic: name.to_owned(),
                partition: Some(partition),
            }),
            Some(code) => Err(Error::Broker {
                code,
                message: answer.message,
            }),
        }
    }
}
