//! Hostile and stuck clients against the real `tidelogd`: huge frames trickled in, silent and
//! one-byte-a-second sockets, more connections than allowed, pipelined huge fetches never read,
//! topic settings that would roll a segment per request, and a storage failure's message. In
//! each case the broker stays bounded (memory, time, connections) and keeps serving others.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tidelog_e2e::raw::Reaction;
use tidelog_e2e::records::{batch_of, decode_records};
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

/// Writes `[limits]` settings to a config file beside the data directory; returns its path.
fn limits_config(dir: &TestDir, limits: &[(&str, u64)]) -> PathBuf {
    let path = dir.path().join("tidelogd.toml");
    let mut text = String::from("[limits]\n");
    for (name, value) in limits {
        text.push_str(&format!("{name} = {value}\n"));
    }
    std::fs::write(&path, text).expect("writing the broker config");
    path
}

fn start_with(test_name: &str, limits: &[(&str, u64)]) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let config = limits_config(&dir, limits);
    let config = config.to_str().expect("a UTF-8 temporary path").to_owned();
    let broker = BrokerProcess::start(&dir.data_dir(), &["--config", &config]);
    (dir, broker)
}

/// The broker's resident memory, from /proc.
fn rss_bytes(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// A well-behaved client on a fresh connection: create, produce, read back. Returns how long
/// it took.
fn serve_one_client(addr: SocketAddr, topic: &str) -> Duration {
    let started = Instant::now();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(topic, 1, None);
    assert_eq!(client.produce_ok(topic, 0, batch_of(&["served", "meanwhile"])), 0);
    let fetched = client.fetch(topic, 0, 0, 0, 0);
    assert_eq!(fetched.error(), ErrorCode::None, "{fetched:?}");
    let values: Vec<String> = decode_records(fetched.records)
        .iter()
        .map(|record| record.value_text())
        .collect();
    assert_eq!(values, ["served", "meanwhile"]);
    started.elapsed()
}

/// Waits until the broker closes `stream` (end of file or reset); returns when, from `since`.
fn time_until_closed(mut stream: &TcpStream, since: Instant, timeout: Duration) -> Duration {
    let deadline = Instant::now() + timeout;
    let mut scratch = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the broker did not close the connection within {timeout:?}"
        );
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        match stream.read(&mut scratch) {
            Ok(0) => return since.elapsed(),
            // An error frame before the close is fine; keep reading to the close.
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return since.elapsed(),
        }
    }
}

