//! Consumer groups from the outside: typed calls of the group APIs over [`RawClient`] (join,
//! heartbeat, leave, commit, fetch offsets, list, describe, delete), and [`GroupConsumer`], a
//! `tidelog consume --group` child process whose printed records are collected as they appear
//! and which can be killed (SIGKILL) or stopped (SIGTERM).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tidelog_proto::pb::{self, ApiKey, ErrorCode};

use crate::binaries::binaries;
use crate::raw::RawClient;
use crate::records::batch_of;
use crate::wait::try_poll_until;

/// Member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// Lines of output kept per consumer process; a test consumes far fewer.
const CONSUMER_LINES_MAX: usize = 1_000_000;

/// The `ApiKey` of a group request body (the harness's `api_of` predates these APIs).
pub fn group_api_of(body: &pb::request::Body) -> ApiKey {
    match body {
        pb::request::Body::ConsumerGroupHeartbeat(_) => ApiKey::ConsumerGroupHeartbeat,
        pb::request::Body::OffsetCommit(_) => ApiKey::OffsetCommit,
        pb::request::Body::OffsetFetch(_) => ApiKey::OffsetFetch,
        pb::request::Body::ListGroups(_) => ApiKey::ListGroups,
        pb::request::Body::DescribeGroups(_) => ApiKey::DescribeGroups,
        pb::request::Body::DeleteGroups(_) => ApiKey::DeleteGroups,
        other => crate::raw::api_of(other),
    }
}

/// Sends a group request with the right API key and waits for its response; panics on a
/// transport error or a request-level error (the whole request refused).
pub fn group_call(client: &mut RawClient, body: pb::request::Body) -> pb::response::Body {
    let api = group_api_of(&body);
    let (correlation_id, mut request) = client.request(body);
    if let Some(header) = &mut request.header {
        header.api = api as i32;
    }
    let response = client
        .send(&request)
        .and_then(|()| client.wait_for(correlation_id))
        .unwrap_or_else(|error| panic!("{api:?} request failed: {error}"));
    assert_eq!(
        response.error(),
        ErrorCode::None,
        "{api:?} request refused as a whole: {response:?}"
    );
    response
        .body
        .unwrap_or_else(|| panic!("{api:?} response without a body"))
}

/// One topic's partitions, as the schema lists them.
pub fn topic_partitions(topic: &str, partitions: impl IntoIterator<Item = u32>) -> pb::TopicPartitions {
    pb::TopicPartitions {
        topic: topic.into(),
        partitions: partitions.into_iter().collect(),
    }
}

/// The partitions of `topic` in an assignment list.
pub fn partitions_of(assignment: &[pb::TopicPartitions], topic: &str) -> BTreeSet<u32> {
    assignment
        .iter()
        .filter(|entry| entry.topic == topic)
        .flat_map(|entry| entry.partitions.iter().copied())
        .collect()
}

/// A group member driven by hand over one connection: it heartbeats only when told to, so a
/// test can make it a zombie by simply not calling [`heartbeat`](Self::heartbeat) any more.
#[derive(Debug)]
pub struct RawMember {
    pub client: RawClient,
    pub group_id: String,
    pub topic: String,
    pub member_id: String,
    pub epoch: i32,
    pub session_timeout_ms: u32,
    /// What the member owns: the last assignment the coordinator sent.
    pub owned: BTreeSet<u32>,
}

impl RawMember {
    /// Joins `group_id` subscribed to `topic`; panics unless the join succeeds.
    pub fn join(addr: SocketAddr, group_id: &str, topic: &str, session_timeout_ms: u32) -> Self {
        let mut member = Self {
            client: RawClient::connect_or_panic(addr),
            group_id: group_id.into(),
            topic: topic.into(),
            member_id: String::new(),
            epoch: JOIN_EPOCH,
            session_timeout_ms,
            owned: BTreeSet::new(),
        };
        let response = member.send_heartbeat(JOIN_EPOCH, true);
        assert_eq!(
            response.error(),
            ErrorCode::None,
            "joining {group_id}: {response:?}"
        );
        assert!(
            !response.member_id.is_empty(),
            "a join must be answered with a member id: {response:?}"
        );
        member.absorb(&response);
        member
    }

