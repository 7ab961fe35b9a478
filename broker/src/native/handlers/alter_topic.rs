//! AlterTopic: more partitions and named config changes for one topic (the rules live in
//! `topics`; this only translates).

use std::sync::Arc;

use tidelog_proto::pb;

use super::{blocking, topic_result, Outcome};
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
            let mut result = Ok(());
            if let Some(partitions) = request.partitions {
                result = context
                    .core
                    .registry
                    .add_partitions(&name, partitions, request.validate_only)
                    .map(drop);
            }
            if result.is_ok() && !changes.is_empty() {
                result = context
                    .core
                    .registry
                    .alter_config(&name, &ConfigUpdate::Incremental(changes), request.validate_only)
                    .map(drop);
            }
            topic_result(name, &result)
        })
        .await?;
        Some(pb::response::Body::AlterTopic(pb::AlterTopicResponse {
            topic: Some(topic),
        }))
    }))
}
