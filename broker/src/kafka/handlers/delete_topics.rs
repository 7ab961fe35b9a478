//! DeleteTopics (0-6): by name (v0-5), by name or topic id (v6). The registry deletes; this
//! reports per topic. v0 uses the hand codec (its request is v1's bytes).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::Decodable;
use uuid::Uuid;

use super::topic_admin::{blocking, core_error, refused, NO_ERROR};
use super::{legacy, Reply, Request};
use crate::core::error::ErrorCode;
use crate::core::Core;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let decoded = if version == 0 {
        DeleteTopicsRequest::decode(&mut request.body.clone(), 1)
            .map_err(|error| Reply::Close(format!("undecodable DeleteTopics v0 request: {error}")))
    } else {
        request.decode()
    };
    let asked: DeleteTopicsRequest = match decoded {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = request.context.net.core.clone();
    blocking(move || {
        let response = delete(&core, asked, version);
        if version == 0 {
            Ok(legacy::encode_delete_topics_v0(&response))
        } else {
            crate::kafka::codec::encode_body(&response, version).map_err(|error| error.to_string())
        }
    })
}

fn delete(core: &Core, asked: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v6 names each topic by name or by id; earlier versions by name only.
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        asked
            .topics
            .into_iter()
            .map(|topic| (topic.name, topic.topic_id))
            .collect()
    } else {
        asked
            .topic_names
            .into_iter()
            .map(|name| (Some(name), Uuid::nil()))
            .collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let mut result = DeletableTopicResult::default();
            let named = name
                .as_ref()
                .filter(|name| !name.0.is_empty())
                .map(|name| name.0.as_str().to_owned());
            let target = match named {
                Some(name) => Ok(name),
                None if id.is_nil() => Err(refused(
                    ErrorCode::InvalidRequest,
                    "a topic to delete needs a name or an id",
                )),
                None => core
                    .topic_by_id(id)
                    .map(|topic| topic.record.name.clone())
                    .ok_or_else(|| refused(ErrorCode::UnknownTopicId, format!("no topic has id {id}"))),
            };
            let (error_code, error_message) = match target {
                Ok(name) => {
                    let topic_id = core.registry.get(&name).map(|topic| topic.id());
                    let outcome = core.delete_topic(&name);
                    result.name = Some(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                        name.clone(),
                    )));
                    if version >= 6 {
                        result.topic_id = topic_id.unwrap_or(id);
                    }
                    match outcome {
                        Ok(()) => NO_ERROR,
                        Err(error) => core_error(error),
                    }
                }
                Err(error) => {
                    result.name = None;
                    result.topic_id = id;
                    error
                }
            };
            result.error_code = error_code;
            if version >= 5 {
                result.error_message = error_message;
            }
            if version < 6 && result.name.is_none() {
                result.name = Some(TopicName::default());
            }
            result
        })
        .collect();
    let mut response = DeleteTopicsResponse::default();
    response.responses = responses;
    response
}
