//! Hand codecs for the old admin versions kafka-protocol 0.18 lacks: CreateTopics v0-1,
//! DeleteTopics v0 and DescribeConfigs v0 (requests and responses). All are non-flexible:
//! big-endian integers, INT16-length strings (-1: null), INT32-count arrays. The layouts are
//! those of Kafka's message specs (clients/src/main/resources/common/message/*.json); each
//! decodes into, or encodes from, the crate's struct of the lowest version it has, so the
//! handlers see one type.
//!
//! * CreateTopics request v0: `topics [name STRING, num_partitions INT32, replication_factor
//!   INT16, assignments [partition_index INT32, broker_ids [INT32]], configs [name STRING,
//!   value NULLABLE_STRING]], timeout_ms INT32`; v1 appends `validate_only BOOLEAN` (and is
//!   then byte for byte v2, which the crate decodes).
//! * CreateTopics response v0: `topics [name STRING, error_code INT16]`; v1 adds
//!   `error_message NULLABLE_STRING` to each topic. (v2 puts `throttle_time_ms` in front.)
//! * DeleteTopics request v0 is byte for byte v1 (`topic_names [STRING], timeout_ms INT32`);
//!   the response v0 lacks v1's leading `throttle_time_ms`: `responses [name STRING,
//!   error_code INT16]`.
//! * DescribeConfigs request v0: `resources [resource_type INT8, resource_name STRING,
//!   configuration_keys NULLABLE [STRING]]` (v1 appends `include_synonyms`); the response v0:
//!   `throttle_time_ms INT32, results [error_code INT16, error_message NULLABLE_STRING,
//!   resource_type INT8, resource_name STRING, configs [name STRING, value NULLABLE_STRING,
//!   read_only BOOLEAN, is_default BOOLEAN, is_sensitive BOOLEAN]]`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Why an old-version body does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LegacyError {
    #[error("the body ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{what} has a negative or impossible length {length}")]
    BadLength { what: &'static str, length: i64 },
    #[error("{0} bytes follow the last field")]
    TrailingBytes(usize),
}

