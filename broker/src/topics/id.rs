//! Topic ids: a random version 4 UUID per incarnation of a topic name (a create after a delete
//! gets a new one), the id Kafka clients see in Metadata v10+ and address DeleteTopics v6 by.
//! Stored as 32 lowercase hex digits in the record and the manifest, the form that also names
//! the topic's directory under `creating/` and `deleting/`. Ids written before UUIDs (time,
//! process id and counter) are not version 4 UUIDs; the registry replaces them at start.

use uuid::{Uuid, Variant};

/// A fresh random id in its stored form. A version 4 UUID is never Kafka's reserved zero
/// (`AAAAAAAAAAAAAAAAAAAAAA`) or metadata-topic (`...AQ`) id: its version bits are set.
pub(crate) fn new_topic_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The UUID of a stored id, if it is one this broker issues (random, version 4); `None` for
/// an empty id or one from before UUIDs.
pub(crate) fn parse(stored: &str) -> Option<Uuid> {
    Uuid::try_parse(stored)
        .ok()
        .filter(|id| id.get_version_num() == 4 && id.get_variant() == Variant::RFC4122)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_random_v4_uuids_and_legacy_ids_are_not() {
        let first = new_topic_id();
        assert_eq!(first.len(), 32);
        assert!(parse(&first).is_some());
        assert_ne!(parse(&first), parse(&new_topic_id()));
        assert_eq!(parse(&first).unwrap().simple().to_string(), first);
        // The layout of ids issued before UUIDs: nanoseconds, process id, counter. The
        // process id's leading hex digit (< 2^28) is 0, so the variant bits never match.
        let legacy = format!(
            "{:016x}{:08x}{:08x}",
            0x1874_4a5b_c3d2_e1f0u64, 4_194_304u32, 7u32
        );
        assert!(parse(&legacy).is_none());
        assert!(parse("").is_none());
        assert!(parse("id-of-orders").is_none());
        assert!(parse(&Uuid::nil().simple().to_string()).is_none());
    }
}