#[test]
fn huge_frames_trickled_in_are_charged_as_they_arrive_and_memory_stays_bounded() {
    const BUDGET: u64 = 256 << 20;
    const CONNECTIONS: usize = 40;
    const SENT_PER_CONNECTION: usize = 24 << 20;
    let (_dir, mut broker) = start_with(
        "trickled-frames",
        &[
            ("memory_bytes_max", BUDGET),
            ("connection_memory_bytes_max", 128 << 20),
        ],
    );
    let addr = broker.addr();
    serve_one_client(addr, "warm-up");
    let baseline = rss_bytes(broker.pid());
    // Each connection announces a 60 MiB frame and sends part of it, never all.
    let mut hostile: Vec<(TcpStream, usize)> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connecting");
            stream.write_all(&(60u32 << 20).to_be_bytes()).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, 0)
        })
        .collect();
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut peak = baseline;
    let mut last_progress = Instant::now();
    let attack_deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < attack_deadline && last_progress.elapsed() < Duration::from_secs(3) {
        let mut progressed = false;
        for (stream, sent) in &mut hostile {
            if *sent >= SENT_PER_CONNECTION {
                continue;
            }
            match stream.write(&chunk[..chunk.len().min(SENT_PER_CONNECTION - *sent)]) {
                Ok(written) => {
                    *sent += written;
                    progressed = true;
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => panic!("the broker cut a trickling connection early: {error}"),
            }
        }
        peak = peak.max(rss_bytes(broker.pid()));
        if progressed {
            last_progress = Instant::now();
        } else if hostile.iter().all(|(_, sent)| *sent >= SENT_PER_CONNECTION) {
            break;
        } else {
            // Every socket is full: give the broker a moment to read (or not) before retrying.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let sent: usize = hostile.iter().map(|(_, sent)| sent).sum();
    // Whatever the broker chose to read, it must have been served while all that is held.
    let took = serve_one_client(addr, "during-the-attack");
    peak = peak.max(rss_bytes(broker.pid()));
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "sent {} MiB in {CONNECTIONS} trickled frames; broker RSS grew {} MiB (budget {} MiB); a new client took {took:?}",
        sent >> 20,
        growth >> 20,
        BUDGET >> 20
    );
    // The budget plus allocator and runtime slack; without the budget the broker holds every
    // byte it was sent (960 MiB here).
    assert!(
        growth < BUDGET + (96 << 20),
        "broker RSS grew {} MiB with a {} MiB budget",
        growth >> 20,
        BUDGET >> 20
    );
    assert!(took < Duration::from_secs(20), "a new client took {took:?}");
    broker.assert_alive("trickled huge frames");
    drop(hostile);
}

#[test]
fn large_appends_to_many_partitions_leave_no_large_buffer_behind() {
    const PARTITIONS: u32 = 20;
    const BATCH_BYTES: usize = 15 << 20;
    let (_dir, mut broker) = start_with("append-buffers", &[]);
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic("wide", PARTITIONS, None);
    // Warm the allocator up with one large append, so what follows measures what is kept.
    let value = vec![b'w'; BATCH_BYTES];
    client.produce_ok("wide", 0, batch_of(&[&value]));
    let baseline = rss_bytes(broker.pid());
    for partition in 1..PARTITIONS {
        client.produce_ok("wide", partition, batch_of(&[&value]));
    }
    let growth = rss_bytes(broker.pid()).saturating_sub(baseline);
    eprintln!(
        "{} MiB appended to {} partitions; broker RSS grew {} MiB",
        (BATCH_BYTES >> 20) * (PARTITIONS as usize - 1),
        PARTITIONS - 1,
        growth >> 20
    );
    // Each partition keeping its append buffer would hold 15 MiB apiece (285 MiB here). What
    // is left is the allocator keeping freed frames and copies for reuse, per thread.
    assert!(
        growth < (160 << 20),
        "broker RSS grew {} MiB after large appends",
        growth >> 20
    );
    broker.assert_alive("large appends to many partitions");
}

#[test]
fn silent_and_slow_sockets_are_cut_on_time_while_new_clients_are_served() {
    let idle = Duration::from_millis(5_000);
    let header = Duration::from_millis(2_000);
    let frame = Duration::from_millis(4_000);
    let (_dir, mut broker) = start_with(
        "slow-sockets",
        &[
            ("connection_idle_timeout_ms", idle.as_millis() as u64),
            ("request_header_timeout_ms", header.as_millis() as u64),
            ("frame_completion_timeout_ms", frame.as_millis() as u64),
        ],
    );
    let addr = broker.addr();
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut half_header: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(&[0, 0]).unwrap();
            stream
        })
        .collect();
    let mut half_frame: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(&[0, 0, 3, 232, 1, 2, 3]).unwrap();
            stream
        })
        .collect();
    // One byte every 250 ms of a 1000-byte frame: the length prefix completes in time, the
    // frame never does. The read timeout paces the writes and notices the close.
    let tricklers: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let started = Instant::now();
                let bytes = [0u8, 0, 3, 232].into_iter().chain(std::iter::repeat(7));
                stream.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
                let mut scratch = [0u8; 64];
                for byte in bytes.take(200) {
                    if stream.write_all(&[byte]).is_err() {
                        return Some(started.elapsed());
                    }
                    match stream.read(&mut scratch) {
                        Ok(0) => return Some(started.elapsed()),
                        Ok(_) => {}
                        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        }
                        Err(_) => return Some(started.elapsed()),
                    }
                }
                None
            })
        })
        .collect();
    // A long poll longer than the idle timeout is a request under way, not idleness.
    let mut poller = RawClient::connect_or_panic(addr);
    poller.create_topic("quiet", 1, None);
    let poll_started = Instant::now();
    let poll = poller.fetch("quiet", 0, 0, 7_000, 1);
    assert_eq!(poll.error(), ErrorCode::None, "{poll:?}");
    assert!(poll_started.elapsed() >= Duration::from_millis(6_900));
    // A new client meanwhile is served at once.
    let took = serve_one_client(addr, "served");
    assert!(took < Duration::from_secs(5), "a new client took {took:?}");
    let margin = Duration::from_secs(15);
    let early = Duration::from_millis(100);
    for (name, streams, timeout) in [
        ("silent", &mut silent, idle),
        ("half a length prefix", &mut half_header, header),
        ("half a frame", &mut half_frame, frame),
    ] {
        for stream in streams.iter_mut() {
            let closed = time_until_closed(stream, opened, timeout + margin);
            assert!(
                closed + early >= timeout,
                "{name} socket cut after {closed:?}, before its {timeout:?}"
            );
        }
    }
    for trickler in tricklers {
        let closed = trickler
            .join()
            .expect("trickler thread")
            .expect("a one-byte-every-250-ms socket must be cut");
        assert!(
            closed + early >= frame && closed <= frame + margin,
            "trickling socket cut after {closed:?}"
        );
    }
    // The long-polling connection outlived the idle timeout and still works.
    assert_eq!(poller.metadata(&["quiet"]).topics.len(), 1);
    broker.assert_alive("silent and slow sockets");
}

