//! [`Client`]: connects to the cluster through bootstrap addresses, keeps a metadata cache
//! (brokers, topics, partition leaders) and one connection per broker, and reconnects with
//! exponential backoff and jitter. Requests about a partition go to that partition's leader,
//! so a multi-broker cluster fits without changing callers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tidelog_proto::pb;

use crate::admin::{CleanerStatus, PartitionDescription, TopicConfig, TopicDescription};
use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};
use crate::types::{BrokerId, Offset, PartitionId};
use crate::wire;

/// The broker address used when none is given.
pub const DEFAULT_BROKER: &str = "127.0.0.1:7171";

/// Connection and retry settings of a [`Client`]. Build with [`ClientConfig::new`] and the
/// chained setters; every limit has a named default below.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    bootstrap: Vec<String>,
    client_id: String,
    max_frame_bytes: usize,
    max_in_flight_requests_per_connection: usize,
    request_timeout: Duration,
    connect_timeout: Duration,
    connect_attempts_max: u32,
    reconnect_backoff_initial: Duration,
    reconnect_backoff_max: Duration,
}

impl ClientConfig {
    pub const MAX_FRAME_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
    pub const MAX_IN_FLIGHT_REQUESTS_DEFAULT: usize = 16;
    pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
    pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
    pub const CONNECT_ATTEMPTS_MAX_DEFAULT: u32 = 5;
    pub const RECONNECT_BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(50);
    pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(2);

    /// A config bootstrapping from `addresses` (`host:port`), tried in order.
    pub fn new<I, S>(addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            bootstrap: addresses.into_iter().map(Into::into).collect(),
            client_id: "tidelog-client".into(),
            max_frame_bytes: Self::MAX_FRAME_BYTES_DEFAULT,
            max_in_flight_requests_per_connection: Self::MAX_IN_FLIGHT_REQUESTS_DEFAULT,
            request_timeout: Self::REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: Self::CONNECT_TIMEOUT_DEFAULT,
            connect_attempts_max: Self::CONNECT_ATTEMPTS_MAX_DEFAULT,
            reconnect_backoff_initial: Self::RECONNECT_BACKOFF_INITIAL_DEFAULT,
            reconnect_backoff_max: Self::RECONNECT_BACKOFF_MAX_DEFAULT,
        }
    }

    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Largest frame accepted from the broker (and sent to it).
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Requests pipelined on one connection before senders wait.
    pub fn max_in_flight_requests_per_connection(mut self, requests: usize) -> Self {
        self.max_in_flight_requests_per_connection = requests;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connection attempts per address before giving up.
    pub fn connect_attempts_max(mut self, attempts: u32) -> Self {
        self.connect_attempts_max = attempts;
        self
    }

    /// The backoff before the second attempt; it doubles up to `max`, with jitter.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_backoff_initial = initial;
        self.reconnect_backoff_max = max;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::Config("at least one bootstrap address is needed".into()));
        }
        if self.max_frame_bytes < 1024 {
            return Err(Error::Config("max_frame_bytes must be at least 1024".into()));
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return Err(Error::Config(
                "max_in_flight_requests_per_connection must be at least 1".into(),
            ));
        }
        if self.connect_attempts_max == 0 {
            return Err(Error::Config("connect_attempts_max must be at least 1".into()));
        }
        Ok(())
    }

    pub(crate) fn max_frame_bytes_value(&self) -> usize {
        self.max_frame_bytes
    }

    pub(crate) fn request_timeout_value(&self) -> Duration {
        self.request_timeout
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::new([DEFAULT_BROKER])
    }
}

/// Brokers and topics as last seen.
#[derive(Debug, Default)]
struct MetadataCache {
    brokers: HashMap<BrokerId, String>,
    topics: HashMap<String, Arc<TopicDescription>>,
}

/// A handle to the cluster; cheap to clone, shared by admin, producers and consumers.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    config: ClientConfig,
    connection_config: ConnectionConfig,
    /// Open connections by address. An async lock: connecting happens while it is held, so
    /// two tasks never open two connections to the same broker.
    connections: tokio::sync::Mutex<HashMap<String, Connection>>,
    metadata: Mutex<MetadataCache>,
}

