//! CreatePartitions (0-3): grow each topic to its new count (`Core::add_partitions`) (only up;
//! the limits of a create hold); manual assignments are refused (one broker);
//! `validate_only` checks without changing.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_admin::{answer_blocking, core_error, refused, NO_ERROR};
use super::{Reply, Request};
use crate::core::error::ErrorCode;
use crate::core::Core;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    answer_blocking(request, create_partitions)
}

fn create_partitions(core: &Core, asked: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut named: HashMap<StrBytes, usize> = HashMap::new();
    for topic in &asked.topics {
        *named.entry(topic.name.0.clone()).or_default() += 1;
    }
    let results = asked
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_owned();
            let outcome = if named.get(&topic.name.0).copied().unwrap_or(0) > 1 {
                refused(
                    ErrorCode::InvalidRequest,
                    format!("topic {name:?} is named more than once in the request"),
                )
            } else if topic
                .assignments
                .as_ref()
                .is_some_and(|assignments| !assignments.is_empty())
            {
                refused(
                    ErrorCode::InvalidReplicaAssignment,
                    "manual replica assignments are not supported: Tidelog is one broker",
                )
            } else {
                match u32::try_from(topic.count) {
                    Err(_) => refused(
                        ErrorCode::InvalidPartitions,
                        format!("{} partitions is not a count", topic.count),
                    ),
                    Ok(count) => match core.add_partitions(&name, count, asked.validate_only) {
                        Ok(_) => NO_ERROR,
                        Err(error) => core_error(error),
                    },
                }
            };
            let mut result = CreatePartitionsTopicResult::default();
            result.name = topic.name;
            (result.error_code, result.error_message) = outcome;
            result
        })
        .collect();
    let mut response = CreatePartitionsResponse::default();
    response.results = results;
    response
}
