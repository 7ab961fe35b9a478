//! Broker configuration: one struct, validated once. Sources, highest first: command-line flags,
//! `TIDELOG_*` environment variables, an optional TOML file, then the defaults here. Merging flags
//! and files is the binary's job; this module owns the shape, the defaults and the checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::BrokerError;
use crate::storage::{CleanupPolicy, CompactionConfig, FlushPolicy, LogConfig};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7171";
pub const DEFAULT_DATA_DIR: &str = "./tidelog-data";
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

/// Everything a broker needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// This broker's id in metadata responses. One broker today; replicas later.
    pub broker_id: u32,
    /// Host name clients should connect to, when it differs from the listen address.
    pub advertised_host: Option<String>,
    /// Broker-wide flush policy; a topic may override it.
    #[serde(deserialize_with = "deserialize_flush")]
    pub flush: FlushPolicy,
    pub log: LogDefaults,
    pub limits: Limits,
    /// How often retention and age-based segment rolls run.
    pub maintenance_interval_ms: u64,
    /// Consumer groups: session defaults and limits.
    pub groups: GroupsConfig,
    /// The Kafka-protocol listener (the `[kafka]` section).
    pub kafka: KafkaListenerConfig,
    /// The log cleaner: compaction and stream erasure (the `[cleaner]` section).
    pub cleaner: CleanerConfig,
    /// Whether Kafka clients create unknown topics on use (Metadata with
    /// `allow_auto_topic_creation`, Produce), with `log.partitions` partitions and the broker
    /// defaults. Off by default: a typo should not make a topic.
    pub auto_create_topics: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            // A literal that always parses.
            listen: SocketAddr::from(([127, 0, 0, 1], 7171)),
            broker_id: 0,
            advertised_host: None,
            flush: FlushPolicy::Always,
            log: LogDefaults::default(),
            limits: Limits::default(),
            maintenance_interval_ms: 5_000,
            groups: GroupsConfig::default(),
            kafka: KafkaListenerConfig::default(),
            cleaner: CleanerConfig::default(),
            auto_create_topics: false,
        }
    }
}

/// The Kafka-protocol listener: where it listens, what Metadata tells clients, and the limits
/// of its connections. Its connections draw on the broker's one memory budget
/// (`limits.memory_bytes_max`) and count against the broker's one connection cap
/// (`limits.connections_max`, `limits.connections_per_address_max`: every connection is a file
/// descriptor, and the descriptor budget reserves one per connection of any protocol).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaListenerConfig {
    /// Address to listen on; `"none"` turns the listener off.
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: Option<SocketAddr>,
    /// `HOST:PORT` that Metadata and FindCoordinator tell clients to connect to. Unset: the
    /// bound address (its host replaced by `advertised_host` when that is set).
    pub advertised: Option<String>,
    /// Largest request frame accepted; a larger size prefix closes the connection. Kafka's own
    /// default (`socket.request.max.bytes`) is 100 MiB; this one matches the native listener.
    pub frame_bytes_max: usize,
    /// Requests processed at once on one connection; further frames wait in the socket.
    pub in_flight_requests_per_connection_max: usize,
    /// Responses queued, in request order, for one connection's writer.
    pub response_queue_depth: usize,
    /// A connection with no request under way and no byte received for this long is closed.
    pub connection_idle_timeout_ms: u64,
    /// Once a frame's first byte has arrived, its 4-byte size prefix must complete within this.
    pub request_header_timeout_ms: u64,
    /// Once a frame's first byte has arrived, the whole frame must complete within this.
    pub frame_completion_timeout_ms: u64,
    /// A connection whose socket accepts no byte of a pending response for this long is cut.
    pub write_stall_timeout_ms: u64,
}

impl Default for KafkaListenerConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            // A literal that always parses.
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9092))),
            advertised: None,
            frame_bytes_max: limits.frame_bytes_max,
            in_flight_requests_per_connection_max: limits.in_flight_requests_per_connection_max,
            response_queue_depth: limits.response_queue_depth,
            connection_idle_timeout_ms: limits.connection_idle_timeout_ms,
            request_header_timeout_ms: limits.request_header_timeout_ms,
            frame_completion_timeout_ms: limits.frame_completion_timeout_ms,
            write_stall_timeout_ms: limits.write_stall_timeout_ms,
        }
    }
}

