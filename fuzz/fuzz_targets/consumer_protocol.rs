//! A classic consumer's JoinGroup metadata and SyncGroup assignment, as the broker reads them
//! when it describes a group (subscribed topics, owners, lag): bytes a client chooses,
//! stored with the group and read again after every restart. Nothing may panic, and a
//! forged count must not make the reader allocate more than the input could hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (topics, partitions) = tidelog_broker::kafka::decode_consumer_protocol(data);
    // Each topic name takes at least its 2-byte length; each partition 4 bytes.
    if let Some(topics) = topics {
        assert!(topics * 2 <= data.len(), "{topics} topics from {} bytes", data.len());
    }
    if let Some(partitions) = partitions {
        assert!(partitions * 4 <= data.len(), "{partitions} partitions from {} bytes", data.len());
    }
});
