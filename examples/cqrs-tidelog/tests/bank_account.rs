//! A bank account run through `cqrs_es::CqrsFramework` with Tidelog (the embedded broker) as
//! its event store: commands, a reload after the broker restarts, and two writers racing on
//! one account, where the broker's expected-version check turns the loser's commit into
//! cqrs-es's concurrency error.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::{PersistedEventStore, PersistenceError};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use cqrs_tidelog::bank_account::{
    BankAccount, BankAccountCommand, BankAccountError, BankAccountEvent, BankServices,
};
use cqrs_tidelog::repository::SEQUENCE_HEADER;
use cqrs_tidelog::{RepositoryConfig, Snapshots, TidelogEventRepository};
use tidelog_client::embedded::EmbeddedBroker;
use tidelog_client::event_store::{EventStore as TidelogStore, ReadDirection};

/// Generous: the workspace's tests share two cores.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

type Store = PersistedEventStore<TidelogEventRepository, BankAccount>;

fn framework(store: &TidelogStore, services: BankServices) -> (CqrsFramework<BankAccount, Store>, Store) {
    // One partition keeps the replay order of the whole topic checkable.
    let config = RepositoryConfig::default().partitions(1);
    let events =
        || Store::new_event_store(TidelogEventRepository::with_config(store.clone(), config.clone()));
    (CqrsFramework::new(events(), vec![], services), events())
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {STEP_TIMEOUT:?}"),
    }
}

