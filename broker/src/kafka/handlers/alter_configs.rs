//! AlterConfigs (0-2): the named configs become a topic's whole configuration (settings not
//! named return to the broker default), validated and applied by the core (`topic_admin::alter_resources`); broker
//! settings are read-only at run time. `validate_only` checks without changing.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::topic_admin::{alter_resources, answer_blocking};
use super::{Reply, Request};
use crate::core::Core;
use crate::topics::ConfigUpdate;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    answer_blocking(request, alter)
}

fn alter(core: &Core, asked: AlterConfigsRequest) -> AlterConfigsResponse {
    let outcomes = alter_resources(
        core,
        &asked.resources,
        |resource| (resource.resource_type, &resource.resource_name),
        |resource| {
            let pairs = resource
                .configs
                .iter()
                .map(|config| {
                    (
                        config.name.as_str().to_owned(),
                        config.value.as_ref().map(|value| value.as_str().to_owned()),
                    )
                })
                .collect();
            Ok(ConfigUpdate::Replace(pairs))
        },
        asked.validate_only,
    );
    let mut response = AlterConfigsResponse::default();
    response.responses = asked
        .resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let mut response = AlterConfigsResourceResponse::default();
            response.resource_type = resource.resource_type;
            response.resource_name = resource.resource_name;
            (response.error_code, response.error_message) = outcome;
            response
        })
        .collect();
    response
}
