//! Durable broker metadata (topics and their configuration) in sled, behind one trait.
//!
//! sled is beta software (its own README says so), pinned at 0.34; nothing outside this file
//! knows it is sled, so it can be swapped. Every value is framed as
//! `magic "TLMD" | version u16 BE | crc32 u32 BE of the body | body (TOML text)` so a damaged
//! record is detected rather than misread; see docs/storage-format.md.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::MetadataError;

const RECORD_MAGIC: &[u8; 4] = b"TLMD";
const RECORD_VERSION: u16 = 1;
const RECORD_HEADER_BYTES: usize = 4 + 2 + 4;
const TOPIC_KEY_PREFIX: &str = "topic/";

/// A topic as persisted: its partition count and the settings it overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub partitions: u32,
    pub created_ms: i64,
    #[serde(default)]
    pub overrides: TopicOverrides,
}

/// Per-topic settings; `None` inherits the broker default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOverrides {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<i64>,
    /// A flush policy in its text form ("always", "interval:<ms>", "never").
    pub flush: Option<String>,
    pub index_interval_bytes: Option<u32>,
}

/// Where the broker keeps what must survive a restart besides the logs themselves.
/// Every write is durable when it returns.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    fn topics(&self) -> Result<Vec<Result<TopicRecord, MetadataError>>, MetadataError>;
    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError>;
    /// Returns whether the topic existed.
    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError>;
}

/// The sled implementation of [`MetadataStore`].
#[derive(Debug)]
pub struct SledMetadataStore {
    db: sled::Db,
}

impl SledMetadataStore {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| MetadataError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { db })
    }
}

impl MetadataStore for SledMetadataStore {
    fn topics(&self) -> Result<Vec<Result<TopicRecord, MetadataError>>, MetadataError> {
        let mut topics = Vec::new();
        for entry in self.db.scan_prefix(TOPIC_KEY_PREFIX) {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            topics.push(decode_record(&key, &value));
        }
        Ok(topics)
    }

    fn put_topic(&self, record: &TopicRecord) -> Result<(), MetadataError> {
        let key = format!("{TOPIC_KEY_PREFIX}{}", record.name);
        let value = encode_record(&key, record)?;
        self.db.insert(key.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<bool, MetadataError> {
        let key = format!("{TOPIC_KEY_PREFIX}{name}");
        let existed = self.db.remove(key.as_bytes())?.is_some();
        self.db.flush()?;
        Ok(existed)
    }
}

fn encode_record<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, MetadataError> {
    let body = toml::to_string(value).map_err(|error| MetadataError::Encode {
        key: key.to_owned(),
        reason: error.to_string(),
    })?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    Ok(out)
}

fn decode_record<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, MetadataError> {
    let corrupt = |reason: String| MetadataError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    if value.len() < RECORD_HEADER_BYTES || &value[..4] != RECORD_MAGIC {
        return Err(corrupt("bad magic or short record".into()));
    }
    let version = u16::from_be_bytes([value[4], value[5]]);
    if version != RECORD_VERSION {
        return Err(corrupt(format!("unknown record version {version}")));
    }
    let crc = u32::from_be_bytes([value[6], value[7], value[8], value[9]]);
    let body = &value[RECORD_HEADER_BYTES..];
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let text = std::str::from_utf8(body).map_err(|error| corrupt(error.to_string()))?;
    toml::from_str(text).map_err(|error| corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            partitions: 3,
            created_ms: 1,
            overrides: TopicOverrides {
                retention_ms: Some(1000),
                flush: Some("never".into()),
                ..TopicOverrides::default()
            },
        }
    }

    #[test]
    fn topics_survive_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledMetadataStore::open(dir.path()).unwrap();
            store.put_topic(&record("a")).unwrap();
            store.put_topic(&record("b")).unwrap();
            assert!(store.delete_topic("a").unwrap());
            assert!(!store.delete_topic("missing").unwrap());
        }
        let store = SledMetadataStore::open(dir.path()).unwrap();
        let topics: Vec<TopicRecord> = store.topics().unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(topics, vec![record("b")]);
    }

    #[test]
    fn damaged_record_is_reported_as_corrupt() {
        let mut encoded = encode_record("topic/x", &record("x")).unwrap();
        let last = encoded.len() - 1;
        encoded[last] ^= 1;
        let decoded: Result<TopicRecord, _> = decode_record("topic/x", &encoded);
        assert!(matches!(decoded, Err(MetadataError::Corrupt { .. })));
        let decoded: Result<TopicRecord, _> = decode_record("topic/x", b"TL");
        assert!(matches!(decoded, Err(MetadataError::Corrupt { .. })));
    }
}
