//! Writers racing on one stream (issue 8 §1): WRITERS clients, each on its own connection to
//! the real broker, append to one key with `exact` expectations, ROUNDS wins each. For every
//! version exactly one writer wins; a loser learns the actual version from its conflict and
//! tries again on it. Read back through fetch, the key's records are one chain: offsets with no
//! gap, every record written by the winner of its version, none twice.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tidelog_client::{Client, ClientConfig, Error, EventData, Expected};
use tidelog_e2e::records::read_partition;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tokio::sync::Barrier;

const WRITERS: usize = 8;
const ROUNDS: usize = 25;
const TOPIC: &str = "contended";
const KEY: &str = "account-1";

/// What one writer saw: the versions it won (offset, the version it expected) and how many
/// conflicts it got.
#[derive(Debug, Default)]
struct Tally {
    won: Vec<(i64, i64, String)>,
    conflicts: usize,
}

async fn writer(addr: String, writer: usize, start: Arc<Barrier>) -> Tally {
    let client = Client::connect(ClientConfig::new([addr]))
        .await
        .expect("client connects");
    // Connected and metadata loaded: everyone starts racing at once.
    start.wait().await;
    let mut tally = Tally::default();
    let mut version = -1i64;
    for round in 0..ROUNDS {
        let id = format!("w{writer}-r{round}");
        // Bounded: each failed attempt learns a newer version, and at most WRITERS * ROUNDS
        // versions are ever won.
        let mut landed = false;
        for _ in 0..=WRITERS * ROUNDS {
            let expected = if version < 0 {
                Expected::NoStream
            } else {
                Expected::Exact(version)
            };
            let event = EventData::new(id.clone()).event_id(id.clone());
            match client
                .append_stream(TOPIC, Bytes::from(KEY), expected, vec![event])
                .await
            {
                Ok(appended) => {
                    assert!(!appended.deduplicated, "{id} was never appended before");
                    let offset = appended.offsets[0];
                    assert!(offset > version, "{id} landed at {offset}, not past {version}");
                    tally.won.push((offset, version, id.clone()));
                    version = offset;
                    landed = true;
                    break;
                }
                Err(Error::ExpectationFailed { failures }) => {
                    assert_eq!(failures.len(), 1, "{failures:?}");
                    let actual = failures[0].actual;
                    assert_eq!(failures[0].expected, expected);
                    assert!(
                        actual > version,
                        "conflict after {version} reports version {actual}"
                    );
                    tally.conflicts += 1;
                    version = actual;
                }
                Err(other) => panic!("writer {writer}: {other}"),
            }
        }
        assert!(landed, "writer {writer} never won round {round}");
    }
    tally
}

#[test]
fn concurrent_writers_win_each_version_exactly_once_and_the_stream_has_no_gap_or_fork() {
    let dir = TestDir::new("stream-contention");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut raw = RawClient::connect_or_panic(broker.addr());
    // One partition: the key's stream is the whole partition, so gaps show as missing offsets.
    raw.create_topic(TOPIC, 1, None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = broker.addr().to_string();
    let tallies: Vec<Tally> = runtime.block_on(async move {
        let start = Arc::new(Barrier::new(WRITERS));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|index| tokio::spawn(writer(addr.clone(), index, Arc::clone(&start))))
            .collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(task.await.expect("writer task"));
        }
        tallies
    });
    let mut wins: Vec<(i64, i64, String)> = tallies.iter().flat_map(|tally| tally.won.clone()).collect();
    wins.sort();
    let conflicts: usize = tallies.iter().map(|tally| tally.conflicts).sum();
    assert_eq!(wins.len(), WRITERS * ROUNDS);
    // Each version was won once: every win expected the win right before it.
    for (index, (offset, expected, id)) in wins.iter().enumerate() {
        assert_eq!(*offset, index as i64, "{id}");
        assert_eq!(
            *expected,
            index as i64 - 1,
            "{id} won over a version that was not the last"
        );
    }
    // Everyone first expected `none`, and only one could win it.
    assert!(
        conflicts >= WRITERS - 1,
        "only {conflicts} conflicts: the writers did not race"
    );
    eprintln!(
        "{} appends won, {conflicts} conflicts among {WRITERS} writers",
        wins.len()
    );
    // The log holds exactly the winners, in version order.
    let (records, high_watermark) = read_partition(&mut raw, TOPIC, 0, 0);
    assert_eq!(high_watermark, (WRITERS * ROUNDS) as i64);
    let mut seen = HashSet::new();
    for (record, (offset, _, id)) in records.iter().zip(&wins) {
        assert_eq!(record.offset, *offset);
        assert_eq!(record.key_text().as_deref(), Some(KEY));
        assert_eq!(&record.value_text(), id, "offset {offset}");
        assert!(seen.insert(id.clone()), "{id} stored twice");
    }
    assert_eq!(records.len(), wins.len());
}
