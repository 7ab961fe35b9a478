//! A produce request's records, as the broker validates them, and a fetch response's, as the
//! client decodes them. The input is used twice: as sent, and with each batch's CRC fixed up,
//! so the fuzzer reaches the structure walk and the decompressors behind the CRC check.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidelog_proto::batch::{compute_crc, BatchIter, RecordBatch, CRC_OFFSET};

/// Small enough that a fuzz run never holds much memory; large enough for real batches.
const DECOMPRESSED_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for batch in BatchIter::new(bytes) {
        let Ok(batch) = batch else { break };
        check(&batch);
        let mut fixed = BytesMut::from(&batch.as_bytes()[..]);
        let crc = compute_crc(&fixed);
        fixed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        if let Ok((fixed, _)) = RecordBatch::split_first(&fixed.freeze()) {
            check(&fixed);
        }
    }
});

/// A batch that validates decodes to exactly its record count, with offset deltas 0, 1, 2...
fn check(batch: &RecordBatch) {
    let valid = batch.validate_bounded(DECOMPRESSED_BYTES_MAX).is_ok();
    let mut decoded = 0usize;
    for record in batch.records_bounded(DECOMPRESSED_BYTES_MAX) {
        match record {
            Ok(record) => {
                if valid {
                    assert_eq!(record.offset_delta as usize, decoded, "a valid batch's deltas run 0, 1, 2, ...");
                }
                decoded += 1;
            }
            Err(_) => {
                assert!(!valid, "a batch that validates must decode");
                break;
            }
        }
    }
    if valid {
        assert_eq!(decoded, batch.header().record_count as usize);
    }
}
