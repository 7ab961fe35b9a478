//! DescribeCluster (0-1): this broker, as the only broker and the controller. Asking for the
//! controller endpoints (v1 endpoint type 2) is answered as KRaft brokers answer it when no
//! separate controllers are exposed: UNSUPPORTED_ENDPOINT_TYPE.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::CLUSTER_ID;
use super::{operations, Reply, Request};

/// DescribeCluster's endpoint type for brokers (its default); 2 asks for controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: DescribeClusterRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let context = request.context;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str(CLUSTER_ID))
        .with_controller_id(context.broker_id())
        .with_cluster_authorized_operations(if asked.include_cluster_authorized_operations {
            operations::CLUSTER
        } else {
            operations::NOT_REQUESTED
        });
    if version >= 1 && asked.endpoint_type != ENDPOINT_BROKERS {
        response = response
            .with_endpoint_type(asked.endpoint_type)
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "this broker exposes no separate controller endpoints",
            )));
        return Reply::encode(&response, version);
    }
    response = response.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(context.broker_id())
        .with_host(StrBytes::from_string(context.advertised_host.clone()))
        .with_port(i32::from(context.advertised_port))]);
    Reply::encode(&response, version)
}
