//! ApiVersions (0-4): the APIs and versions this listener serves, straight from the dispatch
//! table. A version above 4 gets UNSUPPORTED_VERSION in a v0 body, still listing the APIs, as
//! Kafka answers it; clients then retry with a version from that list.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{Reply, Request};
use crate::kafka::dispatch::SERVED;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    // v3+ names the client software; it is only logged (the request span has the client id).
    let asked: ApiVersionsRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    if version >= 3 {
        tracing::debug!(
            client_software_name = %asked.client_software_name.as_str(),
            client_software_version = %asked.client_software_version.as_str(),
            "Kafka client"
        );
    }
    Reply::encode(&response(0), version)
}

/// The answer to an ApiVersions request of a version this listener does not serve.
pub(crate) fn unsupported_version() -> Reply {
    Reply::encode(&response(ResponseError::UnsupportedVersion.code()), 0)
}

fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SERVED
        .iter()
        .map(|served| {
            ApiVersion::default()
                .with_api_key(served.key as i16)
                .with_min_version(served.min_version)
                .with_max_version(served.max_version)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
