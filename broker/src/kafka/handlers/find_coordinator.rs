//! FindCoordinator 0-4: this broker coordinates every group (v4+: a batch of keys).
//! Transactions do not exist yet, so a transaction coordinator is not available.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::group_common::{node_of, str_bytes, text};
use super::{Reply, Request};
use crate::core::error::ErrorCode;

/// Key type of a group coordinator (1 is a transaction's).
const KEY_TYPE_GROUP: i8 = 0;

/// This broker as the Kafka listener advertises it.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: FindCoordinatorRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    Reply::encode(&answer(&node_of(&request), version, &asked), version)
}

pub(crate) fn answer(node: &Node, version: i16, request: &FindCoordinatorRequest) -> FindCoordinatorResponse {
    let key_type = if version >= 1 {
        request.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let refusal = (key_type != KEY_TYPE_GROUP).then(|| {
        (
            ErrorCode::CoordinatorNotAvailable.code(),
            format!("key type {key_type}: transactions are not supported"),
        )
    });
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut coordinator = Coordinator::default();
                coordinator.key = key.clone();
                match &refusal {
                    Some((code, message)) => {
                        coordinator.node_id = BrokerId(-1);
                        coordinator.port = -1;
                        coordinator.error_code = *code;
                        coordinator.error_message = Some(str_bytes(message.clone()));
                    }
                    None => {
                        coordinator.node_id = BrokerId(node.node_id);
                        coordinator.host = str_bytes(node.host.clone());
                        coordinator.port = node.port;
                    }
                }
                coordinator
            })
            .collect();
        return response;
    }
    match refusal {
        Some((code, message)) => {
            response.error_code = code;
            response.node_id = BrokerId(-1);
            response.port = -1;
            if version >= 1 {
                response.error_message = Some(str_bytes(message));
            }
        }
        None => {
            tracing::trace!(group = %text(&request.key), "coordinator lookup");
            response.node_id = BrokerId(node.node_id);
            response.host = str_bytes(node.host.clone());
            response.port = node.port;
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn answers_encode_and_name_this_broker_at_every_version() {
        let node = Node {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
        };
        for version in 0..=4 {
            for key_type in [0, 1] {
                let mut request = FindCoordinatorRequest::default();
                request.key = str_bytes("g");
                request.key_type = if version >= 1 { key_type } else { 0 };
                request.coordinator_keys = if version >= 4 {
                    vec![str_bytes("g")]
                } else {
                    Vec::new()
                };
                let answer = answer(&node, version, &request);
                let mut buffer = BytesMut::new();
                answer
                    .encode(&mut buffer, version)
                    .unwrap_or_else(|error| panic!("v{version}: {error}"));
                let (code, port) = match answer.coordinators.first() {
                    Some(found) => (found.error_code, found.port),
                    None => (answer.error_code, answer.port),
                };
                if request.key_type == 0 {
                    assert_eq!((code, port), (0, 9092), "v{version}");
                } else {
                    assert_eq!(code, ErrorCode::CoordinatorNotAvailable.code(), "v{version}");
                }
            }
        }
    }
}