impl KafkaListenerConfig {
    /// Parses a listen address as the `--kafka-listen` flag takes it: `ADDR` or `none`.
    pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|error| format!("{text:?} is neither an IP:PORT address nor \"none\": {error}"))
    }

    /// The advertised `HOST:PORT`, split; `None` when unset.
    pub fn advertised_host_port(&self) -> Result<Option<(String, u16)>, BrokerError> {
        let Some(text) = &self.advertised else {
            return Ok(None);
        };
        parse_host_port(text)
            .map(Some)
            .ok_or_else(|| BrokerError::Config(format!("kafka.advertised {text:?} is not HOST:PORT")))
    }

    fn validate(&self, limits: &Limits) -> Result<(), BrokerError> {
        let fail = |message: String| Err(BrokerError::Config(message));
        self.advertised_host_port()?;
        if self.frame_bytes_max < 1024 || self.frame_bytes_max > i32::MAX as usize {
            return fail("kafka.frame_bytes_max must be between 1024 and 2147483647".into());
        }
        // A connection must be able to hold a largest frame and its append copy.
        if limits.connection_memory_bytes_max < self.frame_bytes_max.saturating_mul(2) {
            return fail("2 * kafka.frame_bytes_max <= limits.connection_memory_bytes_max must hold".into());
        }
        for (name, value) in [
            (
                "kafka.in_flight_requests_per_connection_max",
                self.in_flight_requests_per_connection_max as u64,
            ),
            ("kafka.response_queue_depth", self.response_queue_depth as u64),
            (
                "kafka.connection_idle_timeout_ms",
                self.connection_idle_timeout_ms,
            ),
            ("kafka.request_header_timeout_ms", self.request_header_timeout_ms),
            (
                "kafka.frame_completion_timeout_ms",
                self.frame_completion_timeout_ms,
            ),
            ("kafka.write_stall_timeout_ms", self.write_stall_timeout_ms),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// `HOST:PORT` (an IPv6 host in brackets) split at its last colon.
fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

fn deserialize_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    KafkaListenerConfig::parse_listen(&text).map_err(serde::de::Error::custom)
}

/// The log cleaner (the `[cleaner]` section): its threads and their bounds. Which topics it
/// compacts and when is each topic's `cleanup.policy` and compaction settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanerConfig {
    /// Threads cleaning partitions (each cleans one partition at a time); 0 turns the cleaner
    /// off (compacted topics then grow, erasures wait).
    pub threads: usize,
    /// Bytes per second of segment reads and writes, all cleaner threads together, so produce
    /// latency holds while they run.
    pub io_bytes_per_sec_max: u64,
    /// Memory for one clean's key map (key bytes and offsets of the range cleaned); a range
    /// with more distinct keys is cleaned in parts.
    pub dedupe_buffer_bytes: usize,
    /// How long an idle cleaner thread waits before looking for work again.
    pub backoff_ms: u64,
    /// An acknowledged stream erasure is complete (every record of the key gone from the
    /// segment files) within this long; the cleaner works on due erasures first.
    pub erase_deadline_ms: u64,
    /// A partition the cleaner failed on stays marked uncleanable (and skipped) this long
    /// before it is tried again.
    pub uncleanable_retry_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            threads: 1,
            io_bytes_per_sec_max: 64 << 20,
            dedupe_buffer_bytes: 64 << 20,
            backoff_ms: 15_000,
            erase_deadline_ms: 3_600_000,
            uncleanable_retry_ms: 600_000,
        }
    }
}

/// Most cleaner threads: each holds a key map of `dedupe_buffer_bytes`.
const CLEANER_THREADS_MAX: usize = 64;

