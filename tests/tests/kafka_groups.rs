//! Classic consumer groups over the Kafka listener with raw Kafka requests (frames built with
//! kafka-protocol's encoders) against the real `tidelogd`: two members join, sync, heartbeat,
//! one leaves and the other leads; a silent member's session ends; a static member rejoins
//! without a rebalance; a native group and a classic one refuse each other's protocol;
//! commits, fetches, listing, describing (Kafka and `tidelog group describe`) and deleting.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::groups::{described_partitions, produce_values, RawMember};
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::wait::poll_until;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 2;
/// Bound on waiting for a condition the broker must reach.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const SESSION_MS: i32 = 6_000;
const REBALANCE_MS: i32 = 20_000;

const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

/// The answer to the request sent with `correlation` (the next one on the connection:
/// answers come in request order).
fn answer<R: kafka_protocol::protocol::Request>(
    conn: &mut KafkaRaw,
    version: i16,
    correlation: i32,
) -> R::Response {
    let (received, response) = conn.receive::<R>(version);
    assert_eq!(received, correlation, "answers come in request order");
    response
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// The standard consumer protocol's subscription to `TOPIC`, version 0 prefix included.
fn subscription() -> Bytes {
    let mut subscription = ConsumerProtocolSubscription::default();
    subscription.topics = vec![text(TOPIC)];
    let mut out = BytesMut::new();
    out.put_i16(0);
    subscription.encode(&mut out, 0).expect("encode subscription");
    out.freeze()
}

/// An assignment of `partitions` of `TOPIC`, as a leader would send it.
fn assignment(partitions: &[i32]) -> Bytes {
    let mut assignment = ConsumerProtocolAssignment::default();
    let mut topic = kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default();
    topic.topic = TopicName(text(TOPIC));
    topic.partitions = partitions.to_vec();
    assignment.assigned_partitions = vec![topic];
    let mut out = BytesMut::new();
    out.put_i16(0);
    assignment.encode(&mut out, 0).expect("encode assignment");
    out.freeze()
}

fn join_request(group: &str, member_id: &str, instance_id: Option<&str>) -> JoinGroupRequest {
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = subscription();
    let mut request = JoinGroupRequest::default();
    request.group_id = GroupId(text(group));
    request.session_timeout_ms = SESSION_MS;
    request.rebalance_timeout_ms = REBALANCE_MS;
    request.member_id = text(member_id);
    request.group_instance_id = instance_id.map(text);
    request.protocol_type = text("consumer");
    request.protocols = vec![protocol];
    request
}

/// JoinGroup v9 the way a modern client does it: first without an id (MEMBER_ID_REQUIRED
/// hands one out), then with it. Returns the answer of the second join (which may wait).
fn join_v9(conn: &mut KafkaRaw, group: &str) -> JoinGroupResponse {
    let first = conn.call(&join_request(group, "", None), 9);
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "{first:?}");
    assert!(!first.member_id.is_empty());
    conn.call(&join_request(group, first.member_id.as_str(), None), 9)
}

/// JoinGroup v5: the MEMBER_ID_REQUIRED round, then the join with the id handed out, whose
/// answer may wait for the rest of the group; returns that join's correlation id.
fn send_join_with_id(conn: &mut KafkaRaw, group: &str) -> i32 {
    let first = conn.call(&join_request(group, "", None), 5);
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED, "{first:?}");
    conn.send(&join_request(group, first.member_id.as_str(), None), 5)
}

fn sync(conn: &mut KafkaRaw, group: &str, joined: &JoinGroupResponse, assignments: &[(&str, Bytes)]) -> i32 {
    let mut request = SyncGroupRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id = joined.generation_id;
    request.member_id = joined.member_id.clone();
    request.protocol_type = Some(text("consumer"));
    request.protocol_name = joined.protocol_name.clone();
    request.assignments = assignments
        .iter()
        .map(|(member, bytes)| {
            let mut assignment = SyncGroupRequestAssignment::default();
            assignment.member_id = text(member);
            assignment.assignment = bytes.clone();
            assignment
        })
        .collect();
    conn.send(&request, 5)
}

