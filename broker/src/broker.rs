//! Starting and stopping a whole broker: open the `Core` (metadata store, every topic, groups,
//! producer ids), bind every listener (`listeners`: each with its own limits and shutdown
//! signal, all on the one core, memory budget and connection cap), run them and the background
//! tasks, and on shutdown drain and checkpoint. Nothing imports this module but the crate root.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cleaner::{self, Cleaner, CleanerThreads};
use crate::config::BrokerConfig;
use crate::core::Core;
use crate::error::BrokerError;
use crate::groups::GroupService;
use crate::kafka;
use crate::maintenance;
use crate::metadata::{ProducerIdAllocator, ProducerIdFloor, SledMetadataStore};
use crate::native;
use crate::net::admission::Admission;
use crate::net::budget::MemoryBudget;
use crate::net::{ListenerContext, ListenerLimits};
use crate::resources::StorageResources;
use crate::topics::TopicRegistry;

/// Entry point for running a broker in-process.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Opens the data directory (recovering every partition), binds every listener and starts
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
        // Every listener is bound before any serves, so a taken port fails the start whole.
        let mut bound = Vec::new();
        for spec in listeners(&config) {
            let listener = TcpListener::bind(spec.bind)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: spec.bind,
                    source,
                })?;
            let local_addr = listener.local_addr().map_err(|source| BrokerError::Io {
                context: format!("reading the {} listener's address", spec.name),
                source,
            })?;
            bound.push((spec, listener, local_addr));
        }
        let local_addr = bound
            .iter()
            .find(|(spec, _, _)| spec.name == NATIVE)
            .map(|(_, _, local_addr)| *local_addr)
            .ok_or_else(|| BrokerError::Config("the native listener is not configured".into()))?;
        let (core_shutdown, shutdown) = watch::channel(false);
        let memory = MemoryBudget::new(
            config.limits.memory_bytes_max,
            config.limits.connection_memory_bytes_max,
        );
        // The broker's one connection cap, shared by every listener: each connection is a file
        // descriptor, and the descriptor budget reserves `limits.connections_max` of them.
        let admission = Arc::new(Admission::new(
            config.limits.connections_max,
            config.limits.connections_per_address_max,
        ));
        let cleaner = Arc::new(Cleaner::new(config.cleaner.clone()));
        let core = Arc::new(Core {
            config,
            registry,
            groups,
            producer_ids,
            shutdown,
            cleaner: Arc::clone(&cleaner),
        });
        // After the partitions are open; stopped first at shutdown, before they close.
        let cleaner_threads = {
            let core = core.clone();
            cleaner::start(cleaner, Arc::new(move || core.registry.list()))
        };
        let mut running = Vec::with_capacity(bound.len());
        for (spec, listener, local_addr) in bound {
            let (shutdown_sender, shutdown) = watch::channel(false);
            let context = Arc::new(ListenerContext {
                core: core.clone(),
                name: spec.name,
                advertised: local_addr,
                limits: spec.limits,
                shutdown,
                memory: memory.clone(),
                admission: admission.clone(),
            });
            running.push(RunningListener {
                name: spec.name,
                local_addr,
                shutdown: shutdown_sender,
                task: tokio::spawn((spec.serve)(listener, context)),
            });
        }
        let handle = BrokerHandle {
            local_addr,
            core_shutdown,
            listeners: running,
            background: maintenance::spawn(core.clone()),
            cleaner_threads: Some(cleaner_threads),
            core,
        };
        let kafka_listen = handle
            .listener_addr(KAFKA)
            .map_or_else(|| "none".to_owned(), |addr| addr.to_string());
        // Tests and operators read the listeners' addresses from this line.
        tracing::info!(
            listen = %local_addr,
            kafka_listen = %kafka_listen,
            data_dir = %handle.core.config.data_dir.display(),
            flush = %handle.core.config.flush,
            topics = handle.core.registry.list().len(),
            "tidelog broker started"
        );
        Ok(handle)
    }
}

/// The native listener's name (`BrokerHandle::listener_addr`).
const NATIVE: &str = "native";
/// The Kafka listener's name.
const KAFKA: &str = "kafka";

/// How a listener serves its bound socket: an accept loop that returns once its context's
/// shutdown signal fired and its connections drained.
type Serve = fn(TcpListener, Arc<ListenerContext>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One listener to bind: its name, address, limits and accept loop.
struct ListenerSpec {
    name: &'static str,
    bind: SocketAddr,
    limits: ListenerLimits,
    serve: Serve,
}

/// Every listener the configuration asks for. Each runs on the same core and draws on the same
/// memory budget and connection cap, with its own limits and shutdown signal; another protocol
/// is one more entry here.
fn listeners(config: &BrokerConfig) -> Vec<ListenerSpec> {
    let mut listeners = vec![ListenerSpec {
        name: NATIVE,
        bind: config.listen,
        limits: ListenerLimits::from_limits(&config.limits),
        serve: |listener, context| Box::pin(native::run(listener, context)),
    }];
    if let Some(bind) = config.kafka.listen {
        listeners.push(ListenerSpec {
            name: KAFKA,
            bind,
            limits: ListenerLimits::kafka(&config.kafka, &config.limits),
            serve: |listener, context| {
                Box::pin(kafka::run(listener, Arc::new(kafka::KafkaContext::new(context))))
            },
        });
    }
    listeners
}

/// A listener being served.
#[derive(Debug)]
struct RunningListener {
    name: &'static str,
    local_addr: SocketAddr,
    /// Tells this listener alone to stop accepting and drain.
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
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
    /// The native listener's address.
    local_addr: SocketAddr,
    /// Ends long polls and the background tasks.
    core_shutdown: watch::Sender<bool>,
    listeners: Vec<RunningListener>,
    background: Vec<JoinHandle<()>>,
    /// The log cleaner's threads (`None` once stopped).
    cleaner_threads: Option<CleanerThreads>,
    core: Arc<Core>,
}

impl BrokerHandle {
    /// The address the native listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Kafka listener's address (useful with port 0); `None` when it is off.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.listener_addr(KAFKA)
    }

    /// The address a listener is bound to, by name ("native", "kafka"); `None` if it does not
    /// run.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|listener| listener.name == name)
            .map(|listener| listener.local_addr)
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish, sync every partition
    /// and write its clean-shutdown checkpoint.
    ///
    /// # Errors
    /// A partition that could not be synced or checkpointed; the next start recovers it.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        // The cleaner first: a clean under way is abandoned (its work aside removed) before
        // any partition closes. Bounded like the connections' drain.
        if let Some(threads) = self.cleaner_threads.take() {
            let bound = std::time::Duration::from_millis(self.core.config.limits.shutdown_drain_ms_max);
            let stopped = tokio::task::spawn_blocking(move || threads.stop(bound)).await;
            if let Err(error) = stopped {
                tracing::error!(%error, "stopping the cleaner threads failed");
            }
        }
        // All at once: every listener stops accepting while long polls end, so connections
        // drain.
        let _ = self.core_shutdown.send(true);
        for listener in &self.listeners {
            let _ = listener.shutdown.send(true);
        }
        for listener in self.listeners {
            if let Err(error) = listener.task.await {
                tracing::error!(listener = listener.name, %error, "listener task ended abnormally");
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
