//! CreateTopics (0-7): each topic is checked and created by the registry (one broker: a
//! replication factor of 1 or -1, no manual assignments; -1 partitions = the broker default);
//! `validate_only` checks without creating. v5+ answers with the topic's partition count,
//! replication factor and effective configs, v7 with its id. v0-1 use the hand codec.

use std::collections::HashMap;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use uuid::Uuid;

use super::topic_admin::{blocking, core_error, pairs, refused, source_code, NO_ERROR};
use super::{legacy, Reply, Request};
use crate::core::error::ErrorCode;
use crate::core::{Core, CoreError};
use crate::topics::{config, ConfigEntry, TopicSpec};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let decoded = match version {
        0 => legacy::decode_create_topics_v0(request.body.clone()).map_err(|error| error.to_string()),
        // v1 is byte for byte v2, the crate's lowest.
        1 => CreateTopicsRequest::decode(&mut request.body.clone(), 2).map_err(|error| error.to_string()),
        _ => return handle_decoded(request.decode(), request, version),
    };
    let decoded = decoded
        .map_err(|error| Reply::Close(format!("undecodable CreateTopics v{version} request: {error}")));
    handle_decoded(decoded, request, version)
}

fn handle_decoded(decoded: Result<CreateTopicsRequest, Reply>, request: Request<'_>, version: i16) -> Reply {
    let asked = match decoded {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = request.context.net.core.clone();
    blocking(move || {
        let response = create(&core, asked, version);
        if version <= 1 {
            Ok(legacy::encode_create_topics_v0_v1(&response, version))
        } else {
            crate::kafka::codec::encode_body(&response, version).map_err(|error| error.to_string())
        }
    })
}

fn create(core: &Core, asked: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut named: HashMap<StrBytes, usize> = HashMap::new();
    for topic in &asked.topics {
        *named.entry(topic.name.0.clone()).or_default() += 1;
    }
    let limits = &core.config.limits;
    let topics = asked
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_owned();
            let mut result = CreatableTopicResult::default();
            result.name = topic.name.clone();
            result.num_partitions = -1;
            result.replication_factor = -1;
            let outcome = if named.get(&topic.name.0).copied().unwrap_or(0) > 1 {
                Err(refused(
                    ErrorCode::InvalidRequest,
                    format!("topic {name:?} is named more than once in the request"),
                ))
            } else if !topic.assignments.is_empty() {
                Err(refused(
                    ErrorCode::InvalidReplicaAssignment,
                    "manual replica assignments are not supported: Tidelog is one broker",
                ))
            } else if !matches!(topic.replication_factor, -1 | 1) {
                Err(refused(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {} is not possible: Tidelog is one broker (use 1 or -1)",
                        topic.replication_factor
                    ),
                ))
            } else if topic.num_partitions == 0 || topic.num_partitions < -1 {
                Err(refused(
                    ErrorCode::InvalidPartitions,
                    format!(
                        "{} partitions: give at least 1, or -1 for the broker default",
                        topic.num_partitions
                    ),
                ))
            } else {
                config::from_pairs(
                    pairs(topic.configs.iter().map(|config| (&config.name, &config.value))),
                    limits,
                )
                .map_err(CoreError::from)
                .and_then(|overrides| {
                    let spec = TopicSpec {
                        name: name.clone(),
                        partitions: u32::try_from(topic.num_partitions).ok(),
                        overrides,
                    };
                    if asked.validate_only {
                        let (partitions, entries) = core.check_create_topic(&spec)?;
                        Ok((partitions, entries, Uuid::nil()))
                    } else {
                        let created = core.create_topic(spec)?;
                        let count = u32::try_from(created.partitions.len()).unwrap_or(u32::MAX);
                        Ok((count, core.registry.config_entries(&created), created.id()))
                    }
                })
                .map_err(core_error)
            };
            let (error_code, error_message) = match outcome {
                Ok((partitions, entries, id)) => {
                    result.num_partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
                    result.replication_factor = 1;
                    if version >= 5 {
                        result.configs = Some(entries.iter().map(topic_config).collect());
                    }
                    result.topic_id = id;
                    NO_ERROR
                }
                Err(error) => error,
            };
            result.error_code = error_code;
            if version >= 1 {
                result.error_message = error_message;
            }
            if version < 5 {
                // Fields v0-4 do not carry must keep their defaults.
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
            if version < 7 {
                result.topic_id = Uuid::nil();
            }
            result
        })
        .collect();
    let mut response = CreateTopicsResponse::default();
    response.topics = topics;
    response
}

fn topic_config(entry: &ConfigEntry) -> CreatableTopicConfigs {
    let mut config = CreatableTopicConfigs::default();
    config.name = StrBytes::from_static_str(entry.name);
    config.value = Some(StrBytes::from_string(entry.value.clone()));
    config.read_only = entry.read_only;
    config.config_source = source_code(entry.source);
    config.is_sensitive = false;
    config
}
