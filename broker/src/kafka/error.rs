//! The one mapping from the core's error codes to the numbers a Kafka client is sent. The
//! core numbers its codes as Kafka does; only Tidelog's own codes (above 1000) need a Kafka
//! stand-in.

use crate::core::ErrorCode;

/// The Kafka error code for `code`.
pub(crate) fn kafka_code(code: ErrorCode) -> i16 {
    match code {
        // Retriable for every Kafka client: it refreshes metadata and retries, by which time
        // the broker is back (or another one leads).
        ErrorCode::BrokerShuttingDown => ErrorCode::NotLeaderOrFollower.code(),
        // Never answered (such a connection is closed); a client reading it retries later.
        ErrorCode::TooManyConnections => ErrorCode::RequestTimedOut.code(),
        // A failed expectation is about the records sent: Kafka's INVALID_RECORD, which no
        // client retries, with the per-record errors saying expected and actual (Produce v8+).
        ErrorCode::ExpectationFailed => ErrorCode::InvalidRecord.code(),
        // Records for an erased stream: refused for what they are, like a failed expectation.
        ErrorCode::StreamErased => ErrorCode::InvalidRecord.code(),
        other => other.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_numbered_codes_pass_and_tidelog_codes_are_replaced() {
        assert_eq!(kafka_code(ErrorCode::UnknownTopicOrPartition), 3);
        assert_eq!(kafka_code(ErrorCode::None), 0);
        assert_eq!(kafka_code(ErrorCode::BrokerShuttingDown), 6);
        assert!(kafka_code(ErrorCode::TooManyConnections) < 1000);
        assert_eq!(kafka_code(ErrorCode::ExpectationFailed), 87);
        assert_eq!(kafka_code(ErrorCode::StreamErased), 87);
    }
}
