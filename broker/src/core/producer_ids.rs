//! InitProducerId: gives an idempotent producer its id and epoch. A new producer (id -1) gets
//! an id never handed out before (see `metadata::ProducerIdAllocator`) with epoch 0; a producer
//! that passes its id and epoch gets the next epoch, which fences its older incarnations on
//! every partition it then writes to. Past `i16::MAX` epochs it gets a fresh id instead. An id
//! not handed out yet cannot be bumped (it would collide with the producer that gets it).
//!
//! The broker keeps no per-producer record here: fencing happens in each partition's log
//! (`PartitionLog::append` refuses an epoch older than the newest it has seen).

use std::sync::Arc;

use tidelog_proto::batch::NO_PRODUCER_ID;

use super::error::without_paths;
use super::{blocking, Core, CoreError, Decided, ErrorCode};

/// A producer's identity: its id and the epoch it writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// What `Core::init_producer_id` decided without touching the store.
enum Decision {
    Bumped(ProducerIdAndEpoch),
    Allocate,
}

impl Core {
    /// A new producer id (`producer_id` -1) or the next epoch of an existing one. A bump is
    /// decided at once; a new id may write the metadata store, off the async workers.
    ///
    /// # Errors
    /// INVALID_REQUEST for an id or epoch that cannot be bumped, KAFKA_STORAGE_ERROR when the
    /// id counter could not be persisted.
    pub(crate) fn init_producer_id(
        self: &Arc<Self>,
        producer_id: i64,
        producer_epoch: i32,
    ) -> Decided<ProducerIdAndEpoch> {
        match self.bump_producer_epoch(producer_id, producer_epoch) {
            Ok(Decision::Bumped(bumped)) => return Decided::Ready(Ok(bumped)),
            Ok(Decision::Allocate) => {}
            Err(error) => return Decided::Ready(Err(error)),
        }
        let core = self.clone();
        Decided::Pending(Box::pin(async move {
            // Blocking: handing out a new block of ids writes the metadata store.
            match blocking(move || core.producer_ids.allocate()).await? {
                Ok(id) => Ok(ProducerIdAndEpoch {
                    producer_id: id,
                    producer_epoch: 0,
                }),
                Err(error) => {
                    tracing::error!(%error, "could not allocate a producer id");
                    Err(CoreError::new(
                        ErrorCode::KafkaStorageError,
                        without_paths(&error.to_string()),
                    ))
                }
            }
        }))
    }

    /// The epoch rules, decided in memory.
    fn bump_producer_epoch(&self, producer_id: i64, producer_epoch: i32) -> Result<Decision, CoreError> {
        if producer_id == NO_PRODUCER_ID {
            return Ok(Decision::Allocate);
        }
        let valid_epoch = (0..=i32::from(i16::MAX)).contains(&producer_epoch);
        if producer_id < 0 || !valid_epoch {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!("producer id {producer_id} with epoch {producer_epoch} cannot be bumped"),
            ));
        }
        if !self.producer_ids.may_have_handed_out(producer_id) {
            // A bump of an id this broker has not handed out yet would collide with the
            // producer that later gets it.
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!("producer id {producer_id} was never handed out by this broker"),
            ));
        }
        match i16::try_from(producer_epoch + 1) {
            Ok(next) => Ok(Decision::Bumped(ProducerIdAndEpoch {
                producer_id,
                producer_epoch: next,
            })),
            // Epochs exhausted: like Kafka, start over with a new id.
            Err(_) => Ok(Decision::Allocate),
        }
    }
}