impl CleanerConfig {
    fn validate(&self) -> Result<(), BrokerError> {
        let fail = |message: String| Err(BrokerError::Config(message));
        if self.threads > CLEANER_THREADS_MAX {
            return fail(format!("cleaner.threads is at most {CLEANER_THREADS_MAX}"));
        }
        for (name, value) in [
            ("cleaner.io_bytes_per_sec_max", self.io_bytes_per_sec_max),
            ("cleaner.backoff_ms", self.backoff_ms),
            ("cleaner.erase_deadline_ms", self.erase_deadline_ms),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        // Room for a few thousand keys at least, or no clean gets anywhere.
        if self.dedupe_buffer_bytes < 1 << 16 {
            return fail("cleaner.dedupe_buffer_bytes must be at least 65536".into());
        }
        Ok(())
    }
}

/// Consumer-group coordinator settings (the `[groups]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// Session timeout of a member that asks for none (`session_timeout_ms = 0`).
    pub session_timeout_ms: u32,
    pub session_timeout_ms_min: u32,
    pub session_timeout_ms_max: u32,
    /// Heartbeat interval told to members; capped per member at a third of its session timeout
    /// so a member always has room for a few heartbeats before it expires.
    pub heartbeat_interval_ms: u32,
    /// How long a member may take to acknowledge a revocation before it is removed, so one
    /// stuck member cannot hold partitions away from their new owner forever.
    pub revocation_timeout_ms: u64,
    /// Period of the session-expiry timer.
    pub expiry_tick_ms: u64,
    pub groups_max: usize,
    pub members_per_group_max: usize,
    pub group_id_bytes_max: usize,
    /// Also bounds client-chosen member ids (join with a member id and epoch 0).
    pub member_id_bytes_max: usize,
    pub instance_id_bytes_max: usize,
    pub subscribed_topics_per_member_max: usize,
    /// Distinct partitions one group may hold committed offsets for.
    pub committed_partitions_per_group_max: usize,
    pub offset_metadata_bytes_max: usize,
    /// Classic groups: the longest a rebalance may wait for members to rejoin (and then for
    /// the leader's assignment); a client asking for longer gets this.
    pub rebalance_timeout_ms_max: u32,
    /// Classic groups: how long a group that had no members waits after its first JoinGroup
    /// before completing its first rebalance, so members starting together join one
    /// generation, and each has fetched its topics' metadata before its leader assigns
    /// (Kafka's `group.initial.rebalance.delay.ms`). Each new member joining in that wait
    /// extends it by this much again, never past the rebalance timeout; 0 turns it off.
    pub initial_rebalance_delay_ms: u32,
    /// Classic groups: the most a member's protocol metadata (all protocols together), and
    /// separately its assignment, may take; the broker keeps and persists both.
    pub classic_member_bytes_max: usize,
    /// `wait_for_group_offset` calls waiting at once, broker-wide; one more is refused with
    /// the retriable THROTTLING_QUOTA_EXCEEDED (each waiter holds a request slot and a task).
    pub offset_waiters_max: usize,
    /// Longest a `wait_for_group_offset` waits for the commit; a longer timeout is clamped.
    pub offset_wait_ms_max: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 10_000,
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 300_000,
            heartbeat_interval_ms: 1_000,
            revocation_timeout_ms: 300_000,
            expiry_tick_ms: 100,
            groups_max: 10_000,
            members_per_group_max: 1_000,
            group_id_bytes_max: 255,
            member_id_bytes_max: 64,
            instance_id_bytes_max: 255,
            subscribed_topics_per_member_max: 1_000,
            committed_partitions_per_group_max: 100_000,
            offset_metadata_bytes_max: 4_096,
            rebalance_timeout_ms_max: 300_000,
            initial_rebalance_delay_ms: 3_000,
            classic_member_bytes_max: 1_048_576,
            offset_waiters_max: 10_000,
            offset_wait_ms_max: 300_000,
        }
    }
}

