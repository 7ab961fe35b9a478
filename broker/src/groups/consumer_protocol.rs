//! Reads the standard consumer protocol's embedded payloads (Kafka's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`, versions 0-3), which
//! classic consumers put in their JoinGroup metadata and SyncGroup assignments. The group
//! itself treats them as opaque bytes; only describing a group (subscribed topics, who owns
//! what, lag) looks inside. Both are non-flexible encodings that begin with a version, then
//! the field read here: an array of topic names, or of (topic, partitions). Anything that
//! does not parse is reported as `None`: the payload belongs to some other protocol.

use std::collections::BTreeSet;

use super::assignor::Assignment;

/// Bounds what a malformed count can make the reader allocate: never more entries than
/// bytes left to hold them.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        let bytes = self.take(2)?;
        Some(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        let bytes = self.take(4)?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Option<String> {
        let length = usize::try_from(self.i16()?).ok()?;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// An array count, checked against the bytes left at `min_entry_bytes` each.
    fn count(&mut self, min_entry_bytes: usize) -> Option<usize> {
        let count = usize::try_from(self.i32()?).ok()?;
        (count.saturating_mul(min_entry_bytes) <= self.bytes.len()).then_some(count)
    }
}

/// The topics a consumer subscribes to.
pub fn subscription_topics(metadata: &[u8]) -> Option<BTreeSet<String>> {
    let mut reader = Reader { bytes: metadata };
    let version = reader.i16()?;
    if version < 0 {
        return None;
    }
    let count = reader.count(2)?;
    (0..count).map(|_| reader.string()).collect()
}

/// The partitions a consumer was assigned.
pub fn assignment_partitions(assignment: &[u8]) -> Option<Assignment> {
    if assignment.is_empty() {
        // A member the leader gave nothing.
        return Some(Assignment::new());
    }
    let mut reader = Reader { bytes: assignment };
    let version = reader.i16()?;
    if version < 0 {
        return None;
    }
    let topics = reader.count(6)?;
    let mut out = Assignment::new();
    for _ in 0..topics {
        let topic = reader.string()?;
        let partitions = reader.count(4)?;
        let mut set = BTreeSet::new();
        for _ in 0..partitions {
            set.insert(u32::try_from(reader.i32()?).ok()?);
        }
        if !set.is_empty() {
            out.entry(topic).or_default().extend(set);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as i16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    #[test]
    fn subscription_and_assignment_are_read() {
        let mut subscription = 1i16.to_be_bytes().to_vec();
        subscription.extend_from_slice(&2i32.to_be_bytes());
        string(&mut subscription, "orders");
        string(&mut subscription, "payments");
        subscription.extend_from_slice(&(-1i32).to_be_bytes()); // user data: null
        subscription.extend_from_slice(&0i32.to_be_bytes()); // owned partitions
        let topics = subscription_topics(&subscription).expect("parses");
        assert_eq!(topics.into_iter().collect::<Vec<_>>(), ["orders", "payments"]);

        let mut assignment = 0i16.to_be_bytes().to_vec();
        assignment.extend_from_slice(&1i32.to_be_bytes());
        string(&mut assignment, "orders");
        assignment.extend_from_slice(&2i32.to_be_bytes());
        assignment.extend_from_slice(&0i32.to_be_bytes());
        assignment.extend_from_slice(&2i32.to_be_bytes());
        assignment.extend_from_slice(&(-1i32).to_be_bytes());
        let partitions = assignment_partitions(&assignment).expect("parses");
        assert_eq!(partitions["orders"].iter().copied().collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn garbage_is_none_and_never_allocates_a_huge_count() {
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(subscription_topics(&huge), None);
        assert_eq!(assignment_partitions(&huge), None);
        assert_eq!(subscription_topics(b"\x00"), None);
        assert_eq!(assignment_partitions(b"\xff\xff"), None);
        assert_eq!(assignment_partitions(b""), Some(Assignment::new()));
    }
}
