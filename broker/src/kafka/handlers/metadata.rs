//! Metadata (0-12): this broker as the only broker, the controller and every partition's
//! leader (leader epoch 0 until replication exists), and the topics asked for with their
//! persistent ids. An offline partition carries KAFKA_STORAGE_ERROR and no leader. Which
//! topics exist, what an unknown name's error is and which topics are created on first use
//! are the core's (`core::topics`); this only translates.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{operations, Reply, Request};
use crate::core::blocking;
use crate::kafka::KafkaContext;
use crate::topics::{PartitionSlot, Topic};

/// Reported as the cluster id: one broker, one cluster.
pub(crate) const CLUSTER_ID: &str = "tidelog";

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: MetadataRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let context = request.context;
    // v0-3 always allow creation on first use; later versions ask for it.
    let missing = if version < 4 || asked.allow_auto_topic_creation {
        let named = asked
            .topics
            .iter()
            .flatten()
            .filter_map(|wanted| wanted.name.as_ref());
        context
            .core()
            .topics_to_auto_create(named.map(|name| name.as_str()))
    } else {
        Vec::new()
    };
    if missing.is_empty() {
        return respond(context, asked, version);
    }
    // Creating writes files and the metadata store: off the async workers; the answer still
    // leaves in request order.
    let context = context.clone();
    Reply::Later(Box::pin(async move {
        let core = context.net.core.clone();
        // Err: the blocking task failed (logged); the lookup below reports what exists.
        let _ = blocking(move || core.auto_create_topics(&missing)).await;
        match respond(&context, asked, version) {
            Reply::Now(response) => Some(response),
            _ => None,
        }
    }))
}

fn respond(context: &KafkaContext, asked: MetadataRequest, version: i16) -> Reply {
    let broker_id = context.broker_id();
    let topic_operations = if version >= 8 && asked.include_topic_authorized_operations {
        operations::TOPIC
    } else {
        operations::NOT_REQUESTED
    };
    let topics: Vec<MetadataResponseTopic> = match asked.topics {
        // v0 asks for every topic with an empty list, later versions with null.
        Some(wanted) if !(version == 0 && wanted.is_empty()) => wanted
            .iter()
            .map(|wanted| match &wanted.name {
                // v10+ names a topic by id with a null name (some clients send an empty one).
                Some(name) if !name.is_empty() || wanted.topic_id.is_nil() => {
                    named_topic(context, name, broker_id)
                }
                _ => topic_by_id(context, wanted.topic_id, broker_id),
            })
            .collect(),
        _ => context
            .core()
            .metadata(&[])
            .into_iter()
            .filter_map(|found| found.topic.ok())
            .map(|topic| describe(&topic, broker_id))
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

fn named_topic(context: &KafkaContext, name: &TopicName, broker_id: BrokerId) -> MetadataResponseTopic {
    let found = context.core().metadata(&[name.as_str().to_owned()]).pop();
    match found.map(|found| found.topic) {
        Some(Ok(topic)) => describe(&topic, broker_id),
        Some(Err(error)) => MetadataResponseTopic::default()
            .with_error_code(error.code.code())
            .with_name(Some(name.clone())),
        // One name asked, one answer: no answer is a bug of ours.
        None => MetadataResponseTopic::default()
            .with_error_code(ResponseError::UnknownServerError.code())
            .with_name(Some(name.clone())),
    }
}

fn topic_by_id(context: &KafkaContext, id: Uuid, broker_id: BrokerId) -> MetadataResponseTopic {
    match context.core().topic_by_id(id) {
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