    fn send_heartbeat(&mut self, epoch: i32, with_subscription: bool) -> pb::ConsumerGroupHeartbeatResponse {
        let body = pb::request::Body::ConsumerGroupHeartbeat(pb::ConsumerGroupHeartbeatRequest {
            group_id: self.group_id.clone(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            instance_id: None,
            has_subscription: with_subscription,
            subscribed_topics: if with_subscription {
                vec![self.topic.clone()]
            } else {
                Vec::new()
            },
            session_timeout_ms: self.session_timeout_ms,
            has_owned_partitions: epoch > 0,
            owned_partitions: if epoch > 0 {
                vec![topic_partitions(&self.topic, self.owned.iter().copied())]
            } else {
                Vec::new()
            },
        });
        match group_call(&mut self.client, body) {
            pb::response::Body::ConsumerGroupHeartbeat(response) => response,
            other => panic!("unexpected ConsumerGroupHeartbeat response body: {other:?}"),
        }
    }

    /// Takes the id, epoch and assignment of a successful heartbeat response.
    fn absorb(&mut self, response: &pb::ConsumerGroupHeartbeatResponse) {
        self.member_id = response.member_id.clone();
        self.epoch = response.member_epoch;
        if response.has_assignment {
            // Cooperative: what is no longer listed is released at once (this member never
            // consumes), which is how the coordinator learns the revocation is done.
            self.owned = partitions_of(&response.assignment, &self.topic);
        }
    }

    /// One heartbeat with the current id, epoch and owned partitions. Returns the response;
    /// on success the member takes its new epoch and assignment.
    pub fn heartbeat(&mut self) -> pb::ConsumerGroupHeartbeatResponse {
        let response = self.send_heartbeat(self.epoch, false);
        if response.error() == ErrorCode::None {
            self.absorb(&response);
        }
        response
    }

    /// Heartbeats until it owns `wanted` partitions (and the coordinator's epoch is stable),
    /// at most `timeout`. Returns whether it got there.
    pub fn heartbeat_until_owning(&mut self, wanted: &BTreeSet<u32>, timeout: Duration) -> bool {
        try_poll_until(timeout, || {
            let response = self.heartbeat();
            assert_eq!(
                response.error(),
                ErrorCode::None,
                "heartbeat of {} in {}: {response:?}",
                self.member_id,
                self.group_id
            );
            (self.owned == *wanted).then_some(())
        })
        .is_some()
    }

    /// Leaves the group (epoch -1); returns the heartbeat response.
    pub fn leave(&mut self) -> pb::ConsumerGroupHeartbeatResponse {
        self.send_heartbeat(LEAVE_EPOCH, false)
    }

    /// Commits `offsets` (partition → next offset) with this member's id and epoch.
    pub fn commit(&mut self, offsets: &[(u32, i64)]) -> Vec<ErrorCode> {
        let (member_id, epoch) = (self.member_id.clone(), self.epoch);
        let (group_id, topic) = (self.group_id.clone(), self.topic.clone());
        offset_commit(&mut self.client, &group_id, &member_id, epoch, &topic, offsets)
    }
}

/// Commits offsets; returns one error code per partition, in request order. A commit refused
/// as a whole (if the broker answers that way) yields that code for every partition.
pub fn offset_commit(
    client: &mut RawClient,
    group_id: &str,
    member_id: &str,
    member_epoch: i32,
    topic: &str,
    offsets: &[(u32, i64)],
) -> Vec<ErrorCode> {
    let body = pb::request::Body::OffsetCommit(pb::OffsetCommitRequest {
        group_id: group_id.into(),
        member_id: member_id.into(),
        member_epoch,
        topics: vec![pb::offset_commit_request::Topic {
            name: topic.into(),
            partitions: offsets
                .iter()
                .map(|&(partition, offset)| pb::offset_commit_request::Partition {
                    partition,
                    offset,
                    metadata: String::new(),
                })
                .collect(),
        }],
    });
    let api = ApiKey::OffsetCommit;
    let (correlation_id, mut request) = client.request(body);
    if let Some(header) = &mut request.header {
        header.api = api as i32;
    }
    let response = client
        .send(&request)
        .and_then(|()| client.wait_for(correlation_id))
        .unwrap_or_else(|error| panic!("OffsetCommit failed: {error}"));
    if response.error() != ErrorCode::None {
        return vec![response.error(); offsets.len()];
    }
    let Some(pb::response::Body::OffsetCommit(body)) = response.body else {
        panic!("unexpected OffsetCommit response: {response:?}");
    };
    let by_partition: BTreeMap<u32, ErrorCode> = body
        .topics
        .iter()
        .filter(|result| result.name == topic)
        .flat_map(|result| result.partitions.iter())
        .map(|partition| (partition.partition, partition.error()))
        .collect();
    offsets
        .iter()
        .map(|(partition, _)| {
            *by_partition
                .get(partition)
                .unwrap_or_else(|| panic!("OffsetCommit response lacks partition {partition}: {body:?}"))
        })
        .collect()
}

/// Committed offsets of `topic`'s `partitions` (-1: nothing committed); panics on any error.
pub fn committed_offsets(
    client: &mut RawClient,
    group_id: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = u32>,
) -> BTreeMap<u32, i64> {
    let body = pb::request::Body::OffsetFetch(pb::OffsetFetchRequest {
        group_id: group_id.into(),
        topics: vec![topic_partitions(topic, partitions)],
    });
    let response = match group_call(client, body) {
        pb::response::Body::OffsetFetch(response) => response,
        other => panic!("unexpected OffsetFetch response body: {other:?}"),
    };
    assert_eq!(
        response.error(),
        ErrorCode::None,
        "OffsetFetch of {group_id}: {response:?}"
    );
    response
        .topics
        .iter()
        .filter(|result| result.name == topic)
        .flat_map(|result| result.partitions.iter())
        .map(|partition| {
            assert_eq!(
                partition.error(),
                ErrorCode::None,
                "OffsetFetch of {group_id} {topic}/{}: {response:?}",
                partition.partition
            );
            (partition.partition, partition.offset)
        })
        .collect()
}

pub fn list_groups(client: &mut RawClient) -> Vec<pb::list_groups_response::Group> {
    match group_call(client, pb::request::Body::ListGroups(pb::ListGroupsRequest {})) {
        pb::response::Body::ListGroups(response) => response.groups,
        other => panic!("unexpected ListGroups response body: {other:?}"),
    }
}

/// DescribeGroups of one group (its error is not checked).
pub fn describe_group(client: &mut RawClient, group_id: &str) -> pb::describe_groups_response::Group {
    let body = pb::request::Body::DescribeGroups(pb::DescribeGroupsRequest {
        group_ids: vec![group_id.into()],
    });
    match group_call(client, body) {
        pb::response::Body::DescribeGroups(mut response) if response.groups.len() == 1 => {
            response.groups.remove(0)
        }
        other => panic!("unexpected DescribeGroups response body: {other:?}"),
    }
}

/// DeleteGroups of one group; returns its result code.
pub fn delete_group(client: &mut RawClient, group_id: &str) -> ErrorCode {
    let body = pb::request::Body::DeleteGroups(pb::DeleteGroupsRequest {
        group_ids: vec![group_id.into()],
    });
    match group_call(client, body) {
        pb::response::Body::DeleteGroups(response) if response.results.len() == 1 => {
            response.results[0].error()
        }
        other => panic!("unexpected DeleteGroups response body: {other:?}"),
    }
}

/// Who owns which partitions of `topic`, per member id, according to a describe.
pub fn ownership(
    group: &pb::describe_groups_response::Group,
    topic: &str,
) -> BTreeMap<String, BTreeSet<u32>> {
    group
        .members
        .iter()
        .map(|member| (member.member_id.clone(), partitions_of(&member.assignment, topic)))
        .collect()
}

/// `Some(ownership)` when the group is stable with `members` members that together own every
/// one of `partitions` partitions, each exactly `partitions / members` of them.
pub fn balanced(
    client: &mut RawClient,
    group_id: &str,
    topic: &str,
    members: usize,
    partitions: u32,
) -> Option<BTreeMap<String, BTreeSet<u32>>> {
    let group = describe_group(client, group_id);
    if group.error() != ErrorCode::None || group.state != "stable" || group.members.len() != members {
        return None;
    }
    let owners = ownership(&group, topic);
    let each = partitions as usize / members;
    let all: BTreeSet<u32> = owners.values().flatten().copied().collect();
    let total: usize = owners.values().map(BTreeSet::len).sum();
    (owners.values().all(|owned| owned.len() == each) && total == partitions as usize && all.len() == total)
        .then_some(owners)
}

/// Produces `values` to `topic/partition` as one batch; returns the base offset.
pub fn produce_values(client: &mut RawClient, topic: &str, partition: u32, values: &[String]) -> i64 {
    client.produce_ok(topic, partition, batch_of(values))
}

/// One line of `consume --print-offset`: `PARTITION<TAB>OFFSET<TAB>VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsumedLine {
    pub partition: u32,
    pub offset: i64,
    pub value: String,
}