impl GroupsConfig {
    fn validate(&self) -> Result<(), BrokerError> {
        let fail = |message: String| Err(BrokerError::Config(message));
        if self.session_timeout_ms_min == 0 || self.session_timeout_ms_min > self.session_timeout_ms_max {
            return fail(
                "groups.session_timeout_ms_min must be at least 1 and at most groups.session_timeout_ms_max"
                    .into(),
            );
        }
        if !(self.session_timeout_ms_min..=self.session_timeout_ms_max).contains(&self.session_timeout_ms) {
            return fail("groups.session_timeout_ms must lie within its min and max".into());
        }
        // Group ids and topic names are length-prefixed with a u16 in metadata keys.
        if self.group_id_bytes_max == 0 || self.group_id_bytes_max > usize::from(u16::MAX) {
            return fail(format!(
                "groups.group_id_bytes_max must be between 1 and {}",
                u16::MAX
            ));
        }
        for (name, value) in [
            (
                "groups.heartbeat_interval_ms",
                u64::from(self.heartbeat_interval_ms),
            ),
            ("groups.revocation_timeout_ms", self.revocation_timeout_ms),
            ("groups.expiry_tick_ms", self.expiry_tick_ms),
            (
                "groups.rebalance_timeout_ms_max",
                u64::from(self.rebalance_timeout_ms_max),
            ),
            (
                "groups.classic_member_bytes_max",
                self.classic_member_bytes_max as u64,
            ),
            ("groups.groups_max", self.groups_max as u64),
            ("groups.offset_waiters_max", self.offset_waiters_max as u64),
            ("groups.members_per_group_max", self.members_per_group_max as u64),
            ("groups.member_id_bytes_max", self.member_id_bytes_max as u64),
            ("groups.instance_id_bytes_max", self.instance_id_bytes_max as u64),
            (
                "groups.subscribed_topics_per_member_max",
                self.subscribed_topics_per_member_max as u64,
            ),
            (
                "groups.committed_partitions_per_group_max",
                self.committed_partitions_per_group_max as u64,
            ),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if self.offset_wait_ms_max > 3_600_000 {
            return fail("groups.offset_wait_ms_max is at most an hour".into());
        }
        // Generated member ids are 22 characters.
        if self.member_id_bytes_max < 22 {
            return fail("groups.member_id_bytes_max must be at least 22".into());
        }
        Ok(())
    }
}

/// Defaults for every topic's log; each can be overridden per topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogDefaults {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub partitions: u32,
    /// Zeros kept ahead of an active segment's data under `flush = always` (broker-wide).
    pub preallocate_bytes: u64,
    /// Preallocation is extended only after group commits of at most this many bytes.
    pub preallocate_sync_bytes_max: u64,
    /// `log.cleanup.policy`: "delete", "compact" or "compact,delete".
    #[serde(deserialize_with = "deserialize_cleanup_policy")]
    pub cleanup_policy: CleanupPolicy,
    /// `log.cleaner.min.cleanable.ratio` (0..=1).
    pub min_cleanable_dirty_ratio: f64,
    /// `log.cleaner.min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `log.cleaner.delete.retention.ms`: how long tombstones outlive their first clean.
    pub delete_retention_ms: i64,
}

impl LogDefaults {
    /// The compaction settings a topic without its own inherits.
    pub fn compaction(&self) -> CompactionConfig {
        CompactionConfig {
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            max_compaction_lag_ms: self.max_compaction_lag_ms,
            delete_retention_ms: self.delete_retention_ms,
        }
    }
}

impl Default for LogDefaults {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            index_interval_bytes: log.index_interval_bytes,
            partitions: 1,
            preallocate_bytes: log.preallocate_bytes,
            preallocate_sync_bytes_max: log.preallocate_sync_bytes_max,
            cleanup_policy: log.cleanup_policy,
            min_cleanable_dirty_ratio: log.compaction.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: log.compaction.min_compaction_lag_ms,
            max_compaction_lag_ms: log.compaction.max_compaction_lag_ms,
            delete_retention_ms: log.compaction.delete_retention_ms,
        }
    }
}

