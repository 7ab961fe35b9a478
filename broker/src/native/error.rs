//! The one place the native front end turns the core's error codes into its wire's.

use tidelog_proto::pb;

use crate::core::{CoreError, ErrorCode};

/// The native wire code for a core code. Both use Kafka's numbering, so this is the identity
/// wherever the native schema has the code; a Kafka-only code the native protocol lacks (none
/// of the operations native clients call produces one) is sent as UNKNOWN_SERVER_ERROR.
pub(crate) fn error_code(code: ErrorCode) -> pb::ErrorCode {
    pb::ErrorCode::try_from(i32::from(code.code())).unwrap_or(pb::ErrorCode::UnknownServerError)
}

/// A core failure as the native handlers carry it: wire code and message.
pub(crate) fn wire(error: CoreError) -> (pb::ErrorCode, String) {
    (error_code(error.code), error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_code_maps_from_the_core_code_of_the_same_number() {
        let pairs = [
            (ErrorCode::None, pb::ErrorCode::None),
            (ErrorCode::UnknownServerError, pb::ErrorCode::UnknownServerError),
            (ErrorCode::OffsetOutOfRange, pb::ErrorCode::OffsetOutOfRange),
            (ErrorCode::CorruptMessage, pb::ErrorCode::CorruptMessage),
            (
                ErrorCode::OffsetMetadataTooLarge,
                pb::ErrorCode::OffsetMetadataTooLarge,
            ),
            (
                ErrorCode::UnknownTopicOrPartition,
                pb::ErrorCode::UnknownTopicOrPartition,
            ),
            (ErrorCode::RequestTimedOut, pb::ErrorCode::RequestTimedOut),
            (ErrorCode::MessageTooLarge, pb::ErrorCode::MessageTooLarge),
            (
                ErrorCode::CoordinatorNotAvailable,
                pb::ErrorCode::CoordinatorNotAvailable,
            ),
            (ErrorCode::InvalidTopic, pb::ErrorCode::InvalidTopic),
            (ErrorCode::RecordListTooLarge, pb::ErrorCode::RecordListTooLarge),
            (ErrorCode::IllegalGeneration, pb::ErrorCode::IllegalGeneration),
            (ErrorCode::InvalidGroupId, pb::ErrorCode::InvalidGroupId),
            (ErrorCode::UnknownMemberId, pb::ErrorCode::UnknownMemberId),
            (
                ErrorCode::InvalidSessionTimeout,
                pb::ErrorCode::InvalidSessionTimeout,
            ),
            (ErrorCode::RebalanceInProgress, pb::ErrorCode::RebalanceInProgress),
            (ErrorCode::UnsupportedVersion, pb::ErrorCode::UnsupportedVersion),
            (ErrorCode::TopicAlreadyExists, pb::ErrorCode::TopicAlreadyExists),
            (ErrorCode::InvalidPartitions, pb::ErrorCode::InvalidPartitions),
            (ErrorCode::InvalidConfig, pb::ErrorCode::InvalidConfig),
            (ErrorCode::InvalidRequest, pb::ErrorCode::InvalidRequest),
            (
                ErrorCode::UnsupportedForMessageFormat,
                pb::ErrorCode::UnsupportedForMessageFormat,
            ),
            (
                ErrorCode::OutOfOrderSequenceNumber,
                pb::ErrorCode::OutOfOrderSequenceNumber,
            ),
            (
                ErrorCode::DuplicateSequenceNumber,
                pb::ErrorCode::DuplicateSequenceNumber,
            ),
            (
                ErrorCode::InvalidProducerEpoch,
                pb::ErrorCode::InvalidProducerEpoch,
            ),
            (ErrorCode::KafkaStorageError, pb::ErrorCode::KafkaStorageError),
            (ErrorCode::UnknownProducerId, pb::ErrorCode::UnknownProducerId),
            (ErrorCode::NonEmptyGroup, pb::ErrorCode::NonEmptyGroup),
            (ErrorCode::GroupMaxSizeReached, pb::ErrorCode::GroupMaxSizeReached),
            (ErrorCode::GroupIdNotFound, pb::ErrorCode::GroupIdNotFound),
            (
                ErrorCode::ThrottlingQuotaExceeded,
                pb::ErrorCode::ThrottlingQuotaExceeded,
            ),
            (
                ErrorCode::UnsupportedCompressionType,
                pb::ErrorCode::UnsupportedCompressionType,
            ),
            (ErrorCode::ProducerFenced, pb::ErrorCode::ProducerFenced),
            (ErrorCode::FencedMemberEpoch, pb::ErrorCode::FencedMemberEpoch),
            (
                ErrorCode::UnreleasedInstanceId,
                pb::ErrorCode::UnreleasedInstanceId,
            ),
            (ErrorCode::StaleMemberEpoch, pb::ErrorCode::StaleMemberEpoch),
            (ErrorCode::BrokerShuttingDown, pb::ErrorCode::BrokerShuttingDown),
            (ErrorCode::TooManyConnections, pb::ErrorCode::TooManyConnections),
            (ErrorCode::InvalidRecord, pb::ErrorCode::InvalidRecord),
            (ErrorCode::ExpectationFailed, pb::ErrorCode::ExpectationFailed),
            (ErrorCode::StreamErased, pb::ErrorCode::StreamErased),
        ];
        for (core, native) in pairs {
            assert_eq!(error_code(core), native, "{core:?}");
        }
        assert_eq!(
            error_code(ErrorCode::NotCoordinator),
            pb::ErrorCode::UnknownServerError
        );
    }
}