async fn balance(events: &Store, id: &str) -> (bool, u64, usize) {
    let context = within("load", events.load_aggregate(id)).await.expect("loads");
    (
        context.aggregate.open,
        context.aggregate.balance,
        context.current_sequence,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_persist_and_reload_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, store) = within("start", EmbeddedBroker::start(dir.path()))
        .await
        .expect("starts");
    let (cqrs, events) = framework(&store, BankServices::default());
    within(
        "open",
        cqrs.execute(
            "acct-1",
            BankAccountCommand::Open {
                account_id: "acct-1".into(),
            },
        ),
    )
    .await
    .expect("opens");
    within(
        "deposit",
        cqrs.execute("acct-1", BankAccountCommand::Deposit { amount: 100 }),
    )
    .await
    .expect("deposits");
    within(
        "withdraw",
        cqrs.execute("acct-1", BankAccountCommand::Withdraw { amount: 30 }),
    )
    .await
    .expect("withdraws");
    let refused = within(
        "overdraw",
        cqrs.execute("acct-1", BankAccountCommand::Withdraw { amount: 500 }),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(AggregateError::UserError(BankAccountError::InsufficientFunds {
                balance: 70,
                amount: 500
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(balance(&events, "acct-1").await, (true, 70, 3));

    // The events are ordinary records of the stream: JSON values, the sequence in a header.
    let stream = TidelogEventRepository::new(store.clone()).stream::<BankAccount>("acct-1");
    let page = within("read", store.read(&stream, 0, ReadDirection::Forward, 10))
        .await
        .expect("reads");
    let sequences: Vec<String> = page
        .records
        .iter()
        .map(|record| {
            let header = record
                .headers()
                .iter()
                .find(|header| header.key() == SEQUENCE_HEADER)
                .expect("sequence header");
            String::from_utf8(header.value().expect("value").to_vec()).expect("utf-8")
        })
        .collect();
    assert_eq!(sequences, ["1", "2", "3"]);
    let first: BankAccountEvent =
        serde_json::from_slice(page.records[0].value().expect("value")).expect("json");
    assert_eq!(
        first,
        BankAccountEvent::Opened {
            account_id: "acct-1".into()
        }
    );

    drop(cqrs);
    drop(events);
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");

    let (broker, store) = within("restart", EmbeddedBroker::start(dir.path()))
        .await
        .expect("restarts");
    let (cqrs, events) = framework(&store, BankServices::default());
    assert_eq!(
        balance(&events, "acct-1").await,
        (true, 70, 3),
        "state after the restart"
    );
    within(
        "deposit after restart",
        cqrs.execute("acct-1", BankAccountCommand::Deposit { amount: 5 }),
    )
    .await
    .expect("the version continues after a restart");
    assert_eq!(balance(&events, "acct-1").await, (true, 75, 4));
    let reopen = within(
        "reopen",
        cqrs.execute(
            "acct-1",
            BankAccountCommand::Open {
                account_id: "acct-1".into(),
            },
        ),
    )
    .await;
    assert!(
        matches!(
            reopen,
            Err(AggregateError::UserError(BankAccountError::AlreadyOpen))
        ),
        "{reopen:?}"
    );
    assert_eq!(
        balance(&events, "acct-2").await,
        (false, 0, 0),
        "an aggregate never written"
    );
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_one_account_one_wins_the_other_gets_the_concurrency_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, store) = within("start", EmbeddedBroker::start(dir.path()))
        .await
        .expect("starts");
    let (setup, events) = framework(&store, BankServices::default());
    within(
        "open",
        setup.execute(
            "acct-9",
            BankAccountCommand::Open {
                account_id: "acct-9".into(),
            },
        ),
    )
    .await
    .expect("opens");
    within(
        "deposit",
        setup.execute("acct-9", BankAccountCommand::Deposit { amount: 100 }),
    )
    .await
    .expect("deposits");

    // Both handlers load version 2, then wait for each other at the gate before emitting: they
    // commit against the same expected version, as two service instances would.
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let services = BankServices { gate: Some(gate) };
    let (left, _) = framework(&store, services.clone());
    let (right, _) = framework(&store, services);
    let (a, b) = within(
        "racing withdrawals",
        futures_join(
            left.execute("acct-9", BankAccountCommand::Withdraw { amount: 60 }),
            right.execute("acct-9", BankAccountCommand::Withdraw { amount: 70 }),
        ),
    )
    .await;
    let outcomes = [&a, &b];
    let wins = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let conflicts = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(AggregateError::AggregateConflict)))
        .count();
    assert_eq!((wins, conflicts), (1, 1), "one wins, one conflicts: {a:?} {b:?}");

    let (open, left_over, sequence) = balance(&events, "acct-9").await;
    assert!(open);
    assert_eq!(sequence, 3, "exactly one withdrawal was appended");
    assert!(left_over == 40 || left_over == 30, "balance {left_over}");

    // The loser retries on the new state: its 70 no longer fits if 60 went out, and fits if
    // it was the winner's 70 that left 30... either way the answer is decided on fresh state.
    let (retry, _) = framework(&store, BankServices::default());
    let amount = if left_over == 40 { 70 } else { 60 };
    let retried = within(
        "retry",
        retry.execute("acct-9", BankAccountCommand::Withdraw { amount }),
    )
    .await;
    assert!(
        matches!(
            retried,
            Err(AggregateError::UserError(
                BankAccountError::InsufficientFunds { .. }
            ))
        ),
        "{retried:?}"
    );

    // A commit from a stale context is refused at the repository level too.
    let stale = within("load", events.load_aggregate("acct-9"))
        .await
        .expect("loads");
    within(
        "deposit",
        setup.execute("acct-9", BankAccountCommand::Deposit { amount: 1 }),
    )
    .await
    .expect("deposits");
    let late = within(
        "stale commit",
        events.commit(
            vec![BankAccountEvent::Deposited {
                amount: 1,
                balance: left_over + 1,
            }],
            stale,
            Default::default(),
        ),
    )
    .await;
    assert!(matches!(late, Err(AggregateError::AggregateConflict)), "{late:?}");
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_one_aggregate_and_the_whole_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, store) = within("start", EmbeddedBroker::start(dir.path()))
        .await
        .expect("starts");
    let (cqrs, _) = framework(&store, BankServices::default());
    for id in ["a", "b"] {
        within(
            "open",
            cqrs.execute(
                id,
                BankAccountCommand::Open {
                    account_id: id.into(),
                },
            ),
        )
        .await
        .expect("opens");
        within(
            "deposit",
            cqrs.execute(id, BankAccountCommand::Deposit { amount: 10 }),
        )
        .await
        .expect("deposits");
    }
    let repository =
        TidelogEventRepository::with_config(store.clone(), RepositoryConfig::default().partitions(1));
    use cqrs_es::persist::PersistedEventRepository;
    let mut one = within("stream", repository.stream_events::<BankAccount>("b"))
        .await
        .expect("streams");
    let mut seen = Vec::new();
    while let Some(event) = within("next", one.next::<BankAccount>(&[])).await {
        let event = event.expect("decodes");
        seen.push((event.aggregate_id, event.sequence));
    }
    assert_eq!(seen, [("b".to_owned(), 1), ("b".to_owned(), 2)]);

    let mut all = within("stream all", repository.stream_all_events::<BankAccount>())
        .await
        .expect("streams");
    let mut seen = Vec::new();
    while let Some(event) = within("next", all.next::<BankAccount>(&[])).await {
        let event: Result<_, PersistenceError> = event;
        let event = event.expect("decodes");
        seen.push((event.aggregate_id, event.sequence));
    }
    assert_eq!(
        seen,
        [
            ("a".to_owned(), 1),
            ("a".to_owned(), 2),
            ("b".to_owned(), 1),
            ("b".to_owned(), 2)
        ]
    );
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");
}