#[test]
fn connections_over_the_caps_get_an_error_and_a_close_promptly() {
    let (_dir, mut broker) = start_with("connection-caps", &[("connections_max", 8)]);
    let addr = broker.addr();
    let mut admitted: Vec<RawClient> = (0..8)
        .map(|_| {
            let mut client = RawClient::connect_or_panic(addr);
            client.metadata(&[]);
            client
        })
        .collect();
    for _ in 0..4 {
        let started = Instant::now();
        let mut refused = RawClient::connect_or_panic(addr);
        let reaction = refused.reaction(Duration::from_secs(3), Duration::from_secs(5));
        match &reaction {
            Reaction::Closed => {}
            Reaction::RespondedThenClosed(responses) => {
                assert_eq!(
                    responses[0].error(),
                    ErrorCode::TooManyConnections,
                    "{responses:?}"
                );
                assert!(responses[0].error_message.contains("at most 8"), "{responses:?}");
            }
            other => panic!("a connection past connections_max must be told and closed, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    // The log is read from the broker's stderr by another thread: wait for the line.
    poll_until(
        Duration::from_secs(10),
        "a WARN line saying connections were refused",
        || broker.log_text().contains("connection refused").then_some(()),
    );
    // A slot given back is usable again.
    drop(admitted.pop());
    poll_until(
        Duration::from_secs(10),
        "a freed slot to admit a new client",
        || {
            let mut client = RawClient::connect(addr).ok()?;
            let id = client
                .send_body(pb::request::Body::Metadata(pb::MetadataRequest::default()))
                .ok()?;
            client
                .wait_for(id)
                .ok()
                .filter(|response| response.error() == ErrorCode::None)
        },
    );
    broker.assert_alive("connections over the cap");
}

#[test]
fn connections_over_the_per_address_cap_are_refused_and_others_keep_working() {
    let (_dir, mut broker) = start_with("address-cap", &[("connections_per_address_max", 3)]);
    let addr = broker.addr();
    let mut admitted: Vec<RawClient> = (0..3)
        .map(|_| {
            let mut client = RawClient::connect_or_panic(addr);
            client.metadata(&[]);
            client
        })
        .collect();
    let mut refused = RawClient::connect_or_panic(addr);
    match refused.reaction(Duration::from_secs(3), Duration::from_secs(5)) {
        Reaction::Closed => {}
        Reaction::RespondedThenClosed(responses) => {
            assert_eq!(responses[0].error(), ErrorCode::TooManyConnections);
            assert!(
                responses[0].error_message.contains("per address"),
                "{responses:?}"
            );
        }
        other => panic!("a connection past the per-address cap must be refused, got {other:?}"),
    }
    for client in &mut admitted {
        assert_eq!(client.metadata(&[]).brokers.len(), 1);
    }
    broker.assert_alive("per-address cap");
}

/// A fetch asking for up to 50 MiB from offset 0.
fn huge_fetch(topic: &str) -> pb::request::Body {
    pb::request::Body::Fetch(pb::FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 50 << 20,
        topics: vec![pb::fetch_request::Topic {
            name: topic.into(),
            partitions: vec![pb::fetch_request::Partition {
                partition: 0,
                fetch_offset: 0,
                max_bytes: 50 << 20,
            }],
        }],
    })
}

/// Reads a whole partition; a retriable REQUEST_TIMED_OUT is retried, an empty success below
/// the high watermark (what a consumer would take for the end of the log) fails the test.
fn consume_all(addr: SocketAddr, topic: &str, expected: i64, timeout: Duration) -> usize {
    let mut client = RawClient::connect_or_panic(addr);
    let deadline = Instant::now() + timeout;
    let mut next = 0;
    let mut retried = 0;
    while next < expected {
        assert!(
            Instant::now() < deadline,
            "consumed {next} of {expected} records in {timeout:?}"
        );
        let fetched = client.fetch(topic, 0, next, 500, 0);
        if fetched.error() == ErrorCode::RequestTimedOut {
            retried += 1;
            continue;
        }
        assert_eq!(fetched.error(), ErrorCode::None, "{fetched:?}");
        let records = decode_records(fetched.records);
        assert!(
            !records.is_empty(),
            "an empty successful fetch at {next}, below the high watermark {}",
            fetched.high_watermark
        );
        let from = next;
        for record in records.into_iter().filter(|record| record.offset >= from) {
            assert_eq!(record.offset, next, "offsets are dense");
            next += 1;
        }
    }
    retried
}

#[test]
fn pipelined_huge_fetches_never_read_stall_only_their_clients_and_are_cut() {
    const RECORDS: i64 = 32;
    const HOSTILE: usize = 25;
    let stall = Duration::from_millis(5_000);
    let (_dir, mut broker) = start_with("unread-fetches", &[("write_stall_timeout_ms", 5_000)]);
    let addr = broker.addr();
    let mut setup = RawClient::connect_or_panic(addr);
    setup.create_topic("deep", 1, None);
    let value = "v".repeat(1 << 20);
    for _ in 0..RECORDS {
        setup.produce_ok("deep", 0, batch_of(&[&value]));
    }
    let started = Instant::now();
    let hostile: Vec<RawClient> = (0..HOSTILE)
        .map(|_| {
            let mut client = RawClient::connect_or_panic(addr);
            for _ in 0..10 {
                client.send_body(huge_fetch("deep")).unwrap();
            }
            client
        })
        .collect();
    // Other consumers still read every record, with no fake end of the log on the way.
    let consumers: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || consume_all(addr, "deep", RECORDS, Duration::from_secs(120))))
        .collect();
    for consumer in consumers {
        let retried = consumer.join().expect("consumer thread");
        eprintln!("a consumer read all {RECORDS} records ({retried} retriable timeouts)");
    }
    // And the clients that never read are cut once their sockets stayed full for the stall
    // timeout.
    let cut = poll_until(Duration::from_secs(60), "every unread client to be cut", || {
        let count = broker
            .log_text()
            .matches("client stopped reading its responses")
            .count();
        (count >= HOSTILE).then_some(count)
    });
    assert!(started.elapsed() >= stall, "cut before the stall timeout");
    eprintln!("{cut} unread clients cut after {:?}", started.elapsed());
    // Really closed: what was already in flight drains, then the end of the stream.
    for client in &hostile {
        time_until_closed(client.stream(), started, Duration::from_secs(60));
    }
    broker.assert_alive("pipelined huge fetches never read");
    drop(hostile);
}

