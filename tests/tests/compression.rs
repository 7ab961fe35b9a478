//! Compressed record batches against the real broker: each codec is accepted, stored as sent
//! and served unchanged; a decompression bomb and a batch whose records do not match its count
//! are refused whole, with nothing appended; the native client (through the CLI) produces
//! compressed batches and its consumer reads them.

use bytes::Bytes;
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{compress_batch, BatchIter, Compression, BATCH_HEADER_BYTES};
use tidelog_proto::pb::ErrorCode;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn values(codec: Compression, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("{codec} record {index} {}", "compressible ".repeat(10)))
        .collect()
}

#[test]
fn every_codec_is_accepted_stored_as_sent_and_served_unchanged() {
    let dir = TestDir::new("compression-codecs");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("packed", 1, None);
    let mut expected: Vec<String> = Vec::new();
    let mut sent: Vec<(i64, Bytes)> = Vec::new();
    for codec in CODECS {
        let batch_values = values(codec, 50);
        let plain = batch_of(&batch_values);
        let compressed = compress_batch(&plain, codec).expect("compressing a built batch");
        assert!(
            compressed.len() < plain.len() / 2,
            "{codec} should shrink these records"
        );
        let base = client.produce_ok("packed", 0, compressed.clone());
        assert_eq!(base, expected.len() as i64, "{codec}");
        sent.push((base, compressed));
        expected.extend(batch_values);
    }

    // Served byte for byte as sent, but for the base offset the broker assigned.
    for (base, compressed) in &sent {
        let result = client.fetch("packed", 0, *base, 0, 0);
        assert_eq!(result.error(), ErrorCode::None, "{result:?}");
        let first = BatchIter::new(result.records)
            .next()
            .expect("a batch at the fetch offset")
            .expect("a well-formed batch");
        assert_eq!(first.header().base_offset, *base);
        assert_eq!(&first.as_bytes()[8..], &compressed[8..], "batch at {base}");
    }

    // And decoded (decompressed, validated) they are the records produced, densely numbered.
    let (records, high_watermark) = read_partition(&mut client, "packed", 0, 0);
    assert_eq!(high_watermark, expected.len() as i64);
    let got: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(got, expected);

    // They survive a crash (recovery reads only the headers of compressed batches).
    broker.kill9();
    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (records, _) = read_partition(&mut client, "packed", 0, 0);
    assert_eq!(records.len(), expected.len());
}

#[test]
fn a_decompression_bomb_and_a_lying_record_count_are_refused_with_nothing_appended() {
    let dir = TestDir::new("compression-bombs");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("guarded", 1, None);
    client.produce_ok("guarded", 0, batch_of(&["before"]));

    // A header for one record, then 80 MiB of zeros compressed: past the default 64 MiB
    // `limits.batch_decompressed_bytes_max`.
    let mut bomb = batch_of(&["x"]).to_vec();
    bomb.truncate(BATCH_HEADER_BYTES);
    bomb.extend(std::iter::repeat_n(0u8, 80 << 20));
    let length = (bomb.len() - 12) as i32;
    bomb[8..12].copy_from_slice(&length.to_be_bytes());
    for codec in CODECS {
        let packed = compress_batch(&bomb, codec).expect("compressing zeros");
        assert!(
            packed.len() < 4 << 20,
            "{codec}: the bomb must be small on the wire"
        );
        let result = client
            .produce("guarded", 0, packed)
            .unwrap_or_else(|error| panic!("{codec} bomb: the connection failed: {error}"));
        assert_eq!(
            result.error(),
            ErrorCode::CorruptMessage,
            "{codec} bomb: {result:?}"
        );
        assert!(
            result.message.contains("limit of 67108864 bytes"),
            "{codec} bomb: the error says why: {}",
            result.message
        );
    }

    // Three records under a header that counts two (the count, last offset delta and CRC
    // agree with each other, only the records do not).
    let three = batch_of(&[
        "a-long-enough-value",
        "b-long-enough-value",
        "c-long-enough-value",
    ]);
    let mut lying = three.to_vec();
    lying[57..61].copy_from_slice(&2i32.to_be_bytes()); // recordCount
    lying[23..27].copy_from_slice(&1i32.to_be_bytes()); // lastOffsetDelta
    for codec in CODECS {
        let packed = compress_batch(&lying, codec).expect("compressing");
        let result = client.produce("guarded", 0, packed).expect("a response");
        assert_eq!(
            result.error(),
            ErrorCode::CorruptMessage,
            "{codec} miscounted: {result:?}"
        );
    }

    assert_eq!(client.high_watermark("guarded", 0), 1, "nothing may be appended");
    broker.assert_alive("compressed garbage");
    let (records, _) = read_partition(&mut client, "guarded", 0, 0);
    assert_eq!(records.len(), 1);
}

#[test]
fn the_cli_producer_compresses_with_each_codec_and_the_consumer_reads_it_back() {
    let dir = TestDir::new("compression-cli");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    for codec in CODECS {
        let topic = format!("cli-{codec}");
        client.create_topic(&topic, 1, None);
        let lines: Vec<String> = (0..200)
            .map(|index| format!("{codec} line {index} {}", "abc".repeat(20)))
            .collect();
        let input = lines.join("\n") + "\n";
        run_cli(
            Some(addr),
            &[
                "produce",
                &topic,
                "--compression",
                codec.name(),
                "--linger-ms",
                "50",
            ],
            input.as_bytes(),
        )
        .assert_success();

        // The stored batches are compressed with the codec asked for.
        let result = client.fetch(&topic, 0, 0, 0, 0);
        assert_eq!(result.error(), ErrorCode::None, "{result:?}");
        let mut stored = 0;
        for batch in BatchIter::new(result.records) {
            let batch = batch.expect("a well-formed batch");
            assert_eq!(batch.header().compression(), Ok(codec), "{codec}");
            stored += batch.header().record_count;
        }
        assert_eq!(stored, 200, "{codec}");

        let consumed = run_cli(
            Some(addr),
            &[
                "consume",
                &topic,
                "--from-beginning",
                "--max-messages",
                "200",
                "--timeout-ms",
                "10000",
            ],
            b"",
        );
        consumed.assert_success();
        assert_eq!(consumed.stdout_lines(), lines, "{codec}");
    }
}
