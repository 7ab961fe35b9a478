//! Which Kafka APIs and versions this listener serves, and the handler of each: one table,
//! read both by `route` and by ApiVersions, so what is advertised is exactly what is served.
//!
//! Adding an API is one line in `SERVED`: `api(ApiKey::X, MIN, MAX, handlers::x::handle)`,
//! with `handlers/x.rs` holding `pub(crate) fn handle(request: Request<'_>) -> Reply`
//! (decode with `request.decode::<XRequest>()`, answer with `Reply::encode(&response,
//! request.version())`, or `Reply::Later` for work that waits). Nothing else needs to change:
//! the connection frames the response with the header version of the API and version. A
//! version kafka-protocol lacks needs a hand codec (`handlers/legacy.rs`), also listed in
//! `kafka::decode_request` so the fuzz target reaches it.

use kafka_protocol::messages::ApiKey;

use super::handlers::{self, api_versions, Reply, Request};

/// A handler: one request in, what to answer out.
pub(crate) type Handler = fn(Request<'_>) -> Reply;

/// One served API.
pub(crate) struct Served {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    pub handler: Handler,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16, handler: Handler) -> Served {
    Served {
        key,
        min_version,
        max_version,
        handler,
    }
}

/// Every API this listener serves, with every version from the lowest listed to the highest.
pub(crate) static SERVED: &[Served] = &[
    api(ApiKey::ApiVersions, 0, 4, handlers::api_versions::handle),
    api(ApiKey::Metadata, 0, 12, handlers::metadata::handle),
    api(ApiKey::Produce, 3, 11, handlers::produce::handle),
    api(ApiKey::Fetch, 4, 12, handlers::fetch::handle),
    api(ApiKey::ListOffsets, 1, 8, handlers::list_offsets::handle),
    api(ApiKey::InitProducerId, 0, 4, handlers::init_producer_id::handle),
    api(ApiKey::OffsetCommit, 2, 8, handlers::offset_commit::handle),
    api(ApiKey::OffsetFetch, 1, 8, handlers::offset_fetch::handle),
    api(ApiKey::FindCoordinator, 0, 4, handlers::find_coordinator::handle),
    api(ApiKey::JoinGroup, 0, 9, handlers::join_group::handle),
    api(ApiKey::Heartbeat, 0, 4, handlers::heartbeat::handle),
    api(ApiKey::LeaveGroup, 0, 5, handlers::leave_group::handle),
    api(ApiKey::SyncGroup, 0, 5, handlers::sync_group::handle),
    api(ApiKey::DescribeGroups, 0, 5, handlers::describe_groups::handle),
    api(ApiKey::ListGroups, 0, 4, handlers::list_groups::handle),
    api(ApiKey::DeleteGroups, 0, 2, handlers::delete_groups::handle),
    api(ApiKey::OffsetDelete, 0, 0, handlers::offset_delete::handle),
    api(
        ApiKey::ConsumerGroupHeartbeat,
        0,
        1,
        handlers::consumer_group_heartbeat::handle,
    ),
    api(
        ApiKey::ConsumerGroupDescribe,
        0,
        0,
        handlers::consumer_group_describe::handle,
    ),
    api(
        ApiKey::OffsetForLeaderEpoch,
        0,
        4,
        handlers::offset_for_leader_epoch::handle,
    ),
    api(ApiKey::DescribeCluster, 0, 1, handlers::describe_cluster::handle),
    api(ApiKey::CreateTopics, 0, 7, handlers::create_topics::handle),
    api(ApiKey::DeleteTopics, 0, 6, handlers::delete_topics::handle),
    api(
        ApiKey::CreatePartitions,
        0,
        3,
        handlers::create_partitions::handle,
    ),
    api(ApiKey::DeleteRecords, 0, 2, handlers::delete_records::handle),
    api(ApiKey::DescribeConfigs, 0, 4, handlers::describe_configs::handle),
    api(ApiKey::AlterConfigs, 0, 2, handlers::alter_configs::handle),
    api(
        ApiKey::IncrementalAlterConfigs,
        0,
        1,
        handlers::incremental_alter_configs::handle,
    ),
];

/// The table entry for `key`, if it is served.
pub(crate) fn served(key: ApiKey) -> Option<&'static Served> {
    SERVED.iter().find(|served| served.key == key)
}

/// Routes one request to its handler. A version outside the served range gets what Kafka
/// gives it: ApiVersions answers UNSUPPORTED_VERSION in a v0 body (clients retry with v0);
/// any other API closes the connection (a client only sends versions it was told of).
pub(crate) fn route(request: Request<'_>) -> Reply {
    let version = request.version();
    let Some(served) = served(request.api_key) else {
        return Reply::Close(format!("{:?} is not served here", request.api_key));
    };
    if !(served.min_version..=served.max_version).contains(&version) {
        if request.api_key == ApiKey::ApiVersions {
            return api_versions::unsupported_version();
        }
        return Reply::Close(format!(
            "{:?} v{version} is not served (versions {} to {})",
            request.api_key, served.min_version, served.max_version
        ));
    }
    (served.handler)(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_ranges_are_well_formed_and_each_api_is_listed_once() {
        for served in SERVED {
            assert!(served.min_version <= served.max_version, "{:?}", served.key);
            assert!(served.min_version >= 0, "{:?}", served.key);
            // The table must not name one API twice: `served` would hide the second.
            assert_eq!(
                SERVED.iter().filter(|other| other.key == served.key).count(),
                1,
                "{:?} listed twice",
                served.key
            );
        }
    }
}
