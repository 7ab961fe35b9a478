//! An in-process Tidelog broker (feature `embedded`): one dependency gives a Rust service, or a
//! `cargo test`, a durable event store on a data directory. It is the daemon's own code
//! (`tidelog_broker::Broker::start`), so the storage guarantees are the daemon's: under the
//! default `flush = always` an acknowledged append is on disk.
//!
//! The broker runs on its own tokio runtime, on its own threads, so it keeps serving (and can
//! be stopped from `Drop`) whatever runtime, or none, the caller's code runs on. It listens on
//! 127.0.0.1 with a port the kernel picks; the Kafka listener is off unless asked for.
//!
//! ```no_run
//! use tidelog_client::embedded::EmbeddedBroker;
//! use tidelog_client::event_store::StreamId;
//! # async fn demo() -> Result<(), tidelog_client::event_store::EventStoreError> {
//! let (broker, store) = EmbeddedBroker::start("./data").await?;
//! println!("native protocol on {}", broker.native_addr());
//! let account = StreamId::new("accounts", "account-17");
//! # let _ = (&store, account);
//! broker.shutdown().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::event_store::{EventStore, EventStoreError};
use crate::{Client, ClientConfig};

/// The broker's configuration type, to change anything beyond the data directory.
pub use tidelog_broker::BrokerConfig;
/// Flush policies for [`BrokerConfig::flush`].
pub use tidelog_broker::FlushPolicy;

/// Settings of an embedded broker. [`EmbeddedConfig::new`] takes the data directory; the rest
/// has defaults fit for one process.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    broker: BrokerConfig,
    worker_threads: usize,
}

impl EmbeddedConfig {
    /// Threads of the broker's own runtime.
    pub const WORKER_THREADS_DEFAULT: usize = 2;

    /// A broker on `data_dir` (created if missing), listening on 127.0.0.1 port 0, Kafka
    /// listener off, every other setting the daemon's default.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut broker = BrokerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..BrokerConfig::default()
        };
        broker.kafka.listen = None;
        Self {
            broker,
            worker_threads: Self::WORKER_THREADS_DEFAULT,
        }
    }

    /// Replaces the broker's whole configuration (its data directory included).
    pub fn broker_config(mut self, config: BrokerConfig) -> Self {
        self.broker = config;
        self
    }

    /// Changes the broker's configuration in place.
    pub fn configure(mut self, change: impl FnOnce(&mut BrokerConfig)) -> Self {
        change(&mut self.broker);
        self
    }

    /// Also serves the Kafka protocol, on 127.0.0.1 with a port the kernel picks.
    pub fn kafka_listener(mut self) -> Self {
        self.broker.kafka.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        self
    }

    /// Threads of the broker's own runtime (at least 1).
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads;
        self
    }
}

/// Addresses the broker bound, sent back once it serves.
#[derive(Debug, Clone, Copy)]
struct Bound {
    native: SocketAddr,
    kafka: Option<SocketAddr>,
}

type StartResult = Result<Bound, tidelog_broker::BrokerError>;
type StopResult = Result<(), tidelog_broker::BrokerError>;