/// Reads the fields of a non-flexible body, front to back.
struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn take(&mut self, count: usize, what: &'static str) -> Result<Bytes, LegacyError> {
        if self.bytes.len() < count {
            return Err(LegacyError::Truncated(what));
        }
        Ok(self.bytes.split_to(count))
    }

    fn i8(&mut self, what: &'static str) -> Result<i8, LegacyError> {
        Ok(self.take(1, what)?[0] as i8)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, LegacyError> {
        let bytes = self.take(2, what)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, LegacyError> {
        let bytes = self.take(4, what)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<StrBytes>, LegacyError> {
        let length = self.i16(what)?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| LegacyError::BadLength {
            what,
            length: i64::from(length),
        })?;
        let bytes = self.take(length, what)?;
        StrBytes::from_utf8(bytes)
            .map(Some)
            .map_err(|_| LegacyError::NotUtf8(what))
    }

    fn string(&mut self, what: &'static str) -> Result<StrBytes, LegacyError> {
        self.nullable_string(what)?
            .ok_or(LegacyError::BadLength { what, length: -1 })
    }

    /// An array's element count; `None` for a null array. Bounded by the bytes left (every
    /// element takes at least `element_bytes_min`), so a forged count allocates nothing.
    fn count(&mut self, what: &'static str, element_bytes_min: usize) -> Result<Option<usize>, LegacyError> {
        let count = self.i32(what)?;
        if count == -1 {
            return Ok(None);
        }
        let length = i64::from(count);
        let count = usize::try_from(count).map_err(|_| LegacyError::BadLength { what, length })?;
        if count.saturating_mul(element_bytes_min) > self.bytes.len() {
            return Err(LegacyError::BadLength { what, length });
        }
        Ok(Some(count))
    }

    fn array<T>(
        &mut self,
        what: &'static str,
        element_bytes_min: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, LegacyError>,
    ) -> Result<Option<Vec<T>>, LegacyError> {
        let Some(count) = self.count(what, element_bytes_min)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(Some(out))
    }

    fn end(self) -> Result<(), LegacyError> {
        match self.bytes.len() {
            0 => Ok(()),
            left => Err(LegacyError::TrailingBytes(left)),
        }
    }
}

/// Decodes a CreateTopics v0 request body (v1 and later: the crate).
pub(crate) fn decode_create_topics_v0(body: Bytes) -> Result<CreateTopicsRequest, LegacyError> {
    let mut reader = Reader { bytes: body };
    let topics = reader
        .array("topics", 2 + 4 + 2 + 4 + 4, |reader| {
            let mut topic = CreatableTopic::default();
            topic.name = TopicName(reader.string("topic name")?);
            topic.num_partitions = reader.i32("num_partitions")?;
            topic.replication_factor = reader.i16("replication_factor")?;
            topic.assignments = reader
                .array("assignments", 4 + 4, |reader| {
                    let mut assignment = CreatableReplicaAssignment::default();
                    assignment.partition_index = reader.i32("partition_index")?;
                    assignment.broker_ids = reader
                        .array("broker_ids", 4, |reader| reader.i32("broker id").map(BrokerId))?
                        .unwrap_or_default();
                    Ok(assignment)
                })?
                .unwrap_or_default();
            topic.configs = reader
                .array("configs", 2 + 2, |reader| {
                    let mut config = CreatableTopicConfig::default();
                    config.name = reader.string("config name")?;
                    config.value = reader.nullable_string("config value")?;
                    Ok(config)
                })?
                .unwrap_or_default();
            Ok(topic)
        })?
        .unwrap_or_default();
    let timeout_ms = reader.i32("timeout_ms")?;
    reader.end()?;
    let mut request = CreateTopicsRequest::default();
    request.topics = topics;
    request.timeout_ms = timeout_ms;
    request.validate_only = false;
    Ok(request)
}

/// Decodes a DescribeConfigs v0 request body.
pub(crate) fn decode_describe_configs_v0(body: Bytes) -> Result<DescribeConfigsRequest, LegacyError> {
    let mut reader = Reader { bytes: body };
    let resources = reader
        .array("resources", 1 + 2 + 4, |reader| {
            let mut resource = DescribeConfigsResource::default();
            resource.resource_type = reader.i8("resource_type")?;
            resource.resource_name = reader.string("resource_name")?;
            resource.configuration_keys =
                reader.array("configuration_keys", 2, |reader| reader.string("config name"))?;
            Ok(resource)
        })?
        .unwrap_or_default();
    reader.end()?;
    let mut request = DescribeConfigsRequest::default();
    request.resources = resources;
    request.include_synonyms = false;
    request.include_documentation = false;
    Ok(request)
}

fn put_string(out: &mut BytesMut, value: &str) {
    // Names and messages here are topic names (<= 249 bytes), config names and values and
    // error messages the broker writes: far below i16::MAX; longer text is cut, not wrapped.
    let bytes = &value.as_bytes()[..value.len().min(i16::MAX as usize)];
    out.put_i16(bytes.len() as i16);
    out.put_slice(bytes);
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_count(out: &mut BytesMut, count: usize) {
    out.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
}

/// Encodes a CreateTopics response in v0 or v1 (the fields those versions carry).
pub(crate) fn encode_create_topics_v0_v1(response: &CreateTopicsResponse, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    put_count(&mut out, response.topics.len());
    for topic in &response.topics {
        put_string(&mut out, topic.name.0.as_str());
        out.put_i16(topic.error_code);
        if version >= 1 {
            put_nullable_string(&mut out, topic.error_message.as_ref().map(StrBytes::as_str));
        }
    }
    out.freeze()
}

/// Encodes a DeleteTopics response in v0.
pub(crate) fn encode_delete_topics_v0(response: &DeleteTopicsResponse) -> Bytes {
    let mut out = BytesMut::new();
    put_count(&mut out, response.responses.len());
    for topic in &response.responses {
        put_string(&mut out, topic.name.as_ref().map_or("", |name| name.0.as_str()));
        out.put_i16(topic.error_code);
    }
    out.freeze()
}

/// Encodes a DescribeConfigs response in v0: `is_default` stands where later versions have
/// `config_source` (true unless the value is the resource's own: Kafka's source 1, the
/// topic's config).
pub(crate) fn encode_describe_configs_v0(response: &DescribeConfigsResponse) -> Bytes {
    const SOURCE_TOPIC_CONFIG: i8 = 1;
    let mut out = BytesMut::new();
    out.put_i32(response.throttle_time_ms);
    put_count(&mut out, response.results.len());
    for result in &response.results {
        out.put_i16(result.error_code);
        put_nullable_string(&mut out, result.error_message.as_ref().map(StrBytes::as_str));
        out.put_i8(result.resource_type);
        put_string(&mut out, result.resource_name.as_str());
        put_count(&mut out, result.configs.len());
        for config in &result.configs {
            put_string(&mut out, config.name.as_str());
            put_nullable_string(&mut out, config.value.as_ref().map(StrBytes::as_str));
            out.put_u8(u8::from(config.read_only));
            out.put_u8(u8::from(config.config_source != SOURCE_TOPIC_CONFIG));
            out.put_u8(u8::from(config.is_sensitive));
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };

    use super::*;

    /// Builds a big-endian body from parts, as the specs lay them out.
    fn body(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = (text.len() as i16).to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    proptest::proptest! {
        /// The decoders read client bytes: any input gives a request or an error, never a
        /// panic or an allocation beyond the input's size.
        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = decode_create_topics_v0(Bytes::from(bytes.clone()));
            let _ = decode_describe_configs_v0(Bytes::from(bytes));
        }
    }

    #[test]
    fn create_topics_v0_request_decodes_from_the_spec_layout() {
        let bytes = body(&[
            &1i32.to_be_bytes(),
            &string("orders"),
            &3i32.to_be_bytes(),
            &1i16.to_be_bytes(),
            &1i32.to_be_bytes(), // one assignment
            &0i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &0i32.to_be_bytes(),
            &2i32.to_be_bytes(), // two configs
            &string("retention.ms"),
            &string("1000"),
            &string("segment.ms"),
            &(-1i16).to_be_bytes(),
            &5000i32.to_be_bytes(),
        ]);
        let request = decode_create_topics_v0(bytes.clone()).unwrap();
        assert_eq!(request.timeout_ms, 5000);
        assert!(!request.validate_only);
        let topic = &request.topics[0];
        assert_eq!(topic.name.0.as_str(), "orders");
        assert_eq!((topic.num_partitions, topic.replication_factor), (3, 1));
        assert_eq!(topic.assignments[0].broker_ids, vec![BrokerId(0)]);
        assert_eq!(topic.configs[0].value.as_ref().unwrap().as_str(), "1000");
        assert_eq!(topic.configs[1].value, None);
        // Every truncation and a trailing byte are errors, never a panic.
        for length in 0..bytes.len() {
            assert!(
                decode_create_topics_v0(bytes.slice(..length)).is_err(),
                "{length}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            decode_create_topics_v0(Bytes::from(longer)),
            Err(LegacyError::TrailingBytes(1))
        );
        // A forged count allocates nothing.
        let forged = body(&[&i32::MAX.to_be_bytes()]);
        assert!(matches!(
            decode_create_topics_v0(forged),
            Err(LegacyError::BadLength { .. })
        ));
    }

    #[test]
    fn describe_configs_v0_request_decodes_from_the_spec_layout() {
        let bytes = body(&[
            &2i32.to_be_bytes(),
            &[2u8],
            &string("orders"),
            &1i32.to_be_bytes(),
            &string("retention.ms"),
            &[4u8],
            &string("0"),
            &(-1i32).to_be_bytes(),
        ]);
        let request = decode_describe_configs_v0(bytes.clone()).unwrap();
        assert_eq!(request.resources.len(), 2);
        assert_eq!(request.resources[0].resource_type, 2);
        assert_eq!(
            request.resources[0].configuration_keys.as_ref().unwrap()[0].as_str(),
            "retention.ms"
        );
        assert_eq!(request.resources[1].resource_name.as_str(), "0");
        assert_eq!(request.resources[1].configuration_keys, None);
        for length in 0..bytes.len() {
            assert!(
                decode_describe_configs_v0(bytes.slice(..length)).is_err(),
                "{length}"
            );
        }
    }

    #[test]
    fn old_responses_encode_in_the_spec_layout() {
        let mut topic = CreatableTopicResult::default();
        topic.name = TopicName(StrBytes::from_static_str("t"));
        topic.error_code = 36;
        topic.error_message = Some(StrBytes::from_static_str("exists"));
        let mut response = CreateTopicsResponse::default();
        response.topics = vec![topic];
        let v0 = body(&[&1i32.to_be_bytes(), &string("t"), &36i16.to_be_bytes()]);
        assert_eq!(encode_create_topics_v0_v1(&response, 0), v0);
        let v1 = body(&[&v0, &string("exists")]);
        assert_eq!(encode_create_topics_v0_v1(&response, 1), v1);

        let mut deleted = DeletableTopicResult::default();
        deleted.name = Some(TopicName(StrBytes::from_static_str("t")));
        deleted.error_code = 3;
        let mut response = DeleteTopicsResponse::default();
        response.throttle_time_ms = 7;
        response.responses = vec![deleted];
        assert_eq!(
            encode_delete_topics_v0(&response),
            body(&[&1i32.to_be_bytes(), &string("t"), &3i16.to_be_bytes()])
        );

        let mut config = DescribeConfigsResourceResult::default();
        config.name = StrBytes::from_static_str("retention.ms");
        config.value = Some(StrBytes::from_static_str("1000"));
        config.config_source = 1;
        let mut fixed = DescribeConfigsResourceResult::default();
        fixed.name = StrBytes::from_static_str("cleanup.policy");
        fixed.value = Some(StrBytes::from_static_str("delete"));
        fixed.read_only = true;
        fixed.config_source = 5;
        let mut result = DescribeConfigsResult::default();
        result.resource_type = 2;
        result.error_message = None;
        result.resource_name = StrBytes::from_static_str("t");
        result.configs = vec![config, fixed];
        let mut response = DescribeConfigsResponse::default();
        response.results = vec![result];
        assert_eq!(
            encode_describe_configs_v0(&response),
            body(&[
                &0i32.to_be_bytes(),
                &1i32.to_be_bytes(),
                &0i16.to_be_bytes(),
                &(-1i16).to_be_bytes(),
                &[2u8],
                &string("t"),
                &2i32.to_be_bytes(),
                &string("retention.ms"),
                &string("1000"),
                &[0u8, 0, 0],
                &string("cleanup.policy"),
                &string("delete"),
                &[1u8, 1, 0],
            ])
        );
    }
}