fn heartbeat(
    conn: &mut KafkaRaw,
    group: &str,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> i16 {
    let mut request = HeartbeatRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id = generation;
    request.member_id = text(member_id);
    request.group_instance_id = instance_id.map(text);
    conn.call(&request, 4).error_code
}

fn start(test: &str) -> (TestDir, BrokerProcess, SocketAddr) {
    let dir = TestDir::new(test);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let kafka = broker.kafka_addr();
    let mut native = RawClient::connect_or_panic(broker.addr());
    native.create_topic(TOPIC, PARTITIONS, None);
    (dir, broker, kafka)
}

/// One member alone forms a stable group (v9 join, sync); returns its join answer.
fn stable_single(conn: &mut KafkaRaw, group: &str) -> JoinGroupResponse {
    let joined = join_v9(conn, group);
    assert_eq!(joined.error_code, NONE, "{joined:?}");
    assert_eq!(joined.leader, joined.member_id, "a lone member leads");
    let correlation = sync(
        conn,
        group,
        &joined,
        &[(joined.member_id.as_str(), assignment(&[0, 1]))],
    );
    let synced = answer::<SyncGroupRequest>(conn, 5, correlation);
    assert_eq!(synced.error_code, NONE);
    assert_eq!(synced.assignment, assignment(&[0, 1]));
    joined
}

#[test]
fn two_members_rebalance_and_the_survivor_leads_after_the_leader_leaves() {
    let (_dir, _broker, kafka) = start("kafka_groups_two_members");
    let group = "pair";
    let mut a = KafkaRaw::connect(kafka);
    let mut b = KafkaRaw::connect(kafka);

    // FindCoordinator names this broker's Kafka listener, v0 and batched v4.
    let mut find = FindCoordinatorRequest::default();
    find.key = text(group);
    let found = a.call(&find, 0);
    assert_eq!((found.error_code, found.port), (NONE, i32::from(kafka.port())));
    let mut batched = FindCoordinatorRequest::default();
    batched.coordinator_keys = vec![text(group), text("other")];
    let found = a.call(&batched, 4);
    assert_eq!(found.coordinators.len(), 2);
    assert!(found
        .coordinators
        .iter()
        .all(|c| c.error_code == NONE && c.port == i32::from(kafka.port())));

    let first = stable_single(&mut a, group);
    assert_eq!(
        heartbeat(&mut a, group, first.member_id.as_str(), None, first.generation_id),
        NONE
    );

    // B joins (v5, after its MEMBER_ID_REQUIRED round); its answer waits for A to rejoin.
    let b_join = send_join_with_id(&mut b, group);
    poll_until(CALL_TIMEOUT, "A is told to rejoin", || {
        (heartbeat(&mut a, group, first.member_id.as_str(), None, first.generation_id)
            == REBALANCE_IN_PROGRESS)
            .then_some(())
    });
    let a_joined = a.call(&join_request(group, first.member_id.as_str(), None), 9);
    let b_joined = answer::<JoinGroupRequest>(&mut b, 5, b_join);
    assert_eq!((a_joined.error_code, b_joined.error_code), (NONE, NONE));
    assert_eq!(a_joined.generation_id, first.generation_id + 1);
    assert_eq!(b_joined.generation_id, a_joined.generation_id);
    assert_eq!(a_joined.leader, first.member_id, "the leader stays the leader");
    assert_eq!(
        a_joined.members.len(),
        2,
        "the leader gets every member's metadata"
    );
    assert!(a_joined.members.iter().all(|m| m.metadata == subscription()));
    assert!(b_joined.members.is_empty());

    // B syncs first and waits for the leader's assignment.
    let b_sync = sync(&mut b, group, &b_joined, &[]);
    let a_sync = sync(
        &mut a,
        group,
        &a_joined,
        &[
            (a_joined.member_id.as_str(), assignment(&[0])),
            (b_joined.member_id.as_str(), assignment(&[1])),
        ],
    );
    assert_eq!(
        answer::<SyncGroupRequest>(&mut a, 5, a_sync).assignment,
        assignment(&[0])
    );
    assert_eq!(
        answer::<SyncGroupRequest>(&mut b, 5, b_sync).assignment,
        assignment(&[1])
    );
    let generation = a_joined.generation_id;
    assert_eq!(
        heartbeat(&mut a, group, a_joined.member_id.as_str(), None, generation),
        NONE
    );
    assert_eq!(
        heartbeat(&mut b, group, b_joined.member_id.as_str(), None, generation),
        NONE
    );
    assert_eq!(
        heartbeat(&mut b, group, b_joined.member_id.as_str(), None, generation - 1),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut b, group, "nobody", None, generation),
        UNKNOWN_MEMBER_ID
    );

    // The leader leaves (v5 batch); B is told to rejoin and becomes the leader.
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(text(group));
    let mut identity = MemberIdentity::default();
    identity.member_id = a_joined.member_id.clone();
    leave.members = vec![identity];
    let left = a.call(&leave, 5);
    assert_eq!(left.error_code, NONE);
    assert_eq!(left.members.len(), 1);
    assert_eq!(left.members[0].error_code, NONE);
    assert_eq!(
        heartbeat(&mut b, group, b_joined.member_id.as_str(), None, generation),
        REBALANCE_IN_PROGRESS
    );
    let alone = b.call(&join_request(group, b_joined.member_id.as_str(), None), 5);
    assert_eq!(alone.error_code, NONE);
    assert_eq!(alone.leader, b_joined.member_id, "the remaining member leads");
    assert_eq!(alone.generation_id, generation + 1);
    assert_eq!(alone.members.len(), 1);
}