/// Every bound the broker enforces, named.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame accepted from a client; a larger length prefix closes the connection.
    pub frame_bytes_max: usize,
    /// Largest single record batch accepted by Produce.
    pub batch_bytes_max: usize,
    /// Largest records section a compressed batch may decompress to; decompression stops
    /// there and the batch is refused (CORRUPT_MESSAGE), so a decompression bomb costs at
    /// most this much memory. 64 MiB: four times `batch_bytes_max`, well past any real
    /// batch's ratio at the default batch size.
    pub batch_decompressed_bytes_max: usize,
    /// Largest Fetch response, whatever the client asks for.
    pub fetch_bytes_max: usize,
    /// Longest a Fetch may wait for data.
    pub fetch_wait_ms_max: u64,
    /// The broker's one memory budget (`net::budget`): bytes of partially received frames,
    /// decoded requests, append copies and queued responses, over all connections. Past it
    /// the broker stops reading from the connections holding the most. 512 MiB: safe on any
    /// machine with a few GiB, and room for eight largest frames at once; raise it on a big
    /// machine with many busy clients. At least twice `connection_memory_bytes_max`.
    pub memory_bytes_max: usize,
    /// The same budget for one connection. At least twice `frame_bytes_max` (a largest frame
    /// and its append copy).
    pub connection_memory_bytes_max: usize,
    /// Longest a fetch or produce waits for memory from the budget before it is answered with
    /// the retriable REQUEST_TIMED_OUT (never with an empty success).
    pub memory_wait_ms_max: u64,
    /// A connection whose socket accepts no byte of a pending response for this long is cut:
    /// a client that does not read its responses stalls only itself, and not for ever.
    pub write_stall_timeout_ms: u64,
    /// A connection with no request under way and no byte received for this long is closed.
    /// A fetch long-polling (up to `fetch_wait_ms_max`) is a request under way, not idleness.
    pub connection_idle_timeout_ms: u64,
    /// Once a frame's first byte has arrived, its 4-byte length prefix must complete within
    /// this time.
    pub request_header_timeout_ms: u64,
    /// Once a frame's first byte has arrived, the whole frame must complete within this time
    /// (so a client sending a byte a second is cut).
    pub frame_completion_timeout_ms: u64,
    /// Connections from one source IP address at once; more are answered with an error and
    /// closed.
    pub connections_per_address_max: usize,
    /// Smallest `segment_bytes` a client may set on a topic (CreateTopics), so no client can
    /// make the broker roll a segment (three files) every few requests. Broker defaults (the
    /// `[log]` section) are the operator's and are not held to it.
    pub segment_bytes_min: u64,
    /// Smallest `segment_ms` a client may set on a topic, for the same reason.
    pub segment_ms_min: i64,
    /// At shutdown, how long connections get to finish their in-flight requests before they
    /// are cut (a client that never reads its socket would otherwise hold shutdown forever).
    pub shutdown_drain_ms_max: u64,
    /// Longest a Produce may wait for its data to be synced.
    pub produce_timeout_ms_max: u64,
    pub connections_max: usize,
    /// Requests processed at once on one connection; further frames wait in the socket.
    pub in_flight_requests_per_connection_max: usize,
    /// Responses queued for one connection's writer.
    pub response_queue_depth: usize,
    pub partitions_per_topic_max: u32,
    pub topics_max: usize,
    /// At most 255 (NAME_MAX): a topic's directory is named after it.
    pub topic_name_bytes_max: usize,
    /// Partitions across all topics. A create that would pass it (or the descriptor budget,
    /// see `resources`) is refused.
    pub partitions_max: usize,
    /// Segment files (data and index files) the broker holds across all partitions; a roll
    /// that would create more fails and the append gets a retriable error.
    pub segment_files_max: usize,
    /// File descriptors kept for everything but connections and segment files: the metadata
    /// store, the listener, the runtime, directory syncs, checkpoints and snapshots being
    /// written, reads in flight through a just-evicted descriptor.
    pub descriptors_reserved: usize,
    /// Segment files open at once through the broker-wide file cache, besides the active
    /// segments' data files. Unset: whatever the descriptor budget leaves.
    pub open_segment_files_max: Option<usize>,
    /// The file cache never shrinks below this many open files; partitions that would need
    /// the room are refused instead.
    pub open_segment_files_min: usize,
    /// Threads that open partitions at start, close them at stop and open a new topic's
    /// partitions; the work is mostly fsync waits, so more threads than cores pay off.
    pub partition_io_threads_max: usize,
    /// Idempotent producers remembered per partition; past it the least recently used one's
    /// state is forgotten (its next batch then gets UNKNOWN_PRODUCER_ID unless it starts at
    /// sequence 0).
    pub producers_per_partition_max: usize,
    /// A producer that has not appended to a partition for this long, in broker time (never
    /// the records' own timestamps), has its state there forgotten.
    pub producer_state_expiry_ms: i64,
    /// Most records one ReadStream answers (issue 8 §4); a larger `limit` is clamped.
    pub stream_read_records_max: usize,
    /// About the most record bytes one ReadStream answers (always at least one record), charged
    /// to the memory budget like a fetch. A page never exceeds `fetch_bytes_max` either, which
    /// is what keeps it inside a frame, so lowering the frame and fetch sizes needs no change
    /// here.
    pub stream_read_bytes_max: usize,
    /// Longest a forward ReadStream at the end of its stream waits for a record of the key.
    pub stream_wait_ms_max: u64,
    /// Bytes one partition's active-segment key table (issue 8's per-key index) may hold; an
    /// append that would pass it rolls the segment first. 16 MiB: about 200,000 distinct
    /// keys per segment, and 10 M distinct keys in a partition under 64 MiB resident in all.
    pub key_index_active_bytes_max: usize,
    /// Streams one partition may hold truncation or erasure marks for (issue 9 §3); a
    /// truncate or erase of another key past it is refused. Every change rewrites the
    /// partition's marks file whole, so this also bounds that file and its write.
    pub stream_marks_per_partition_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes_max: 64 << 20,
            batch_bytes_max: 16 << 20,
            batch_decompressed_bytes_max: 64 << 20,
            fetch_bytes_max: 50 << 20,
            fetch_wait_ms_max: 60_000,
            memory_bytes_max: 512 << 20,
            connection_memory_bytes_max: 128 << 20,
            memory_wait_ms_max: 5_000,
            write_stall_timeout_ms: 30_000,
            connection_idle_timeout_ms: 600_000,
            request_header_timeout_ms: 10_000,
            frame_completion_timeout_ms: 60_000,
            connections_per_address_max: 1_000,
            segment_bytes_min: 1 << 20,
            segment_ms_min: 60_000,
            shutdown_drain_ms_max: 30_000,
            produce_timeout_ms_max: 300_000,
            connections_max: 4_096,
            in_flight_requests_per_connection_max: 128,
            response_queue_depth: 128,
            partitions_per_topic_max: 10_000,
            topics_max: 100_000,
            topic_name_bytes_max: 249,
            partitions_max: 20_000,
            segment_files_max: 1_000_000,
            descriptors_reserved: 256,
            open_segment_files_max: None,
            open_segment_files_min: 1_024,
            partition_io_threads_max: 16,
            producers_per_partition_max: crate::storage::PRODUCERS_PER_PARTITION_MAX_DEFAULT,
            key_index_active_bytes_max: crate::storage::KEY_INDEX_ACTIVE_BYTES_MAX_DEFAULT,
            stream_marks_per_partition_max: crate::storage::STREAM_MARKS_PER_PARTITION_MAX_DEFAULT,
            producer_state_expiry_ms: crate::storage::PRODUCER_IDLE_MS_DEFAULT,
            stream_read_records_max: 10_000,
            stream_read_bytes_max: 4 << 20,
            stream_wait_ms_max: 60_000,
        }
    }
}