#[test]
fn segment_settings_below_the_floors_are_refused_with_invalid_config() {
    let dir = TestDir::new("segment-floors");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    for (name, config) in [
        (
            "rolls-every-ms",
            pb::TopicConfig {
                segment_ms: Some(1),
                ..pb::TopicConfig::default()
            },
        ),
        (
            "tiny-segments",
            pb::TopicConfig {
                segment_bytes: Some(4096),
                ..pb::TopicConfig::default()
            },
        ),
    ] {
        let result = client.create_topic_result(name, 1, Some(config));
        assert_eq!(result.error(), ErrorCode::InvalidConfig, "{result:?}");
        assert!(result.message.contains("minimum"), "{result:?}");
        assert!(client.metadata(&[]).topics.iter().all(|topic| topic.name != name));
    }
    // At the floors, a topic is created (segment_bytes must also hold the largest batch).
    let at_floor = pb::TopicConfig {
        segment_ms: Some(60_000),
        segment_bytes: Some(16 << 20),
        ..pb::TopicConfig::default()
    };
    let result = client.create_topic_result("at-the-floor", 1, Some(at_floor));
    assert_eq!(result.error(), ErrorCode::None, "{result:?}");
    broker.assert_alive("segment floors");
}

/// Every segment file of `topic`'s partition 0, in offset order.
fn segment_files(data_dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading the data directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "log")
                && path.to_string_lossy().contains(topic)
                && path
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|name| name == "0")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_storage_failure_reaches_the_client_without_data_directory_paths() {
    let dir = TestDir::new("error-paths");
    let config = tidelog_e2e::small_segments_config(&dir, 4096);
    let config = config.to_str().expect("a UTF-8 temporary path").to_owned();
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--config", &config]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("damaged", 1, None);
    let value = "d".repeat(1000);
    for _ in 0..12 {
        client.produce_ok("damaged", 0, batch_of(&[&value]));
    }
    let segments = segment_files(&dir.data_dir(), "damaged");
    assert!(segments.len() >= 3, "several segments: {segments:?}");
    // Cut the oldest segment in the middle of its first batch, under the running broker.
    let first = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    first.set_len(600).unwrap();
    let fetched = client.fetch("damaged", 0, 0, 0, 0);
    assert_ne!(
        fetched.error(),
        ErrorCode::None,
        "a read of the cut segment fails: {fetched:?}"
    );
    let data_dir = dir.data_dir().to_string_lossy().into_owned();
    assert!(
        !fetched.message.contains(&data_dir) && !fetched.message.contains("/topics/"),
        "the client is told no path: {:?}",
        fetched.message
    );
    assert!(
        fetched.message.contains("\"damaged\""),
        "names the topic: {:?}",
        fetched.message
    );
    // The broker's own log keeps the whole error, path included, at WARN. (Its stderr is read
    // by another thread: wait for the line.)
    poll_until(
        Duration::from_secs(10),
        "the failure logged at WARN with its path",
        || {
            broker
                .log_text()
                .lines()
                .any(|line| {
                    line.contains("WARN")
                        && line.contains("storage operation failed")
                        && line.contains(&data_dir)
                })
                .then_some(())
        },
    );
    broker.assert_alive("a storage failure");
}
