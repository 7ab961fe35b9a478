//! Starting and stopping a whole broker: open the metadata store and every topic, bind the
//! listener, run the server and the background tasks, and on shutdown drain and checkpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::BrokerConfig;
use crate::core::Core;
use crate::error::BrokerError;
use crate::groups::GroupService;
use crate::kafka;
use crate::maintenance;
use crate::metadata::{ProducerIdAllocator, ProducerIdFloor, SledMetadataStore};
use crate::native;
use crate::net::ListenerContext;
use crate::resources::StorageResources;
use crate::topics::TopicRegistry;

/// Entry point for running a broker in-process.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Opens the data directory (recovering every partition), binds the listener and starts
    /// serving. Returns once the broker accepts connections.
    ///
    /// # Errors
    /// Invalid configuration, an unusable data directory (including one another broker holds
    /// open), or an address that cannot be bound.
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
            context: format!("creating data directory {}", config.data_dir.display()),
            source,
        })?;
        let (registry, groups, producer_ids) = {
            let config = config.clone();
            type Opened = (TopicRegistry, GroupService, ProducerIdAllocator);
            tokio::task::spawn_blocking(move || -> Result<Opened, BrokerError> {
                // First, so every descriptor opened after it counts against the raised limit.
                let resources = StorageResources::start(&config.limits)?;
                let store = SledMetadataStore::open(&config.data_dir.join("metadata"))?;
                let groups =
                    GroupService::open(config.groups.clone(), Arc::new(store.clone()), Instant::now())?;
                let registry = TopicRegistry::open(&config, Box::new(store.clone()), resources)?;
                // After the partitions are open: the counter must continue above every
                // producer id they hold.
                let producer_ids = ProducerIdAllocator::open(
                    Arc::new(store),
                    ProducerIdAllocator::BLOCK_SIZE_DEFAULT,
                    producer_id_floor(&config, &registry)?,
                )?;
                Ok((registry, groups, producer_ids))
            })
            .await
            .map_err(|error| BrokerError::Task(error.to_string()))??
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| BrokerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
            context: "reading the listener's address".into(),
            source,
        })?;
        let kafka_listener = match config.kafka.listen {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BrokerError::Bind { addr, source })?,
            ),
        };
        let kafka_addr = match &kafka_listener {
            None => None,
            Some(listener) => Some(listener.local_addr().map_err(|source| BrokerError::Io {
                context: "reading the Kafka listener's address".into(),
                source,
            })?),
        };
        let (shutdown_sender, shutdown) = watch::channel(false);
        let memory = crate::net::budget::MemoryBudget::new(
            config.limits.memory_bytes_max,
            config.limits.connection_memory_bytes_max,
        );
        // The broker's one connection cap, shared by every listener: each connection is a file
        // descriptor, and the descriptor budget reserves `limits.connections_max` of them.
        let admission = Arc::new(crate::net::admission::Admission::new(
            config.limits.connections_max,
            config.limits.connections_per_address_max,
        ));
        let core = Arc::new(Core {
            config,
            registry,
            groups,
            producer_ids,
            shutdown: shutdown.clone(),
        });
        let context = Arc::new(ListenerContext {
            core: core.clone(),
            advertised: local_addr,
            shutdown: shutdown.clone(),
            memory: memory.clone(),
            admission: admission.clone(),
        });
        let kafka_listen = kafka_addr.map_or_else(|| "none".to_owned(), |addr| addr.to_string());
        tracing::info!(
            listen = %local_addr,
            kafka_listen = %kafka_listen,
            data_dir = %core.config.data_dir.display(),
            flush = %core.config.flush,
            topics = core.registry.list().len(),
            "tidelog broker started"
        );
        let background = maintenance::spawn(core.clone());
        let server = tokio::spawn(native::run(listener, context));
        let kafka = match (kafka_listener, kafka_addr) {
            (Some(listener), Some(addr)) => {
                let net = Arc::new(ListenerContext {
                    core: core.clone(),
                    advertised: addr,
                    shutdown,
                    memory,
                    admission,
                });
                let kafka_context = Arc::new(kafka::KafkaContext::new(net));
                Some(tokio::spawn(kafka::run(listener, kafka_context)))
            }
            _ => None,
        };
        Ok(BrokerHandle {
            local_addr,
            kafka_addr,
            kafka,
            shutdown_sender,
            server,
            background,
            core,
        })
    }
}

/// What the open partitions say about producer ids already handed out.
fn producer_id_floor(
    config: &BrokerConfig,
    registry: &TopicRegistry,
) -> Result<ProducerIdFloor, BrokerError> {
    let mut seen_max = -1;
    let mut offline = 0;
    let topics = registry.list();
    for topic in &topics {
        for slot in &topic.partitions {
            match slot.log() {
                Some(log) => seen_max = seen_max.max(log.producer_id_max()?),
                None => offline += 1,
            }
        }
    }
    // Topic directories count even without a metadata record (a lost record is not a fresh
    // directory).
    let topics_on_disk = std::fs::read_dir(config.data_dir.join("topics"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    Ok(ProducerIdFloor {
        seen_max,
        data_present: !topics.is_empty() || topics_on_disk,
        partitions_offline: offline,
    })
}

/// A running broker. Dropping it without [`shutdown`](Self::shutdown) leaves the tasks running
/// until the runtime stops, like a crash would: recovery handles it on the next start.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    /// The Kafka listener's address, when it is on.
    kafka_addr: Option<SocketAddr>,
    kafka: Option<JoinHandle<()>>,
    shutdown_sender: watch::Sender<bool>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    core: Arc<Core>,
}

impl BrokerHandle {
    /// The address the broker listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Kafka listener's address (useful with port 0); `None` when it is off.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish, sync every partition
    /// and write its clean-shutdown checkpoint.
    ///
    /// # Errors
    /// A partition that could not be synced or checkpointed; the next start recovers it.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let _ = self.shutdown_sender.send(true);
        if let Err(error) = self.server.await {
            tracing::error!(%error, "server task ended abnormally");
        }
        if let Some(kafka) = self.kafka {
            if let Err(error) = kafka.await {
                tracing::error!(%error, "Kafka listener task ended abnormally");
            }
        }
        for task in self.background {
            let _ = task.await;
        }
        let core = self.core;
        // Partitions close in parallel on a bounded pool (`topics::parallel`), off the async
        // workers; each failure is logged there at ERROR.
        let failures = tokio::task::spawn_blocking(move || core.registry.close_all())
            .await
            .map_err(|error| BrokerError::Task(error.to_string()))?;
        let count = failures.len();
        match failures.into_iter().next() {
            None => {
                tracing::info!("tidelog broker stopped cleanly");
                Ok(())
            }
            Some((_, error)) => {
                tracing::error!(partitions = count, "broker stopped, but not every partition closed cleanly; they will be recovered at next start");
                Err(error.into())
            }
        }
    }
}