/// A running in-process broker. [`shutdown`](Self::shutdown) stops it cleanly (connections
/// drained, every partition synced and checkpointed); dropping it does the same, blocking the
/// dropping thread until the broker has stopped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bound: Bound,
    /// Dropping or sending stops the broker.
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<StopResult>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a broker on `data_dir` with the defaults of [`EmbeddedConfig::new`] and returns
    /// it with an [`EventStore`] connected to it.
    ///
    /// # Errors
    /// [`EventStoreError::Embedded`] when the broker cannot start (an unusable data directory,
    /// one another broker holds open); [`EventStoreError::Client`] when the client cannot
    /// connect.
    pub async fn start(
        data_dir: impl Into<PathBuf>,
    ) -> Result<(EmbeddedBroker, EventStore), EventStoreError> {
        Self::start_with(EmbeddedConfig::new(data_dir)).await
    }

    /// Starts a broker as `config` says and returns it with a connected [`EventStore`].
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with(config: EmbeddedConfig) -> Result<(EmbeddedBroker, EventStore), EventStoreError> {
        if config.worker_threads == 0 {
            return Err(EventStoreError::Config(
                "worker_threads must be at least 1".into(),
            ));
        }
        let (started_sender, started) = oneshot::channel::<StartResult>();
        let (stop, stop_signal) = oneshot::channel::<()>();
        let (stopped_sender, stopped) = oneshot::channel::<StopResult>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("tidelog-embedded")
            .enable_all()
            .build()
            .map_err(|error| embedded_error("cannot build the broker's runtime", error))?;
        let broker_config = config.broker.clone();
        let thread = std::thread::Builder::new()
            .name("tidelog-embedded-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let handle = match tidelog_broker::Broker::start(broker_config).await {
                        Ok(handle) => handle,
                        Err(error) => {
                            let _ = started_sender.send(Err(error));
                            return;
                        }
                    };
                    let bound = Bound {
                        native: handle.local_addr(),
                        kafka: handle.kafka_addr(),
                    };
                    if started_sender.send(Ok(bound)).is_err() {
                        // The starter went away: stop at once, cleanly.
                        let _ = stopped_sender.send(handle.shutdown().await);
                        return;
                    }
                    // A sent stop or a dropped sender both mean stop.
                    let _ = stop_signal.await;
                    let _ = stopped_sender.send(handle.shutdown().await);
                });
            })
            .map_err(|error| embedded_error("cannot spawn the broker's thread", error))?;
        let bound = match started.await {
            Ok(Ok(bound)) => bound,
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(embedded_error("the broker did not start", error));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EventStoreError::Embedded {
                    message: "the broker's thread ended before it started".into(),
                    source: None,
                });
            }
        };
        let broker = EmbeddedBroker {
            bound,
            stop: Some(stop),
            stopped: Some(stopped),
            thread: Some(thread),
        };
        // Other client settings: connect another `Client` to `native_addr()`. On failure
        // `broker` is dropped here, which stops it.
        let client = Client::connect(ClientConfig::new([bound.native.to_string()])).await?;
        Ok((broker, EventStore::new(client)))
    }

    /// The native protocol's address (`tidelog --broker ADDR`, another [`Client`]).
    pub fn native_addr(&self) -> SocketAddr {
        self.bound.native
    }

    /// The Kafka listener's address, when [`EmbeddedConfig::kafka_listener`] asked for one.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.bound.kafka
    }

    /// Stops the broker: stops accepting, drains connections, syncs and checkpoints every
    /// partition, and waits for it, without blocking the runtime.
    ///
    /// # Errors
    /// A partition that could not be synced or checkpointed (the next start recovers it).
    pub async fn shutdown(mut self) -> Result<(), EventStoreError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.stopped.take() {
            Some(stopped) => stopped.await,
            None => Ok(Ok(())),
        };
        if let Some(thread) = self.thread.take() {
            // Its runtime has finished the shutdown by now; joining only reaps the thread.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(embedded_error("the broker did not stop cleanly", error)),
            Err(_) => Err(EventStoreError::Embedded {
                message: "the broker's thread ended without reporting its shutdown".into(),
                source: None,
            }),
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Not shut down yet: stop it, and wait, so the data directory is closed (and may be
        // opened again) once the drop returns. The broker runs on its own threads, so waiting
        // here cannot deadlock on the caller's runtime.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the embedded broker's thread panicked while stopping");
            }
        }
    }
}

fn embedded_error(message: &str, source: impl std::error::Error + Send + Sync + 'static) -> EventStoreError {
    EventStoreError::Embedded {
        message: message.to_owned(),
        source: Some(Box::new(source)),
    }
}
