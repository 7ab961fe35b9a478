//! AlterTopic: more partitions and named config changes for one topic (`Core::alter_topic`;
//! this only translates).

use std::sync::Arc;

use tidelog_proto::pb;

use super::{topic_result, Outcome};
use crate::core::blocking;
use crate::net::ListenerContext;
use crate::topics::{ConfigChange, ConfigUpdate};

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::AlterTopicRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let topic = blocking(move || {
            let name = request.name;
            let changes: Vec<ConfigChange> = request
                .config
                .into_iter()
                .map(|change| match change.value {
                    Some(value) => ConfigChange::Set {
                        name: change.name,
                        value,
                    },
                    None => ConfigChange::Unset { name: change.name },
                })
                .collect();
            let update = ConfigUpdate::Incremental(changes);
            let result = context
                .core
                .alter_topic(&name, request.partitions, &update, request.validate_only);
            topic_result(name, result)
        })
        .await
        // Err: the blocking task failed (logged); the client's request times out.
        .ok()?;
        Some(pb::response::Body::AlterTopic(pb::AlterTopicResponse {
            topic: Some(topic),
        }))
    }))
}
