//! Tidelog as the event store of [cqrs-es](https://docs.rs/cqrs-es): a
//! `PersistedEventRepository` over `tidelog_client::EventStore`, and a small bank-account
//! aggregate that the tests run through `cqrs_es::CqrsFramework` against the embedded broker.
//!
//! ```no_run
//! use cqrs_es::persist::PersistedEventStore;
//! use cqrs_es::CqrsFramework;
//! use cqrs_tidelog::bank_account::{BankAccount, BankAccountCommand, BankServices};
//! use cqrs_tidelog::TidelogEventRepository;
//! use tidelog_client::embedded::EmbeddedBroker;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (broker, store) = EmbeddedBroker::start("./data").await?;
//! let events = PersistedEventStore::<_, BankAccount>::new_event_store(TidelogEventRepository::new(store));
//! let cqrs = CqrsFramework::new(events, vec![], BankServices::default());
//! cqrs.execute("account-1", BankAccountCommand::Open { account_id: "account-1".into() }).await?;
//! cqrs.execute("account-1", BankAccountCommand::Deposit { amount: 100 }).await?;
//! broker.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod bank_account;
pub mod repository;
pub mod snapshots;

pub use repository::{RepositoryConfig, TidelogEventRepository};
pub use snapshots::Snapshots;
