//! What can go wrong in the store, with the values an operator needs to act on it. Mapped to
//! Connect codes in exactly one place: `rpc::error`.

use crate::fact::Category;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "message_id {message_id:?} is already stored in category {category} at offset {offset} with different content"
    )]
    Conflict {
        message_id: String,
        category: Category,
        offset: u64,
    },
    #[error(
        "category {category} is {percent:.1}% full and safety-critical: new facts are refused until consumers catch up or retention is raised"
    )]
    Full { category: Category, percent: f64 },
    #[error("no consumer named {0:?} exists in JetStream")]
    UnknownConsumer(String),
    #[error("offset {offset} is beyond the last fetched offset {fetched} of consumer {consumer:?}")]
    BeyondFetched {
        consumer: String,
        offset: u64,
        fetched: u64,
    },
    #[error(
        "offsets {from} to {to} after the cursor of consumer {consumer:?} are gone from the stream (evicted or deleted) before they were confirmed; an operator may move the cursor past them with `bsfg skip-gap`, which records an audit fact"
    )]
    Gap {
        consumer: String,
        from: u64,
        to: u64,
    },
    #[error(
        "consumer {consumer:?} has deliveries in flight from an interrupted call; retry in a few seconds"
    )]
    InFlight { consumer: String },
    #[error("no object {key:?} in bucket {bucket:?}")]
    ObjectNotFound { bucket: String, key: String },
    #[error(
        "object {key:?} in bucket {bucket:?} already exists with digest {existing}; it is immutable"
    )]
    ObjectExists {
        bucket: String,
        key: String,
        existing: String,
    },
    /// A streamed put whose bytes were not the ones announced; nothing became visible.
    #[error("object {key:?} was not stored: {problem}")]
    ObjectMismatch { key: String, problem: String },
    /// A streamed put whose source failed before its last byte; nothing became visible.
    #[error("object {key:?} was not stored: its source failed after {received} bytes: {error}")]
    ObjectSource {
        key: String,
        received: u64,
        error: String,
    },
    #[error("offset {offset} is beyond the end of object {key:?} ({size} bytes)")]
    ObjectOffset { key: String, offset: u64, size: u64 },
    #[error("JetStream is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}