impl BrokerConfig {
    /// Parses a TOML configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, BrokerError> {
        toml::from_str(text).map_err(|error| BrokerError::Config(error.to_string()))
    }

    /// Checks cross-field rules once, at start.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let limits = &self.limits;
        let fail = |message: String| Err(BrokerError::Config(message));
        if limits.fetch_bytes_max.saturating_add(1 << 20) > limits.frame_bytes_max {
            return fail(format!(
                "limits.fetch_bytes_max ({}) plus 1 MiB of framing must fit in limits.frame_bytes_max ({})",
                limits.fetch_bytes_max, limits.frame_bytes_max
            ));
        }
        // A connection must be able to hold a largest frame and its append copy, and the
        // fairness rule of `net::budget` grants one connection at most half the budget.
        if limits.connection_memory_bytes_max < limits.frame_bytes_max.saturating_mul(2)
            || limits.memory_bytes_max < limits.connection_memory_bytes_max.saturating_mul(2)
        {
            return fail(
                "2 * limits.frame_bytes_max <= limits.connection_memory_bytes_max and \
                 2 * limits.connection_memory_bytes_max <= limits.memory_bytes_max must hold"
                    .into(),
            );
        }
        for (name, value) in [
            ("limits.memory_wait_ms_max", limits.memory_wait_ms_max),
            ("limits.write_stall_timeout_ms", limits.write_stall_timeout_ms),
            (
                "limits.connection_idle_timeout_ms",
                limits.connection_idle_timeout_ms,
            ),
            (
                "limits.request_header_timeout_ms",
                limits.request_header_timeout_ms,
            ),
            (
                "limits.frame_completion_timeout_ms",
                limits.frame_completion_timeout_ms,
            ),
            (
                "limits.connections_per_address_max",
                limits.connections_per_address_max as u64,
            ),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if limits.segment_ms_min <= 0 {
            return fail("limits.segment_ms_min must be at least 1".into());
        }
        if limits.fetch_wait_ms_max > 3_600_000 || limits.produce_timeout_ms_max > 3_600_000 {
            return fail(
                "limits.fetch_wait_ms_max and limits.produce_timeout_ms_max are at most an hour".into(),
            );
        }
        if limits.stream_read_bytes_max == 0 || limits.stream_read_records_max == 0 {
            return fail(
                "limits.stream_read_records_max and limits.stream_read_bytes_max must be at least 1".into(),
            );
        }
        if limits.stream_wait_ms_max > 3_600_000 {
            return fail("limits.stream_wait_ms_max is at most an hour".into());
        }
        if limits.batch_bytes_max > limits.frame_bytes_max {
            return fail("limits.batch_bytes_max must not exceed limits.frame_bytes_max".into());
        }
        if limits.batch_decompressed_bytes_max < limits.batch_bytes_max {
            // Below it, a batch could be refused compressed that is accepted uncompressed.
            return fail(
                "limits.batch_decompressed_bytes_max must be at least limits.batch_bytes_max".into(),
            );
        }
        if (limits.batch_bytes_max as u64) > self.log.segment_bytes {
            return fail("limits.batch_bytes_max must not exceed log.segment_bytes".into());
        }
        if let Err(message) = self.log.compaction().validate() {
            return fail(format!("[log]: {message}"));
        }
        self.cleaner.validate()?;
        for (name, value) in [
            ("limits.connections_max", limits.connections_max),
            (
                "limits.in_flight_requests_per_connection_max",
                limits.in_flight_requests_per_connection_max,
            ),
            ("limits.response_queue_depth", limits.response_queue_depth),
            ("limits.topics_max", limits.topics_max),
            ("limits.partitions_max", limits.partitions_max),
            ("limits.segment_files_max", limits.segment_files_max),
            ("limits.open_segment_files_min", limits.open_segment_files_min),
            ("limits.partition_io_threads_max", limits.partition_io_threads_max),
            (
                "limits.producers_per_partition_max",
                limits.producers_per_partition_max,
            ),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if limits
            .open_segment_files_max
            .is_some_and(|max| max < limits.open_segment_files_min)
        {
            return fail(
                "limits.open_segment_files_max must be at least limits.open_segment_files_min".into(),
            );
        }
        // Topic directories are named after the topic, and a file name has at most 255 bytes.
        if limits.topic_name_bytes_max == 0 || limits.topic_name_bytes_max > 255 {
            return fail("limits.topic_name_bytes_max must be between 1 and 255".into());
        }
        if limits.partition_io_threads_max > 1_024 {
            return fail("limits.partition_io_threads_max is at most 1024".into());
        }
        if limits.key_index_active_bytes_max < 256 << 10 {
            return fail("limits.key_index_active_bytes_max must be at least 262144".into());
        }
        if limits.producer_state_expiry_ms < 1 {
            return fail("limits.producer_state_expiry_ms must be at least 1".into());
        }
        if self.log.partitions == 0 || self.log.partitions > limits.partitions_per_topic_max {
            return fail("log.partitions must be between 1 and limits.partitions_per_topic_max".into());
        }
        if self.log.index_interval_bytes == 0 {
            return fail("log.index_interval_bytes must be at least 1".into());
        }
        if self.maintenance_interval_ms == 0 {
            return fail("maintenance_interval_ms must be at least 1".into());
        }
        self.groups.validate()?;
        self.kafka.validate(limits)?;
        Ok(())
    }

    pub fn maintenance_interval(&self) -> Duration {
        Duration::from_millis(self.maintenance_interval_ms)
    }
}