impl Client {
    /// Connects to the first reachable bootstrap address and loads the cluster metadata.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config; the last connection error when no bootstrap
    /// address can be reached.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let connection_config = ConnectionConfig {
            client_id: Arc::from(config.client_id.as_str()),
            max_frame_bytes: config.max_frame_bytes,
            max_in_flight_requests: config.max_in_flight_requests_per_connection,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
        };
        let client = Client {
            inner: Arc::new(ClientInner {
                config,
                connection_config,
                connections: tokio::sync::Mutex::new(HashMap::new()),
                metadata: Mutex::new(MetadataCache::default()),
            }),
        };
        client.refresh_metadata(&[]).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// An [`Admin`](crate::admin::Admin) sharing this client's connections.
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin::new(self.clone())
    }

    fn lock_metadata(&self) -> MutexGuard<'_, MetadataCache> {
        // Every update replaces whole entries, so a panic mid-update cannot leave a torn one.
        self.inner
            .metadata
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A live connection to `addr`, reusing an open one or connecting with backoff.
    async fn connection_to(&self, addr: &str) -> Result<Connection> {
        let mut connections = self.inner.connections.lock().await;
        if let Some(connection) = connections.get(addr) {
            if !connection.is_closed() {
                return Ok(connection.clone());
            }
        }
        let connection = self.connect_with_backoff(addr).await?;
        connections.insert(addr.to_owned(), connection.clone());
        Ok(connection)
    }

    async fn connect_with_backoff(&self, addr: &str) -> Result<Connection> {
        let config = &self.inner.config;
        let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| Error::Resolve {
                addr: addr.to_owned(),
                source,
            })?
            .collect();
        let mut backoff = config.reconnect_backoff_initial;
        let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
        for attempt in 1..=config.connect_attempts_max {
            for target in &targets {
                match Connection::connect(*target, addr.to_owned(), self.inner.connection_config.clone())
                    .await
                {
                    Ok(connection) => return Ok(connection),
                    Err(error) => last_error = error,
                }
            }
            if attempt < config.connect_attempts_max {
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(config.reconnect_backoff_max);
            }
        }
        Err(Error::Connect {
            addr: addr.to_owned(),
            attempts: config.connect_attempts_max,
            source: last_error,
        })
    }

    /// A connection to any broker: a known broker first, else the bootstrap addresses.
    pub(crate) async fn any_connection(&self) -> Result<Connection> {
        {
            let connections = self.inner.connections.lock().await;
            if let Some(connection) = connections.values().find(|c| !c.is_closed()) {
                return Ok(connection.clone());
            }
        }
        let known: Vec<String> = self.lock_metadata().brokers.values().cloned().collect();
        let mut last_error = None;
        for addr in known.iter().chain(&self.inner.config.bootstrap) {
            match self.connection_to(addr).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last_error = Some(error),
            }
        }
        // validate() guarantees at least one bootstrap address, so last_error is set.
        Err(last_error.unwrap_or_else(|| Error::Config("no broker address known".into())))
    }

    /// Sends a request to any broker.
    pub(crate) async fn request_any(&self, body: pb::request::Body) -> Result<pb::response::Body> {
        self.any_connection().await?.request(body).await
    }

    /// The connection to the leader of `topic`/`partition`, from cached metadata (loaded when
    /// missing).
    pub(crate) async fn leader_connection(&self, topic: &str, partition: PartitionId) -> Result<Connection> {
        let description = self.topic(topic).await?;
        let leader = description
            .partition(partition)
            .map(PartitionDescription::leader)
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: Some(partition),
            })?;
        let addr = self.lock_metadata().brokers.get(&leader).cloned();
        match addr {
            Some(addr) => self.connection_to(&addr).await,
            // A leader the broker list does not name: metadata is stale; refresh for next time.
            None => {
                self.invalidate_topic(topic);
                Err(Error::Protocol {
                    addr: String::new(),
                    reason: format!("leader {leader} of {topic}/{partition} is not in the broker list"),
                })
            }
        }
    }

    /// The topic's metadata, from the cache or fetched.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] when the topic does not exist.
    pub async fn topic(&self, name: &str) -> Result<Arc<TopicDescription>> {
        if let Some(cached) = self.lock_metadata().topics.get(name) {
            return Ok(cached.clone());
        }
        let mut topics = self.refresh_metadata(&[name]).await?;
        topics.pop().ok_or_else(|| Error::UnknownTopicOrPartition {
            topic: name.to_owned(),
            partition: None,
        })
    }

    /// Drops the cached metadata of `topic`, so the next use fetches it again (after a
    /// leader change, a deleted topic, a failed connection).
    pub fn invalidate_topic(&self, topic: &str) {
        self.lock_metadata().topics.remove(topic);
    }

    /// Fetches metadata for `topics` (all topics when empty), updates the cache and returns
    /// the topics that exist.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] when a named topic does not exist.
    pub(crate) async fn refresh_metadata(&self, topics: &[&str]) -> Result<Vec<Arc<TopicDescription>>> {
        let connection = self.any_connection().await?;
        let body = connection
            .request(pb::request::Body::Metadata(pb::MetadataRequest {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            }))
            .await?;
        let pb::response::Body::Metadata(response) = body else {
            return Err(Error::Protocol {
                addr: connection.addr().to_owned(),
                reason: "metadata request answered with another body".into(),
            });
        };
        let bootstrap_host = host_of(connection.addr());
        let mut described = Vec::new();
        let mut first_error = None;
        let mut cache = self.lock_metadata();
        if !response.brokers.is_empty() {
            cache.brokers = response
                .brokers
                .iter()
                .map(|b| (BrokerId::new(b.id), broker_addr(&b.host, b.port, bootstrap_host)))
                .collect();
        }
        // A single broker that advertises an address we did not use (or cannot): reuse the
        // connection that just answered, which certainly reaches it.
        if response.brokers.len() == 1 {
            let only = &response.brokers[0];
            let advertised = broker_addr(&only.host, only.port, bootstrap_host);
            if advertised != connection.addr()
                && self.inner.config.bootstrap.iter().any(|b| b == connection.addr())
            {
                cache
                    .brokers
                    .insert(BrokerId::new(only.id), connection.addr().to_owned());
            }
        }
        for topic in response.topics {
            match wire::error_code(topic.error) {
                None => {
                    let description = Arc::new(topic_description(topic));
                    cache
                        .topics
                        .insert(description.name().to_owned(), description.clone());
                    described.push(description);
                }
                Some(code) => {
                    cache.topics.remove(&topic.name);
                    if first_error.is_none() {
                        first_error = Some(if code == crate::types::ErrorCode::UnknownTopicOrPartition {
                            Error::UnknownTopicOrPartition {
                                topic: topic.name,
                                partition: None,
                            }
                        } else {
                            Error::Broker {
                                code,
                                message: topic.message,
                            }
                        });
                    }
                }
            }
        }
        drop(cache);
        if !topics.is_empty() {
            if let Some(error) = first_error {
                return Err(error);
            }
            if described.is_empty() {
                return Err(Error::UnknownTopicOrPartition {
                    topic: topics[0].to_owned(),
                    partition: None,
                });
            }
        }
        Ok(described)
    }
}