/// Parses a `--print-offset` line; panics on anything else.
pub fn parse_offset_line(line: &str) -> ConsumedLine {
    let fields: Vec<&str> = line.splitn(3, '\t').collect();
    assert_eq!(
        fields.len(),
        3,
        "expected PARTITION<TAB>OFFSET<TAB>VALUE, got {line:?}"
    );
    ConsumedLine {
        partition: fields[0]
            .parse()
            .unwrap_or_else(|_| panic!("bad partition in {line:?}")),
        offset: fields[1]
            .parse()
            .unwrap_or_else(|_| panic!("bad offset in {line:?}")),
        value: fields[2].to_owned(),
    }
}

/// A `tidelog --broker ADDR consume ...` child process. Its stdout lines are collected by a
/// thread as they are printed; stderr is collected too, for failure messages.
#[derive(Debug)]
pub struct GroupConsumer {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl GroupConsumer {
    /// Starts `tidelog --broker ADDR ARGS...`; `name` labels it in messages.
    pub fn spawn(name: &str, broker: SocketAddr, args: &[&str]) -> Self {
        let mut command = Command::new(&binaries().cli);
        command
            .arg("--broker")
            .arg(broker.to_string())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (variable, _) in std::env::vars_os() {
            if variable.to_string_lossy().starts_with("TIDELOG_") {
                command.env_remove(variable);
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("spawning {}: {error}", binaries().cli.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let mut lines = sink.lock().expect("lines lock");
                if lines.len() < CONSUMER_LINES_MAX {
                    lines.push(line);
                }
            }
        });
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr: Arc<Mutex<String>> = Arc::default();
        let stderr_sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { return };
                let mut text = stderr_sink.lock().expect("stderr lock");
                if text.len() < 1 << 20 {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        Self {
            name: name.into(),
            child,
            lines,
            stdout_reader: Some(stdout_reader),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Lines printed so far, parsed as `--print-offset` lines.
    pub fn records(&self) -> Vec<ConsumedLine> {
        self.lines().iter().map(|line| parse_offset_line(line)).collect()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("polling tidelog").is_none()
    }

    /// SIGKILL: the consumer dies without committing or leaving. Waits for it and for its
    /// output to end.
    pub fn kill9(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        self.child.wait().expect("reaping tidelog");
        self.join_readers();
    }

    /// Sends `signal` and waits up to `timeout` for the exit; panics (after a SIGKILL) past it.
    pub fn signal_and_wait(&mut self, signal: Signal, timeout: Duration) -> ExitStatus {
        let _ = kill(self.pid(), signal);
        self.wait(timeout)
    }

    /// Waits up to `timeout` for the process to exit on its own; panics (after a SIGKILL)
    /// past it. Its output has been read to the end when this returns.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let status = try_poll_until(timeout, || self.child.try_wait().expect("polling tidelog"));
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.join_readers();
            panic!(
                "consumer {} did not exit within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
        };
        self.join_readers();
        status
    }

    fn join_readers(&mut self) {
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- consumer {} stderr ----\n{}", self.name, self.stderr());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The cells of each table row in CLI output: a line split at the table's column separators
/// (`│`, `┆` or `|`), cells trimmed. Lines without a separator (borders, titles) are skipped.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    let separators = ['│', '┆', '|'];
    text.lines()
        .filter(|line| line.contains(separators))
        .map(|line| {
            let cells: Vec<String> = line
                .split(separators)
                .map(|cell| cell.trim().to_owned())
                .collect();
            // A leading and a trailing border leave empty edge cells.
            let start = usize::from(cells.first().is_some_and(String::is_empty));
            let end =
                cells.len() - usize::from(cells.len() > start && cells.last().is_some_and(String::is_empty));
            cells[start..end].to_vec()
        })
        .collect()
}

/// One partition row of `tidelog group describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedPartition {
    /// `None` where the CLI prints `-` (nothing committed).
    pub committed: Option<i64>,
    pub log_end: i64,
    pub lag: Option<i64>,
    /// `None` where no member owns it (`-` or empty).
    pub member: Option<String>,
}

/// The partition rows of `tidelog group describe` for `topic`: cells TOPIC, PARTITION,
/// COMMITTED, LOG END, LAG, MEMBER. Panics on a row of the topic that does not parse.
pub fn described_partitions(text: &str, topic: &str) -> BTreeMap<u32, DescribedPartition> {
    let number = |cell: &str, row: &[String]| -> Option<i64> {
        if cell == "-" || cell.is_empty() {
            return None;
        }
        Some(
            cell.parse()
                .unwrap_or_else(|_| panic!("group describe: {cell:?} is not a number in row {row:?}")),
        )
    };
    table_rows(text)
        .into_iter()
        .filter(|row| row.len() >= 5 && row[0] == topic && row[1].parse::<u32>().is_ok())
        .map(|row| {
            let partition = row[1].parse().expect("checked above");
            let described = DescribedPartition {
                committed: number(&row[2], &row),
                log_end: number(&row[3], &row)
                    .unwrap_or_else(|| panic!("group describe: no log end in {row:?}")),
                lag: number(&row[4], &row),
                member: row
                    .get(5)
                    .filter(|cell| !cell.is_empty() && cell.as_str() != "-")
                    .cloned(),
            };
            (partition, described)
        })
        .collect()
}

/// Whether `tidelog group list` output has a row for `group` (its first cell).
pub fn lists_group(text: &str, group: &str) -> bool {
    table_rows(text)
        .iter()
        .any(|row| row.first().is_some_and(|cell| cell == group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_table_rows_parse_with_unicode_and_ascii_borders() {
        let text = "Group: g  State: empty  Members: 0  Epoch: 3\n\
                    ┌────────┬───────────┬──────────────────┐\n\
                    │ Topic  ┆ Partition ┆ Committed offset ┆ Log end offset ┆ Lag ┆ Member │\n\
                    ╞════════╪═══════════╪══════════════════╡\n\
                    │ orders ┆         0 ┆                6 ┆             10 ┆   4 ┆ -      │\n\
                    │ orders ┆         1 ┆                - ┆             10 ┆   - ┆ abc    │\n\
                    └────────┴───────────┴──────────────────┘\n\
                    | orders | 2 | 1 | 3 | 2 | |\n";
        let rows = described_partitions(text, "orders");
        assert_eq!(
            rows[&0],
            DescribedPartition {
                committed: Some(6),
                log_end: 10,
                lag: Some(4),
                member: None
            }
        );
        assert_eq!(rows[&1].committed, None);
        assert_eq!(rows[&1].member.as_deref(), Some("abc"));
        assert_eq!(rows[&2].lag, Some(2));
        assert!(lists_group("│ g ┆ empty ┆ 0 │", "g"));
        assert!(!lists_group("│ gg ┆ empty ┆ 0 │", "g"));
    }
}