fn deserialize_cleanup_policy<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CleanupPolicy, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn deserialize_flush<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FlushPolicy, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_ones() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.flush, FlushPolicy::Always);
    }

    #[test]
    fn toml_file_overrides_only_what_it_names() {
        let config = BrokerConfig::from_toml(
            r#"
            listen = "127.0.0.1:9000"
            flush = "interval:250"
            [log]
            segment_bytes = 1048576
            [limits]
            connections_max = 10
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.flush, FlushPolicy::Interval(Duration::from_millis(250)));
        assert_eq!(config.log.segment_bytes, 1 << 20);
        assert_eq!(config.limits.connections_max, 10);
        assert_eq!(config.limits.frame_bytes_max, Limits::default().frame_bytes_max);
    }

    #[test]
    fn unknown_keys_and_bad_flush_policies_are_refused() {
        assert!(BrokerConfig::from_toml("lisen = \"x\"").is_err());
        assert!(BrokerConfig::from_toml("flush = \"sometimes\"").is_err());
    }

    #[test]
    fn log_section_takes_the_compaction_defaults_and_validates_them() {
        let config = BrokerConfig::from_toml(
            "[log]\ncleanup_policy = \"compact, delete\"\nmin_cleanable_dirty_ratio = 0.1\n\
             min_compaction_lag_ms = 5\nmax_compaction_lag_ms = 60000\ndelete_retention_ms = 0\n",
        )
        .unwrap();
        assert_eq!(config.log.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(
            config.log.compaction(),
            CompactionConfig {
                min_cleanable_dirty_ratio: 0.1,
                min_compaction_lag_ms: 5,
                max_compaction_lag_ms: 60_000,
                delete_retention_ms: 0,
            }
        );
        config.validate().unwrap();
        assert!(BrokerConfig::from_toml("[log]\ncleanup_policy = \"shred\"\n").is_err());
        for bad in [
            "min_cleanable_dirty_ratio = 1.5",
            "min_compaction_lag_ms = -1",
            "max_compaction_lag_ms = 0",
            "delete_retention_ms = -5",
            "min_compaction_lag_ms = 100\nmax_compaction_lag_ms = 99",
        ] {
            let config = BrokerConfig::from_toml(&format!("[log]\n{bad}\n")).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn cleaner_section_bounds_are_checked() {
        BrokerConfig::default().validate().unwrap();
        for bad in [
            "threads = 65",
            "io_bytes_per_sec_max = 0",
            "backoff_ms = 0",
            "erase_deadline_ms = 0",
            "dedupe_buffer_bytes = 1024",
        ] {
            let config = BrokerConfig::from_toml(&format!("[cleaner]\n{bad}\n")).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
        let off = BrokerConfig::from_toml("[cleaner]\nthreads = 0\n").unwrap();
        off.validate().unwrap();
    }

    #[test]
    fn groups_section_overrides_named_fields_and_is_validated() {
        let config = BrokerConfig::from_toml("[groups]\nsession_timeout_ms = 5000\n").unwrap();
        assert_eq!(config.groups.session_timeout_ms, 5_000);
        assert_eq!(config.groups.groups_max, GroupsConfig::default().groups_max);
        config.validate().unwrap();
        let config = BrokerConfig::from_toml("[groups]\nsession_timeout_ms = 500\n").unwrap();
        assert!(config.validate().is_err());
        assert!(BrokerConfig::from_toml("[groups]\nsesion_timeout_ms = 5000\n").is_err());
    }

    #[test]
    fn the_readme_configuration_example_parses_and_states_the_default_limits() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\ndata_dir")
            .expect("the README's configuration example")
            + 8;
        let end = start + readme[start..].find("```").expect("the example's end");
        let documented = BrokerConfig::from_toml(&readme[start..end]).unwrap();
        assert_eq!(
            format!("{:?}", documented.limits),
            format!("{:?}", Limits::default()),
            "README.md's [limits] must state the defaults"
        );
        assert_eq!(
            format!("{:?}", documented.groups),
            format!("{:?}", GroupsConfig::default()),
            "README.md's [groups] must state the defaults"
        );
        assert_eq!(
            format!("{:?}", documented.kafka),
            format!("{:?}", KafkaListenerConfig::default()),
            "README.md's [kafka] must state the defaults"
        );
        assert_eq!(
            format!("{:?}", documented.log),
            format!("{:?}", LogDefaults::default()),
            "README.md's [log] must state the defaults"
        );
        assert_eq!(
            format!("{:?}", documented.cleaner),
            format!("{:?}", CleanerConfig::default()),
            "README.md's [cleaner] must state the defaults"
        );
    }

    #[test]
    fn memory_budget_smaller_than_what_one_connection_needs_is_refused() {
        let mut config = BrokerConfig::default();
        config.limits.connection_memory_bytes_max = config.limits.frame_bytes_max;
        assert!(config.validate().is_err());
        let mut config = BrokerConfig::default();
        config.limits.memory_bytes_max = config.limits.connection_memory_bytes_max;
        assert!(config.validate().is_err());
        let mut config = BrokerConfig::default();
        config.limits.write_stall_timeout_ms = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn kafka_listener_is_on_by_default_and_none_turns_it_off() {
        let config = BrokerConfig::default();
        assert_eq!(config.kafka.listen.unwrap().to_string(), DEFAULT_KAFKA_LISTEN);
        let config = BrokerConfig::from_toml("[kafka]\nlisten = \"none\"\n").unwrap();
        assert_eq!(config.kafka.listen, None);
        assert_eq!(KafkaListenerConfig::parse_listen("NONE"), Ok(None));
        assert!(KafkaListenerConfig::parse_listen("localhost").is_err());
        let mut config = BrokerConfig::default();
        config.kafka.advertised = Some("broker.example:19092".into());
        config.validate().unwrap();
        assert_eq!(
            config.kafka.advertised_host_port().unwrap(),
            Some(("broker.example".into(), 19092))
        );
        config.kafka.advertised = Some("broker.example".into());
        assert!(config.validate().is_err());
        let mut config = BrokerConfig::default();
        config.kafka.frame_bytes_max = config.limits.connection_memory_bytes_max;
        assert!(config.validate().is_err());
    }

    #[test]
    fn fetch_limit_larger_than_frames_is_refused() {
        let mut config = BrokerConfig::default();
        config.limits.fetch_bytes_max = config.limits.frame_bytes_max;
        assert!(config.validate().is_err());
    }
}