/// `host:port` for a broker, substituting the host we bootstrapped through when the broker
/// advertises none or a wildcard address.
fn broker_addr(host: &str, port: u32, bootstrap_host: &str) -> String {
    let unspecified = host.is_empty()
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false);
    let host = if unspecified { bootstrap_host } else { host };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// `base` scaled by a random factor in [0.5, 1.0): spreads reconnect storms without ever
/// waiting less than half the backoff.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

fn topic_description(topic: pb::TopicMetadata) -> TopicDescription {
    let mut partitions: Vec<PartitionDescription> = topic
        .partitions
        .into_iter()
        .map(|p| PartitionDescription {
            partition: PartitionId::new(p.partition),
            leader: BrokerId::new(p.leader),
            log_start_offset: Offset::new(p.log_start_offset),
            high_watermark: Offset::new(p.high_watermark),
            error: wire::error_code(p.error),
            cleaner: p.cleaner.and_then(CleanerStatus::from_wire),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicDescription {
        name: topic.name,
        topic_id: topic.topic_id,
        partitions,
        config: topic.config.map(topic_config).unwrap_or_default(),
    }
}

pub(crate) fn topic_config(config: pb::TopicConfig) -> TopicConfig {
    TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        flush: config.flush,
        index_interval_bytes: config.index_interval_bytes,
        cleanup_policy: config.cleanup_policy,
        min_cleanable_dirty_ratio: config.min_cleanable_dirty_ratio,
        min_compaction_lag_ms: config.min_compaction_lag_ms,
        max_compaction_lag_ms: config.max_compaction_lag_ms,
        delete_retention_ms: config.delete_retention_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_advertised_host_is_replaced_by_the_bootstrap_host() {
        assert_eq!(broker_addr("0.0.0.0", 7171, "10.1.2.3"), "10.1.2.3:7171");
        assert_eq!(broker_addr("", 9, "localhost"), "localhost:9");
        assert_eq!(broker_addr("::", 9, "127.0.0.1"), "127.0.0.1:9");
        assert_eq!(broker_addr("broker-1", 9, "x"), "broker-1:9");
        assert_eq!(broker_addr("::1", 9, "x"), "[::1]:9");
        assert_eq!(host_of("127.0.0.1:7171"), "127.0.0.1");
    }

    #[test]
    fn jitter_stays_within_half_and_whole_backoff() {
        for _ in 0..1000 {
            let waited = jittered(Duration::from_millis(100));
            assert!(waited >= Duration::from_millis(50) && waited < Duration::from_millis(100));
        }
    }

    #[tokio::test]
    async fn unreachable_broker_fails_after_the_configured_attempts() {
        // Bind then drop a listener: its port is very likely closed now, on loopback only.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = ClientConfig::new([format!("127.0.0.1:{port}")])
            .connect_attempts_max(3)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2));
        let error = Client::connect(config).await.unwrap_err();
        assert!(matches!(error, Error::Connect { attempts: 3, .. }), "{error:?}");
        assert!(error.is_retriable());
    }

    #[tokio::test]
    async fn empty_bootstrap_list_is_a_config_error() {
        let error = Client::connect(ClientConfig::new(Vec::<String>::new()))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)));
    }
}
