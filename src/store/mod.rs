//! The Store port: what the RPC layer and the pull loop need from a zone's durable log and object
//! store — append a fact idempotently, page through a durable consumer, confirm, and keep
//! artifacts. `jetstream.rs` is the real adapter; `memory.rs` is an in-memory one for unit tests
//! of the layers above (never used by `bsfg serve`).
//!
//! The port never sees certificates, identities or wire encodings: authorization and validation
//! happen above it.

mod append;
mod atomic_batch;
pub mod audit;
mod batch_get;
mod consumers;
mod error;
pub mod eviction;
mod firmware;
pub mod gap;
pub mod jetstream;
#[cfg(test)]
pub mod memory;
mod object_index;
mod object_read;
mod objects;
pub mod report;
mod verify;

pub use error::StoreError;
pub use object_index::{ObjectReadCounters, object_read_counters};

use crate::{
    config::ConsumerSpec,
    fact::Category,
    proto::{Envelope, Fact, StoredFact},
};
use bytes::Bytes;
use std::{future::Future, time::Duration};
use tokio::io::AsyncRead;

/// A validated fact to append, with its idempotency content hash.
#[derive(Debug, Clone, Copy)]
pub struct NewFact<'a> {
    pub category: Category,
    pub envelope: &'a Envelope,
    pub fact: &'a Fact,
    pub content_hash: [u8; 32],
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    /// Where the fact is stored: the category appended to, or for a duplicate the category the
    /// original was first appended to (idempotency is the node's, SPEC §2).
    pub category: Category,
    pub duplicate: bool,
}

/// One page after a consumer's cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub facts: Vec<StoredFact>,
    pub high_watermark: u64,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// An artifact to store from a stream, and what its bytes must be before it becomes visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedObject<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub media_type: &'a str,
    pub size: u64,
    /// `sha256:<hex>`
    pub digest: &'a str,
}

/// A bounded piece of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChunk {
    pub info: ObjectInfo,
    pub data: Bytes,
    pub eof: bool,
}

/// Fill of a category stream, for backpressure and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoryFill {
    pub bytes: u64,
    pub max_bytes: i64,
    pub percent: f64,
}

/// The longest prefix of `facts` whose encoded size (as repeated fields of a response, with a
/// few bytes of framing each) stays within `max_bytes`; never empty when `facts` is not, so one
/// fact larger than the budget still moves the consumer on.
pub fn within_budget(mut facts: Vec<StoredFact>, max_bytes: usize) -> Vec<StoredFact> {
    let mut used = 0;
    let mut keep = 0;
    for stored in &facts {
        used += prost::Message::encoded_len(stored) + 8;
        if used > max_bytes && keep > 0 {
            break;
        }
        keep += 1;
    }
    facts.truncate(keep);
    facts
}

