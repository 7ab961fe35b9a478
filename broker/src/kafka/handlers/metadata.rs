//! Metadata (0-12): this broker as the only broker, the controller and every partition's
//! leader (leader epoch 0 until replication exists), and the topics asked for with their
//! persistent ids. An offline partition carries KAFKA_STORAGE_ERROR and no leader.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{operations, Reply, Request};
use crate::topics::{validate_topic_name, PartitionSlot, Topic};

/// Reported as the cluster id: one broker, one cluster.
pub(crate) const CLUSTER_ID: &str = "tidelog";

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: MetadataRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let context = request.context;
    let broker_id = context.broker_id();
    let topic_operations = if version >= 8 && asked.include_topic_authorized_operations {
        operations::TOPIC
    } else {
        operations::NOT_REQUESTED
    };
    let registry = &context.core().registry;
    let topics: Vec<MetadataResponseTopic> = match asked.topics {
        // v0 asks for every topic with an empty list, later versions with null.
        Some(wanted) if !(version == 0 && wanted.is_empty()) => wanted
            .iter()
            .map(|wanted| match &wanted.name {
                // v10+ names a topic by id with a null name (some clients send an empty one).
                Some(name) if !name.is_empty() || wanted.topic_id.is_nil() => {
                    named_topic(request.context, name, broker_id)
                }
                _ => topic_by_id(request.context, wanted.topic_id, broker_id),
            })
            .collect(),
        _ => registry
            .list()
            .iter()
            .map(|topic| describe(topic, broker_id))
            .collect(),
    };
    let topics = topics
        .into_iter()
        .map(|topic: MetadataResponseTopic| topic.with_topic_authorized_operations(topic_operations))
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(broker_id)
            .with_host(StrBytes::from_string(context.advertised_host.clone()))
            .with_port(i32::from(context.advertised_port))])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(broker_id)
        .with_topics(topics);
    if (8..=10).contains(&version) && asked.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(operations::CLUSTER);
    }
    Reply::encode(&response, version)
}

fn named_topic(
    context: &crate::kafka::KafkaContext,
    name: &TopicName,
    broker_id: BrokerId,
) -> MetadataResponseTopic {
    let registry = &context.core().registry;
    if let Some(topic) = registry.get(name.as_str()) {
        return describe(&topic, broker_id);
    }
    let error =
        if validate_topic_name(name.as_str(), context.core().config.limits.topic_name_bytes_max).is_err() {
            ResponseError::InvalidTopicException
        } else if registry.unrecoverable_reason(name.as_str()).is_some() {
            // Data on disk the broker could not recover: logged at start, not "unknown".
            ResponseError::KafkaStorageError
        } else {
            ResponseError::UnknownTopicOrPartition
        };
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(name.clone()))
}

fn topic_by_id(context: &crate::kafka::KafkaContext, id: Uuid, broker_id: BrokerId) -> MetadataResponseTopic {
    let found = (!id.is_nil())
        .then(|| context.core().registry.get_by_id(id))
        .flatten();
    match found {
        Some(topic) => describe(&topic, broker_id),
        None => MetadataResponseTopic::default()
            .with_error_code(ResponseError::UnknownTopicId.code())
            .with_topic_id(id),
    }
}

fn describe(topic: &Topic, broker_id: BrokerId) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, slot)| {
            // Bounded by partitions_per_topic_max, a u32 far below i32::MAX in practice;
            // saturate rather than wrap if it ever were not.
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![broker_id]);
            match slot {
                PartitionSlot::Online(_) => partition
                    .with_leader_id(broker_id)
                    .with_isr_nodes(vec![broker_id]),
                PartitionSlot::Offline(_) => partition
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_leader_id(BrokerId(-1))
                    .with_offline_replicas(vec![broker_id]),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.record.name.clone()))))
        .with_topic_id(topic.id())
        .with_partitions(partitions)
}
