//! A stored batch through the cleaner's filter (`tidelog_proto::batch::filter`): arbitrary bytes
//! as the batch, arbitrary retain masks and options. The first 9 input bytes choose the options
//! (byte 0) and the mask (bytes 1-8, one bit per record, repeating); the rest is the batch,
//! tried as given and with its CRC fixed up so the fuzzer reaches the record walk, the
//! decompressors and the rebuild. Nothing may panic; whatever is rewritten must pass the
//! stored-batch check and decode to exactly the records it says it kept.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidelog_proto::batch::filter::{filter_batch, validate_filtered, FilterOptions, Filtered};
use tidelog_proto::batch::{compute_crc, RecordBatch, CRC_OFFSET};

/// Small enough that a fuzz run never holds much memory; large enough for real batches.
const DECOMPRESSED_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (choice, rest) = data.split_at(9);
    let mut mask_bytes = [0u8; 8];
    mask_bytes.copy_from_slice(&choice[1..9]);
    let mask = u64::from_le_bytes(mask_bytes);
    let options = FilterOptions {
        delete_horizon_ms: (choice[0] & 1 != 0).then_some(i64::from(choice[0]) << 40),
        keep_empty: choice[0] & 2 != 0,
        decompressed_bytes_max: DECOMPRESSED_BYTES_MAX,
    };
    let bytes = Bytes::copy_from_slice(rest);
    let Ok((batch, _)) = RecordBatch::split_first(&bytes) else {
        return;
    };
    check(&batch, &options, mask);
    let mut fixed = BytesMut::from(&batch.as_bytes()[..]);
    let crc = compute_crc(&fixed);
    fixed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    if let Ok((fixed, _)) = RecordBatch::split_first(&fixed.freeze()) {
        check(&fixed, &options, mask);
    }
});

fn check(batch: &RecordBatch, options: &FilterOptions, mask: u64) {
    let mut seen = 0u32;
    let mut kept = 0u32;
    let result = filter_batch(batch, options, |_| {
        let keep = mask >> (seen % 64) & 1 == 1;
        seen += 1;
        kept += u32::from(keep);
        keep
    });
    let Ok(result) = result else { return };
    // The filter accepts exactly what the stored-batch check accepts (control batches too).
    assert!(validate_filtered(batch, DECOMPRESSED_BYTES_MAX).is_ok());
    if batch.header().is_control() {
        assert_eq!(result.outcome, Filtered::Unchanged);
        return;
    }
    assert_eq!(result.records_removed, seen - kept);
    match result.outcome {
        Filtered::Unchanged => assert_eq!(seen, kept),
        Filtered::Removed => assert!(kept == 0 && !options.keep_empty),
        Filtered::Rewritten { bytes, records_kept, .. } => {
            assert_eq!(records_kept, kept);
            let (filtered, rest) = RecordBatch::split_first(&bytes).expect("a rewritten batch parses");
            assert!(rest.is_empty());
            validate_filtered(&filtered, DECOMPRESSED_BYTES_MAX).expect("a rewritten batch is well formed");
            let decoded = filtered.records_bounded(DECOMPRESSED_BYTES_MAX).collect::<Result<Vec<_>, _>>();
            assert_eq!(decoded.expect("a rewritten batch decodes").len(), kept as usize);
            assert_eq!(filtered.header().base_offset, batch.header().base_offset);
            assert_eq!(filtered.header().last_offset_delta, batch.header().last_offset_delta);
        }
    }
}