#[test]
fn a_silent_member_is_removed_when_its_session_ends() {
    let (_dir, _broker, kafka) = start("kafka_groups_session");
    let group = "sessions";
    let mut a = KafkaRaw::connect(kafka);
    let mut b = KafkaRaw::connect(kafka);
    let first = stable_single(&mut a, group);
    let b_join = send_join_with_id(&mut b, group);
    poll_until(CALL_TIMEOUT, "A is told to rejoin", || {
        (heartbeat(&mut a, group, first.member_id.as_str(), None, first.generation_id)
            == REBALANCE_IN_PROGRESS)
            .then_some(())
    });
    let a_joined = a.call(&join_request(group, first.member_id.as_str(), None), 9);
    let b_joined = answer::<JoinGroupRequest>(&mut b, 5, b_join);
    let b_sync = sync(&mut b, group, &b_joined, &[]);
    let a_sync = sync(&mut a, group, &a_joined, &[]);
    assert_eq!(answer::<SyncGroupRequest>(&mut a, 5, a_sync).error_code, NONE);
    assert_eq!(answer::<SyncGroupRequest>(&mut b, 5, b_sync).error_code, NONE);
    // B falls silent; A keeps heartbeating and is told to rejoin once B's session ends.
    let generation = a_joined.generation_id;
    let outcome = poll_until(
        Duration::from_millis(u64::try_from(SESSION_MS * 4).unwrap_or(u64::MAX)),
        "B's session ends",
        || {
            let code = heartbeat(&mut a, group, a_joined.member_id.as_str(), None, generation);
            (code != NONE).then_some(code)
        },
    );
    assert_eq!(outcome, REBALANCE_IN_PROGRESS);
    let alone = a.call(&join_request(group, a_joined.member_id.as_str(), None), 9);
    assert_eq!(alone.error_code, NONE);
    assert_eq!(alone.members.len(), 1, "only A is left");
    assert_eq!(
        heartbeat(&mut b, group, b_joined.member_id.as_str(), None, generation),
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let (_dir, _broker, kafka) = start("kafka_groups_static");
    let group = "static";
    let mut a = KafkaRaw::connect(kafka);
    let joined = a.call(&join_request(group, "", Some("instance-a")), 9);
    assert_eq!(
        joined.error_code, NONE,
        "a static member needs no MEMBER_ID_REQUIRED round"
    );
    let correlation = sync(
        &mut a,
        group,
        &joined,
        &[(joined.member_id.as_str(), assignment(&[0, 1]))],
    );
    assert_eq!(
        answer::<SyncGroupRequest>(&mut a, 5, correlation).error_code,
        NONE
    );

    // The process restarts: a new connection, no member id, the same instance id.
    let mut again = KafkaRaw::connect(kafka);
    let rejoined = again.call(&join_request(group, "", Some("instance-a")), 9);
    assert_eq!(rejoined.error_code, NONE);
    assert_ne!(rejoined.member_id, joined.member_id);
    assert_eq!(rejoined.generation_id, joined.generation_id, "no rebalance");
    assert!(rejoined.skip_assignment, "the assignment stands (v9)");
    let correlation = sync(&mut again, group, &rejoined, &[]);
    assert_eq!(
        answer::<SyncGroupRequest>(&mut again, 5, correlation).assignment,
        assignment(&[0, 1])
    );
    assert_eq!(
        heartbeat(
            &mut a,
            group,
            joined.member_id.as_str(),
            Some("instance-a"),
            joined.generation_id
        ),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        heartbeat(
            &mut again,
            group,
            rejoined.member_id.as_str(),
            Some("instance-a"),
            rejoined.generation_id
        ),
        NONE
    );
}

#[test]
fn a_native_group_and_a_classic_group_refuse_each_others_protocol() {
    let (_dir, broker, kafka) = start("kafka_groups_inconsistent");
    let mut native = RawMember::join(broker.addr(), "native-group", TOPIC, 10_000);
    let mut conn = KafkaRaw::connect(kafka);
    let refused = conn.call(&join_request("native-group", "", None), 5);
    assert_eq!(refused.error_code, INCONSISTENT_GROUP_PROTOCOL);

    stable_single(&mut conn, "classic-group");
    let mut client = RawClient::connect_or_panic(broker.addr());
    let body = pb::request::Body::ConsumerGroupHeartbeat(pb::ConsumerGroupHeartbeatRequest {
        group_id: "classic-group".into(),
        member_epoch: 0,
        has_subscription: true,
        subscribed_topics: vec![TOPIC.into()],
        session_timeout_ms: 10_000,
        ..pb::ConsumerGroupHeartbeatRequest::default()
    });
    match tidelog_e2e::groups::group_call(&mut client, body) {
        pb::response::Body::ConsumerGroupHeartbeat(response) => {
            assert_eq!(
                response.error(),
                ErrorCode::InconsistentGroupProtocol,
                "{response:?}"
            );
        }
        other => panic!("unexpected body {other:?}"),
    }
    assert_eq!(
        native.heartbeat().error(),
        ErrorCode::None,
        "the native group is untouched"
    );
}

fn commit(
    conn: &mut KafkaRaw,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id_or_member_epoch = generation;
    request.member_id = text(member_id);
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text(TOPIC));
    topic.partitions = offsets
        .iter()
        .map(|(partition, offset)| {
            let mut out = OffsetCommitRequestPartition::default();
            out.partition_index = *partition;
            out.committed_offset = *offset;
            out.committed_metadata = Some(text(""));
            out
        })
        .collect();
    request.topics = vec![topic];
    let response = conn.call(&request, 8);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// Committed offsets of `TOPIC` partitions 0 and 1 through OffsetFetch `version` (v8:
/// batched groups).
fn fetch_offsets(conn: &mut KafkaRaw, version: i16, group: &str) -> Vec<i64> {
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        let mut asked = OffsetFetchRequestGroup::default();
        asked.group_id = GroupId(text(group));
        let mut topic = OffsetFetchRequestTopics::default();
        topic.name = TopicName(text(TOPIC));
        topic.partition_indexes = vec![0, 1];
        asked.topics = Some(vec![topic]);
        request.groups = vec![asked];
        let response = conn.call(&request, version);
        assert_eq!(response.groups[0].error_code, NONE);
        return response.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect();
    }
    request.group_id = GroupId(text(group));
    let mut topic = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
    topic.name = TopicName(text(TOPIC));
    topic.partition_indexes = vec![0, 1];
    request.topics = Some(vec![topic]);
    let response = conn.call(&request, version);
    assert_eq!(response.error_code, NONE);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

#[test]
fn commits_fetches_and_group_admin_work_for_a_classic_group() {
    let (_dir, broker, kafka) = start("kafka_groups_offsets");
    let group = "committers";
    let mut native = RawClient::connect_or_panic(broker.addr());
    for partition in 0..PARTITIONS {
        let values: Vec<String> = (0..10).map(|n| format!("p{partition}-{n}")).collect();
        produce_values(&mut native, TOPIC, partition, &values);
    }
    let mut conn = KafkaRaw::connect(kafka);
    // An admin commit (generation -1, no member) to a group with no members is accepted.
    assert_eq!(commit(&mut conn, group, "", -1, &[(0, 1), (1, 1)]), [NONE, NONE]);
    let joined = stable_single(&mut conn, group);
    let member = joined.member_id.as_str();
    assert_eq!(
        commit(&mut conn, group, "", -1, &[(0, 2)]),
        [UNKNOWN_MEMBER_ID],
        "not while it has members"
    );
    assert_eq!(
        commit(&mut conn, group, member, joined.generation_id, &[(0, 4), (1, 7)]),
        [NONE, NONE]
    );
    assert_eq!(
        commit(&mut conn, group, member, joined.generation_id - 1, &[(0, 5)]),
        [ILLEGAL_GENERATION]
    );
    assert_eq!(fetch_offsets(&mut conn, 5, group), [4, 7]);
    assert_eq!(fetch_offsets(&mut conn, 8, group), [4, 7]);
    assert_eq!(fetch_offsets(&mut conn, 8, "never-committed"), [-1, -1]);

    // ListGroups with a states filter (v4), DescribeGroups with authorized operations (v5).
    let mut list = ListGroupsRequest::default();
    list.states_filter = vec![text("stable")];
    let listed = conn.call(&list, 4);
    assert!(listed
        .groups
        .iter()
        .any(|g| g.group_id.0.as_str() == group && g.group_state.as_str() == "Stable"));
    list.states_filter = vec![text("Empty")];
    assert!(conn
        .call(&list, 4)
        .groups
        .iter()
        .all(|g| g.group_id.0.as_str() != group));
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![GroupId(text(group)), GroupId(text("unknown-group"))];
    describe.include_authorized_operations = true;
    let described = conn.call(&describe, 5);
    let ours = &described.groups[0];
    assert_eq!((ours.error_code, ours.group_state.as_str()), (NONE, "Stable"));
    assert_eq!(
        (ours.protocol_type.as_str(), ours.protocol_data.as_str()),
        ("consumer", "range")
    );
    assert_eq!(ours.members.len(), 1);
    assert_eq!(ours.members[0].member_assignment, assignment(&[0, 1]));
    assert_eq!(ours.authorized_operations, (1 << 3) | (1 << 6) | (1 << 8));
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");

    // The native CLI shows the classic group with its lag.
    let out = run_cli(Some(broker.addr()), &["group", "describe", group], b"");
    out.assert_success();
    assert!(out.stdout.contains("Protocol: classic (range)"), "{}", out.stdout);
    let partitions = described_partitions(&out.stdout, TOPIC);
    assert_eq!(partitions[&0].committed, Some(4));
    assert_eq!(partitions[&0].lag, Some(6));
    assert_eq!(partitions[&1].lag, Some(3));
    assert_eq!(
        partitions[&0].member.as_deref(),
        Some(member),
        "the decoded assignment names the owner"
    );

    // Delete: refused with a member, done once it left; its offsets go with it.
    let mut delete = DeleteGroupsRequest::default();
    delete.groups_names = vec![GroupId(text(group))];
    assert_eq!(conn.call(&delete, 2).results[0].error_code, 68, "NON_EMPTY_GROUP");
    let mut leave = LeaveGroupRequest::default();
    leave.group_id = GroupId(text(group));
    leave.member_id = text(member);
    assert_eq!(conn.call(&leave, 1).error_code, NONE);
    assert_eq!(conn.call(&delete, 2).results[0].error_code, NONE);
    assert_eq!(fetch_offsets(&mut conn, 5, group), [-1, -1]);
}

#[test]
fn a_kip848_member_joins_through_kafka_and_gets_every_partition_by_topic_id() {
    use kafka_protocol::messages::{
        ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, MetadataRequest,
    };

    let (_dir, _broker, kafka) = start("kafka_groups_kip848");
    let mut conn = KafkaRaw::connect(kafka);
    let mut metadata = MetadataRequest::default();
    let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text(TOPIC)));
    metadata.topics = Some(vec![wanted]);
    let topic_id = conn.call(&metadata, 12).topics[0].topic_id;
    assert!(!topic_id.is_nil());

    let mut heartbeat = ConsumerGroupHeartbeatRequest::default();
    heartbeat.group_id = GroupId(text("kip848"));
    heartbeat.member_epoch = 0;
    heartbeat.rebalance_timeout_ms = REBALANCE_MS;
    heartbeat.subscribed_topic_names = Some(vec![TopicName(text(TOPIC))]);
    heartbeat.topic_partitions = Some(Vec::new());
    let joined = conn.call(&heartbeat, 0);
    assert_eq!(joined.error_code, NONE, "{joined:?}");
    let member_id = joined.member_id.clone().expect("a member id");
    assert!(joined.member_epoch > 0);
    let assignment = joined.assignment.expect("an assignment");
    assert_eq!(assignment.topic_partitions.len(), 1);
    assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
    let mut partitions = assignment.topic_partitions[0].partitions.clone();
    partitions.sort_unstable();
    assert_eq!(partitions, [0, 1]);

    let mut describe = ConsumerGroupDescribeRequest::default();
    describe.group_ids = vec![GroupId(text("kip848"))];
    let described = conn.call(&describe, 0);
    assert_eq!(described.groups[0].error_code, NONE);
    assert_eq!(described.groups[0].members.len(), 1);
    assert_eq!(described.groups[0].members[0].member_id, member_id);

    // The group speaks the consumer protocol: a classic join is refused.
    let refused = conn.call(&join_request("kip848", "", None), 5);
    assert_eq!(refused.error_code, INCONSISTENT_GROUP_PROTOCOL);
}
