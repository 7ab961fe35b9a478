//! A produce request's records, as the broker validates them, and a fetch response's, as the
//! client decodes them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidelog_proto::batch::BatchIter;

fuzz_target!(|data: &[u8]| {
    for batch in BatchIter::new(Bytes::copy_from_slice(data)) {
        let Ok(batch) = batch else { break };
        let valid = batch.validate().is_ok();
        let mut decoded = 0usize;
        for record in batch.records() {
            if record.is_err() {
                assert!(!valid, "a batch that validates must decode");
                break;
            }
            decoded += 1;
        }
        if valid {
            assert_eq!(decoded, batch.header().record_count as usize);
        }
    }
});
