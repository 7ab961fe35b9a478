//! The Kafka front end (placeholder until the kafka-net listener lands: only the group
//! handlers live here so far).

pub(crate) mod handlers;
