//! DescribeConfigs (0-4): a topic's effective configuration by Kafka's names (its own values,
//! the broker defaults it inherits, and the settings Tidelog fixes) or the broker's settings;
//! synonyms (v1+, when asked) name the topic value and the broker setting behind it; types and
//! documentation from v3. v0 uses the hand codec.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_admin::{kind_code, refused, source_code, NO_ERROR, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{legacy, Reply, Request, Response};
use crate::core::error::ErrorCode;
use crate::core::Core;
use crate::topics::{ConfigEntry, ConfigSource};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: DescribeConfigsRequest = if version == 0 {
        match legacy::decode_describe_configs_v0(request.body.clone()) {
            Ok(asked) => asked,
            Err(error) => return Reply::Close(format!("undecodable DescribeConfigs v0 request: {error}")),
        }
    } else {
        match request.decode() {
            Ok(asked) => asked,
            Err(reply) => return reply,
        }
    };
    let response = describe(request.context.core(), &asked, version);
    if version == 0 {
        return Reply::Now(Response {
            chunks: vec![legacy::encode_describe_configs_v0(&response)],
            held: None,
        });
    }
    Reply::encode(&response, version)
}

fn describe(core: &Core, asked: &DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let broker_id = core.config.broker_id;
    let results = asked
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.as_str();
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match core.registry.get(name) {
                    Some(topic) => Ok(core.registry.config_entries(&topic)),
                    None => Err(refused(
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic {name:?} does not exist"),
                    )),
                },
                // "" is the cluster-wide default resource, which is this broker's settings too.
                RESOURCE_BROKER if name.is_empty() || name == broker_id.to_string() => {
                    Ok(core.registry.broker_config_entries(broker_id))
                }
                RESOURCE_BROKER => Err(refused(
                    ErrorCode::InvalidRequest,
                    format!("broker {name:?} is not this broker ({broker_id})"),
                )),
                other => Err(refused(
                    ErrorCode::InvalidRequest,
                    format!("resource type {other} has no configs here (topics 2, brokers 4)"),
                )),
            };
            let mut result = DescribeConfigsResult::default();
            result.resource_type = resource.resource_type;
            result.resource_name = resource.resource_name.clone();
            match entries {
                Ok(entries) => {
                    (result.error_code, result.error_message) = NO_ERROR;
                    result.configs = entries
                        .iter()
                        .filter(|entry| {
                            resource
                                .configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.iter().any(|key| key.as_str() == entry.name))
                        })
                        .map(|entry| config(entry, asked, version))
                        .collect();
                }
                Err((code, message)) => {
                    result.error_code = code;
                    result.error_message = message;
                }
            }
            result
        })
        .collect();
    let mut response = DescribeConfigsResponse::default();
    response.results = results;
    response
}

fn config(
    entry: &ConfigEntry,
    asked: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut config = DescribeConfigsResourceResult::default();
    config.name = StrBytes::from_static_str(entry.name);
    config.value = Some(StrBytes::from_string(entry.value.clone()));
    config.read_only = entry.read_only;
    config.is_sensitive = false;
    // v0's `is_default` is derived from the source by the hand codec.
    config.config_source = source_code(entry.source);
    if version >= 1 && asked.include_synonyms {
        let mut synonyms = Vec::new();
        if entry.source == ConfigSource::TopicOverride {
            let mut own = DescribeConfigsSynonym::default();
            own.name = StrBytes::from_static_str(entry.name);
            own.value = Some(StrBytes::from_string(entry.value.clone()));
            own.source = source_code(ConfigSource::TopicOverride);
            synonyms.push(own);
        }
        if let Some((broker_name, broker_value)) = &entry.broker_default {
            let mut broker = DescribeConfigsSynonym::default();
            broker.name = StrBytes::from_static_str(broker_name);
            broker.value = Some(StrBytes::from_string(broker_value.clone()));
            broker.source = source_code(ConfigSource::Broker);
            synonyms.push(broker);
        }
        config.synonyms = synonyms;
    }
    if version >= 3 {
        config.config_type = kind_code(entry.kind);
        config.documentation = asked
            .include_documentation
            .then(|| StrBytes::from_static_str(entry.documentation));
    }
    config
}
