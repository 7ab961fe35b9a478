//! AlterTopic: more partitions and named config changes for one topic (the rules live in
//! `topics`; this only translates).

use std::sync::Arc;

use tidelog_proto::pb;

use super::{topic_result, Outcome};
use crate::core::{blocking, CoreError};
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
            let registry = &context.core.registry;
            let update = ConfigUpdate::Incremental(changes);
            let has_changes = matches!(&update, ConfigUpdate::Incremental(changes) if !changes.is_empty());
            // The config is checked before any partition is added, so a refused change leaves
            // the partition count alone too.
            let mut result = Ok(());
            if has_changes {
                result = registry.alter_config(&name, &update, true).map(drop);
            }
            if let (Ok(()), Some(partitions)) = (&result, request.partitions) {
                result = registry
                    .add_partitions(&name, partitions, request.validate_only)
                    .map(drop);
            }
            if result.is_ok() && has_changes {
                result = registry
                    .alter_config(&name, &update, request.validate_only)
                    .map(drop);
            }
            topic_result(name, result.map_err(CoreError::from))
        })
        .await
        // Err: the blocking task failed (logged); the client's request times out.
        .ok()?;
        Some(pb::response::Body::AlterTopic(pb::AlterTopicResponse {
            topic: Some(topic),
        }))
    }))
}