/// The latest snapshot of an account in the companion topic, as the repository stored it.
async fn stored_snapshot(store: &TidelogStore, id: &str) -> Option<(i64, serde_json::Value)> {
    let stream = TidelogEventRepository::new(store.clone()).stream::<BankAccount>(id);
    let loaded = within("load", store.load(&stream)).await.expect("loads");
    loaded.snapshot.map(|snapshot| {
        (
            snapshot.at_offset,
            serde_json::from_slice(&snapshot.bytes).expect("json"),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_store_keeps_snapshots_at_their_events_and_loads_from_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, store) = within("start", EmbeddedBroker::start(dir.path()))
        .await
        .expect("starts");
    let config = RepositoryConfig::default()
        .partitions(1)
        .snapshots(Snapshots::Every(2));
    let events = || {
        Store::new_snapshot_store(
            TidelogEventRepository::with_config(store.clone(), config.clone()),
            2,
        )
    };
    let cqrs = CqrsFramework::new(events(), vec![], BankServices::default());
    let open = BankAccountCommand::Open {
        account_id: "acct-1".into(),
    };
    within("open", cqrs.execute("acct-1", open)).await.expect("opens");
    for amount in [10, 20, 30, 40] {
        within(
            "deposit",
            cqrs.execute("acct-1", BankAccountCommand::Deposit { amount }),
        )
        .await
        .expect("deposits");
    }
    // Sequences 1 to 5: snapshots after 2 and 4, the latest covering the 4th event's offset.
    let stream = TidelogEventRepository::new(store.clone()).stream::<BankAccount>("acct-1");
    let page = within("read", store.read(&stream, 0, ReadDirection::Forward, 10))
        .await
        .expect("reads");
    let offsets: Vec<i64> = page.records.iter().map(|record| record.offset().get()).collect();
    assert_eq!(offsets.len(), 5);
    let (at, stored) = stored_snapshot(&store, "acct-1").await.expect("a snapshot");
    assert_eq!(at, offsets[3], "stored at the offset of the last event it covers");
    assert_eq!(stored["current_sequence"], 4);
    assert_eq!(stored["current_snapshot"], 2);
    assert_eq!(stored["aggregate"]["balance"], 60);
    assert_eq!(balance(&events(), "acct-1").await, (true, 100, 5));

    // A load starts from the snapshot and replays only the 5th event: a snapshot forged there
    // with the account closed stays closed (the Opened event is not replayed), and the 5th
    // event's balance is applied over it.
    let snapshot_at = |open: bool| {
        let snapshot = serde_json::json!({
            "aggregate": {"open": open, "balance": 60},
            "current_sequence": 4,
            "current_snapshot": 2,
        });
        serde_json::to_vec(&snapshot).expect("json")
    };
    within(
        "forge",
        store.save_snapshot(&stream, offsets[3], snapshot_at(false)),
    )
    .await
    .expect("saves");
    let context = within("load", events().load_aggregate("acct-1"))
        .await
        .expect("loads");
    assert_eq!(
        (
            context.aggregate.open,
            context.aggregate.balance,
            context.current_sequence,
            context.current_snapshot
        ),
        (false, 100, 5, Some(2)),
        "loaded from the snapshot, not from the first event"
    );
    within(
        "restore",
        store.save_snapshot(&stream, offsets[3], snapshot_at(true)),
    )
    .await
    .expect("saves");
    use cqrs_es::persist::PersistedEventRepository;
    let repository = TidelogEventRepository::with_config(store.clone(), config.clone());
    let after = within(
        "last events",
        repository.get_last_events::<BankAccount>("acct-1", 4),
    )
    .await
    .expect("reads");
    assert_eq!(after.iter().map(|event| event.sequence).collect::<Vec<_>>(), [5]);
    let withdraw = BankAccountCommand::Withdraw { amount: 1 };
    within("withdraw", cqrs.execute("acct-1", withdraw))
        .await
        .expect("withdraws");
    let (at, stored) = stored_snapshot(&store, "acct-1").await.expect("a snapshot");
    assert_eq!(
        (
            stored["current_sequence"].clone(),
            stored["current_snapshot"].clone()
        ),
        (6.into(), 3.into())
    );
    assert!(at > offsets[4], "the newest snapshot at the 6th event");
    assert_eq!(balance(&events(), "acct-1").await, (true, 99, 6));

    // A snapshot store the repository was not told about: the commit is refused whole.
    let unaware = Store::new_snapshot_store(
        TidelogEventRepository::with_config(store.clone(), RepositoryConfig::default().partitions(1)),
        2,
    );
    let cqrs = CqrsFramework::new(unaware, vec![], BankServices::default());
    let refused = within(
        "open",
        cqrs.execute(
            "acct-2",
            BankAccountCommand::Open {
                account_id: "acct-2".into(),
            },
        ),
    )
    .await;
    assert!(refused.is_ok(), "no snapshot due after one event: {refused:?}");
    let refused = within(
        "deposit",
        cqrs.execute("acct-2", BankAccountCommand::Deposit { amount: 1 }),
    )
    .await;
    assert!(refused.is_err(), "the snapshot after two events is refused");
    assert_eq!(
        balance(&events(), "acct-2").await,
        (true, 0, 1),
        "nothing of the refused commit"
    );
    within("shutdown", broker.shutdown())
        .await
        .expect("stops cleanly");
}

/// Both futures, concurrently, without pulling in `futures` for `join`.
async fn futures_join<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    tokio::join!(a, b)
}
