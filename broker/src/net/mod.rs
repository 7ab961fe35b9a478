//! What every listener shares, whatever its protocol: connection admission (`admission`: the
//! caps on connections in all and per source address) and the broker's one memory budget
//! (`budget`), which every connection of every listener draws from. Knows no wire format.

pub(crate) mod admission;
pub(crate) mod budget;
pub(crate) mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::core::Core;
use admission::Admission;
use budget::MemoryBudget;

/// What one listener's connections see: the core they translate to, and the listener's own
/// state (the address clients are told to connect to, its shutdown signal), plus the broker's
/// one memory budget, shared by every listener.
#[derive(Debug)]
pub(crate) struct ListenerContext {
    pub core: Arc<Core>,
    /// Address clients are told to connect to (metadata responses).
    pub advertised: SocketAddr,
    /// Tells this listener to stop accepting and drain.
    pub shutdown: watch::Receiver<bool>,
    /// The broker's one memory budget (`net::budget`).
    pub memory: Arc<MemoryBudget>,
    /// The broker's one connection cap (`net::admission`), shared by every listener.
    pub admission: Arc<Admission>,
}
