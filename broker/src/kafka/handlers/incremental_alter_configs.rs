//! IncrementalAlterConfigs (0-1): SET and DELETE of single topic configs, validated and
//! applied by the core (`topic_admin::alter_resources`). APPEND and SUBTRACT are refused: the
//! one list config, `cleanup.policy`, has two items, so a SET of the whole list says the same
//! thing without a read-modify-write. Broker settings are read-only at run time.

use std::collections::HashSet;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::topic_admin::{alter_resources, answer_blocking, refused, Outcome};
use super::{Reply, Request};
use crate::core::error::ErrorCode;
use crate::core::Core;
use crate::topics::{ConfigChange, ConfigUpdate};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    answer_blocking(request, alter)
}

fn alter(core: &Core, asked: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let outcomes = alter_resources(
        core,
        &asked.resources,
        |resource| (resource.resource_type, &resource.resource_name),
        |resource| changes(&resource.configs).map(ConfigUpdate::Incremental),
        asked.validate_only,
    );
    let mut response = IncrementalAlterConfigsResponse::default();
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

fn changes(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<ConfigChange>, Outcome> {
    let mut names = HashSet::new();
    let mut changes = Vec::with_capacity(configs.len());
    for config in configs {
        let name = config.name.as_str().to_owned();
        if !names.insert(name.clone()) {
            return Err(refused(
                ErrorCode::InvalidRequest,
                format!("config {name:?} is named more than once"),
            ));
        }
        changes.push(match (config.config_operation, &config.value) {
            (SET, Some(value)) => ConfigChange::Set {
                name,
                value: value.as_str().to_owned(),
            },
            (SET, None) => {
                return Err(refused(
                    ErrorCode::InvalidRequest,
                    format!("SET of {name:?} without a value"),
                ))
            }
            (DELETE, _) => ConfigChange::Unset { name },
            (APPEND | SUBTRACT, _) => {
                return Err(refused(
                    ErrorCode::InvalidConfig,
                    format!("APPEND and SUBTRACT are not served; SET {name:?} to its whole value (cleanup.policy=compact,delete)"),
                ))
            }
            (other, _) => {
                return Err(refused(
                    ErrorCode::InvalidRequest,
                    format!("unknown config operation {other}"),
                ))
            }
        });
    }
    Ok(changes)
}
