//! What the topic admin handlers share: running registry work (fsyncs, renames) on the
//! blocking pool and answering in request order, and turning a topic failure into Kafka's
//! code and message. The rules themselves live in `topics`; the numbering in `core::error`.

use bytes::Bytes;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Reply, Request, Response};
use crate::core::error::ErrorCode;
use crate::core::Core;
use crate::core::CoreError;
use crate::topics::{ConfigKind, ConfigSource, ConfigUpdate};

/// Kafka's `ResourceType` values the config APIs address.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// Runs `work` (blocking registry calls, then encoding) on the blocking pool; the response
/// still leaves in request order. `work` returns the encoded body, or why it could not be
/// encoded (a bug of ours, logged; the client gets no answer and times out).
pub(crate) fn blocking(work: impl FnOnce() -> Result<Bytes, String> + Send + 'static) -> Reply {
    Reply::Later(Box::pin(async move {
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(body)) => Some(Response {
                chunks: vec![body],
                held: None,
            }),
            Ok(Err(error)) => {
                tracing::error!(%error, "admin response could not be encoded");
                None
            }
            Err(error) => {
                tracing::error!(%error, "admin request failed on the blocking pool");
                None
            }
        }
    }))
}

/// The whole of an admin handler whose answer is blocking registry work: decode the request
/// as `Asked`, run `answer` on the blocking pool, encode what it returns in the request's
/// version; the response still leaves in request order.
pub(crate) fn answer_blocking<Asked, Answer>(
    request: Request<'_>,
    answer: fn(&Core, Asked) -> Answer,
) -> Reply
where
    Asked: Decodable + Send + 'static,
    Answer: Encodable + 'static,
{
    let version = request.version();
    let asked: Asked = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = request.context.net.core.clone();
    blocking(move || {
        let response = answer(&core, asked);
        crate::kafka::codec::encode_body(&response, version).map_err(|error| error.to_string())
    })
}

/// Kafka's code and message of one resource's (topic's) outcome.
pub(crate) type Outcome = (i16, Option<StrBytes>);

/// Kafka's code and message for a failure (`CoreError` maps, and logs what an operator must
/// see).
pub(crate) fn core_error(error: CoreError) -> (i16, Option<StrBytes>) {
    (error.code.code(), Some(StrBytes::from_string(error.message)))
}

/// A failure the handler itself decides (a request field Tidelog refuses).
pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> (i16, Option<StrBytes>) {
    core_error(CoreError::new(code, message))
}

pub(crate) const NO_ERROR: (i16, Option<StrBytes>) = (0, None);

/// Kafka's `ConfigSource` number of an entry (DescribeConfigs v1+, CreateTopics v5+).
pub(crate) fn source_code(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::TopicOverride => 1, // DYNAMIC_TOPIC_CONFIG
        ConfigSource::Broker => 4,        // STATIC_BROKER_CONFIG
        ConfigSource::Fixed => 5,         // DEFAULT_CONFIG
    }
}

/// Kafka's `ConfigType` number (DescribeConfigs v3+).
pub(crate) fn kind_code(kind: ConfigKind) -> i8 {
    match kind {
        ConfigKind::Boolean => 1,
        ConfigKind::String => 2,
        ConfigKind::Int => 3,
        ConfigKind::Long => 5,
        ConfigKind::Double => 6,
        ConfigKind::List => 7,
    }
}

/// The pairs of a request's configs, for `topics::config::from_pairs`.
pub(crate) fn pairs<'a>(
    configs: impl IntoIterator<Item = (&'a StrBytes, &'a Option<StrBytes>)>,
) -> Vec<(&'a str, Option<&'a str>)> {
    configs
        .into_iter()
        .map(|(name, value)| (name.as_str(), value.as_ref().map(StrBytes::as_str)))
        .collect()
}

/// The topic an AlterConfigs or IncrementalAlterConfigs resource names; the broker's own
/// settings are read-only at run time (they come from its file and flags).
pub(crate) fn alterable_topic(
    resource_type: i8,
    resource_name: &StrBytes,
) -> Result<String, (i16, Option<StrBytes>)> {
    match resource_type {
        RESOURCE_TOPIC => Ok(resource_name.as_str().to_owned()),
        RESOURCE_BROKER => Err(refused(
            ErrorCode::InvalidConfig,
            "broker settings cannot change at run time: edit the broker's configuration and restart it",
        )),
        other => Err(refused(
            ErrorCode::InvalidRequest,
            format!("resource type {other} has no configs here (topics 2, brokers 4)"),
        )),
    }
}

/// Whether `(type, name)` occurs more than once among `resources`: Kafka refuses each such
/// resource with INVALID_REQUEST rather than guess an order.
pub(crate) fn duplicated<'a>(
    resources: impl IntoIterator<Item = (i8, &'a StrBytes)>,
) -> std::collections::HashSet<(i8, StrBytes)> {
    let mut seen = std::collections::HashSet::new();
    let mut twice = std::collections::HashSet::new();
    for (resource_type, name) in resources {
        if !seen.insert((resource_type, name.clone())) {
            twice.insert((resource_type, name.clone()));
        }
    }
    twice
}

/// What AlterConfigs and IncrementalAlterConfigs do with their resources, one outcome each in
/// request order: a resource named twice is refused (each time), as is one that is not a
/// topic; otherwise `update` turns the resource into a config change (or refuses it) and the
/// core applies it (`validate_only`: checks it).
pub(crate) fn alter_resources<R>(
    core: &Core,
    resources: &[R],
    key: impl Fn(&R) -> (i8, &StrBytes),
    update: impl Fn(&R) -> Result<ConfigUpdate, Outcome>,
    validate_only: bool,
) -> Vec<Outcome> {
    let twice = duplicated(resources.iter().map(&key));
    resources
        .iter()
        .map(|resource| {
            let (resource_type, name) = key(resource);
            if twice.contains(&(resource_type, name.clone())) {
                return refused(
                    ErrorCode::InvalidRequest,
                    "the resource is named more than once in the request",
                );
            }
            let altered = alterable_topic(resource_type, name).and_then(|topic| {
                let update = update(resource)?;
                core.alter_topic_config(&topic, &update, validate_only)
                    .map_err(core_error)
            });
            match altered {
                Ok(_) => NO_ERROR,
                Err(outcome) => outcome,
            }
        })
        .collect()
}