/// [`Store::append_page`] one fact at a time, up to and including the first error.
async fn append_each<S: Store + ?Sized>(
    store: &S,
    facts: &[NewFact<'_>],
) -> Vec<Result<Appended, StoreError>> {
    let mut results = Vec::with_capacity(facts.len());
    for new in facts {
        let result = store.append(*new).await;
        let failed = result.is_err();
        results.push(result);
        if failed {
            break;
        }
    }
    results
}

pub trait Store: Send + Sync + 'static {
    /// Appends a fact; durable when this returns Ok. Same message_id and content hash → the
    /// original offset with `duplicate`; same id, other hash → [`StoreError::Conflict`].
    fn append(
        &self,
        fact: NewFact<'_>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Appends a page of facts in order, each with [`Store::append`]'s rules; one result per
    /// fact up to and including the first error (the facts after it are not appended). Durable
    /// when every result is Ok. A store may pipeline the page (JetStream: one round trip for the
    /// page's idempotency lookups, then every publish sent before the first acknowledgement is
    /// awaited); this default appends one at a time.
    fn append_page<'a>(
        &'a self,
        facts: &'a [NewFact<'a>],
    ) -> impl Future<Output = Vec<Result<Appended, StoreError>>> + Send + 'a {
        append_each(self, facts)
    }

    /// The page right after the consumer's cursor, at most `limit` facts and about `max_bytes`
    /// of encoded facts (always at least one fact; see [`within_budget`]). Waits up to
    /// `max_wait` for a first fact when none is available. Does not move the cursor; records the
    /// last offset of the page as fetched, so confirming beyond what a response carried is
    /// refused (SPEC §4) — the caller must send the whole page it gets.
    fn fetch(
        &self,
        consumer: &ConsumerSpec,
        limit: u32,
        max_bytes: usize,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Moves the cursor to `offset`; returns the cursor afterwards.
    fn confirm(
        &self,
        consumer: &ConsumerSpec,
        offset: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The consumer's cursor and the stream's last offset.
    fn cursor(
        &self,
        consumer: &ConsumerSpec,
    ) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send;

    /// The facts after the consumer's cursor that retention deleted before anyone confirmed
    /// them, if any (SPEC §4: FetchFacts answers `data_loss` until an operator skips them).
    fn gap(
        &self,
        consumer: &ConsumerSpec,
    ) -> impl Future<Output = Result<Option<gap::Gap>, StoreError>> + Send;

    /// Moves the cursor past `gap`, provided it is still exactly that gap; otherwise returns the
    /// gap as it is now and changes nothing. Callers record an audit fact first (`ops::skip_gap`).
    fn skip_gap(
        &self,
        consumer: &ConsumerSpec,
        gap: gap::Gap,
    ) -> impl Future<Output = Result<Option<gap::Gap>, StoreError>> + Send;

    /// Keeps a firmware record (JSON): an install request (`request.<attempt>`) or the firmware
    /// agent's status (`status`), in the KV bucket `bsfg_firmware`.
    fn put_firmware(
        &self,
        key: &str,
        json: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A firmware record, if any.
    fn get_firmware(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// The keys of every firmware record.
    fn firmware_keys(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Records a pull's status (JSON) where `bsfg status` reads it.
    fn put_status(
        &self,
        pull: &str,
        json: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The status a pull last recorded with [`Store::put_status`], if any.
    fn get_status(
        &self,
        pull: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    fn fill(
        &self,
        category: Category,
    ) -> impl Future<Output = Result<CategoryFill, StoreError>> + Send;

    /// Stores `data` (a PutObject: the bytes are whole, their digest is computed here), as
    /// [`Store::put_object_stream`] does.
    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        media_type: &str,
        data: Bytes,
    ) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;

    /// Stores the bytes `reader` yields as `expected.key`, holding only a chunk of them at a
    /// time. The object becomes visible only once every byte arrived and they are
    /// `expected.size` bytes with `expected.digest`; otherwise nothing is left of it and the error
    /// is [`StoreError::ObjectMismatch`] (other bytes) or [`StoreError::ObjectSource`] (`reader`
    /// failed). The key already stored with that digest and size → that object, and `reader` is
    /// not read; with another digest → [`StoreError::ObjectExists`].
    fn put_object_stream<R: AsyncRead + Send + Unpin>(
        &self,
        expected: ExpectedObject<'_>,
        reader: R,
    ) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;

    /// A whole object as it is read (what [`Store::read_object`] yields).
    type ObjectReader: AsyncRead + Send + Unpin;

    /// The object and its bytes from the first to the last, read as the caller goes (one chunk
    /// in memory at a time) — to copy a whole object out, e.g. a firmware bundle to a file.
    /// [`StoreError::ObjectNotFound`] when there is none.
    fn read_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(ObjectInfo, Self::ObjectReader), StoreError>> + Send;

    /// `Ok(None)` when no such object exists.
    fn object_info(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectInfo>, StoreError>> + Send;

    /// At most `limit` bytes of the object from `offset`. Reads only what it answers with (give
    /// or take the object's chunks at either end), wherever `offset` lies.
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        limit: usize,
    ) -> impl Future<Output = Result<ObjectChunk, StoreError>> + Send;

    /// Every object in `bucket`, by key.
    fn list_objects(
        &self,
        bucket: &str,
    ) -> impl Future<Output = Result<Vec<ObjectInfo>, StoreError>> + Send;
}
