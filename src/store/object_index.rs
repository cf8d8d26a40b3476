//! Reading a JetStream object at an offset without reading what comes before it.
//!
//! A JetStream object is a run of chunk messages (`$O.<bucket>.C.<nuid>`, 128 KiB each when put
//! by async-nats, but nothing relies on that) with no index, so reading at an offset by reading
//! from the start and skipping costs the whole prefix: a 136 MB bundle read in 1 MiB GetObject
//! calls was ~9 GB read on the nats-server side. Here each object gets an index instead — the
//! stream sequence and first byte offset of every chunk — built from one *headers-only* pass over
//! its chunk messages (about a hundred bytes per chunk, no payload), after which any offset is
//! one binary search and a direct get per chunk the answer covers. The indexes of the few objects
//! read last are kept (they are small: 16 bytes per chunk) and dropped after a minute unused; an
//! object's chunks never change under its nuid, so a kept index cannot go stale.
//!
//! What GetObject fetched from nats-server, and how much of it was not returned (the part of the
//! first chunk before the offset, the part of the last one after the limit), is counted for
//! `/metrics` (`bsfg_object_bytes_read_total`, `bsfg_object_bytes_skipped_total`,
//! `bsfg_object_index_builds_total`).

use super::StoreError;
use async_nats::jetstream::{
    self, consumer::push::OrderedConfig, object_store::ObjectInfo as NatsObjectInfo,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How many objects' indexes are kept.
const KEPT: usize = 8;
/// An index unused this long is dropped.
const IDLE: Duration = Duration::from_secs(60);
/// How long building an index may take before the read fails as unavailable.
const INDEX_TIMEOUT: Duration = Duration::from_secs(60);
/// The header nats-server puts on a headers-only delivery: the payload's size.
const MSG_SIZE_HEADER: &str = "Nats-Msg-Size";

static BYTES_READ: AtomicU64 = AtomicU64::new(0);
static BYTES_SKIPPED: AtomicU64 = AtomicU64::new(0);
static INDEX_BUILDS: AtomicU64 = AtomicU64::new(0);

/// Process-wide counters of object reads at an offset (GetObject), for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectReadCounters {
    /// Chunk payload bytes fetched from nats-server.
    pub bytes_read: u64,
    /// Of those, the bytes not part of any answer.
    pub bytes_skipped: u64,
    /// Indexes built (one headers-only pass over an object's chunks each).
    pub index_builds: u64,
}

pub fn object_read_counters() -> ObjectReadCounters {
    ObjectReadCounters {
        bytes_read: BYTES_READ.load(Ordering::Relaxed),
        bytes_skipped: BYTES_SKIPPED.load(Ordering::Relaxed),
        index_builds: INDEX_BUILDS.load(Ordering::Relaxed),
    }
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

/// Where each chunk of one object is.
#[derive(Debug)]
pub(super) struct ChunkIndex {
    /// (first byte offset, stream sequence) of each chunk, in order; the first starts at 0.
    chunks: Vec<(u64, u64)>,
    size: u64,
}

impl ChunkIndex {
    /// The chunks holding bytes `offset..offset + len`: (first byte offset, length, sequence).
    fn covering(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let first = self
            .chunks
            .partition_point(|(start, _)| *start <= offset)
            .saturating_sub(1);
        let end = offset.saturating_add(len);
        self.chunks[first..]
            .iter()
            .enumerate()
            .map(move |(i, (start, seq))| {
                let next = self
                    .chunks
                    .get(first + i + 1)
                    .map_or(self.size, |(next, _)| *next);
                (*start, next - start, *seq)
            })
            .take_while(move |(start, _, _)| *start < end)
    }
}

struct Kept {
    bucket: String,
    nuid: String,
    index: Arc<ChunkIndex>,
    used: Instant,
}

/// The indexes of the objects read last. Safe to share: an index is immutable once built, and
/// two calls that both miss build it twice at worst.
#[derive(Default)]
pub(super) struct ObjectIndexes {
    kept: Mutex<Vec<Kept>>,
}

impl ObjectIndexes {
    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lookup(&self, bucket: &str, nuid: &str) -> Option<Arc<ChunkIndex>> {
        let now = Instant::now();
        let mut kept = self.kept();
        kept.retain(|k| now.duration_since(k.used) < IDLE);
        let found = kept
            .iter_mut()
            .find(|k| k.bucket == bucket && k.nuid == nuid)?;
        found.used = now;
        Some(found.index.clone())
    }

    fn keep(&self, bucket: &str, nuid: &str, index: Arc<ChunkIndex>) {
        let mut kept = self.kept();
        kept.retain(|k| !(k.bucket == bucket && k.nuid == nuid));
        if kept.len() >= KEPT
            && let Some(oldest) = kept
                .iter()
                .enumerate()
                .min_by_key(|(_, k)| k.used)
                .map(|(i, _)| i)
        {
            kept.swap_remove(oldest);
        }
        kept.push(Kept {
            bucket: bucket.to_string(),
            nuid: nuid.to_string(),
            index,
            used: Instant::now(),
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept().len()
    }

    /// Bytes `offset..offset + len` of the object `info` describes (the caller checked that
    /// they lie within it).
    pub(super) async fn read(
        &self,
        js: &jetstream::Context,
        bucket: &str,
        info: &NatsObjectInfo,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let key = &info.name;
        let index = match self.lookup(bucket, &info.nuid) {
            Some(index) => index,
            None => {
                let built = tokio::time::timeout(INDEX_TIMEOUT, build(js, bucket, info))
                    .await
                    .map_err(|_| {
                        unavailable(
                            &format!("indexing object {key:?}"),
                            format!("no answer within {INDEX_TIMEOUT:?}"),
                        )
                    })??;
                let built = Arc::new(built);
                self.keep(bucket, &info.nuid, built.clone());
                built
            }
        };
        let stream = js
            .get_stream_no_info(format!("OBJ_{bucket}"))
            .await
            .map_err(|e| unavailable(&format!("reading object {key:?}"), e))?;
        let subject = chunk_subject(bucket, &info.nuid);
        let mut data = BytesMut::with_capacity(len);
        let mut fetched = 0u64;
        for (start, chunk_len, seq) in index.covering(offset, len as u64) {
            let message = stream
                .direct_get(seq)
                .await
                .map_err(|e| unavailable(&format!("reading object {key:?}"), e))?;
            if message.subject.as_str() != subject || message.payload.len() as u64 != chunk_len {
                return Err(StoreError::Corrupt(format!(
                    "object {key:?}: chunk at sequence {seq} is not the one indexed"
                )));
            }
            fetched += chunk_len;
            let from = usize::try_from(offset.saturating_sub(start)).unwrap_or(usize::MAX);
            let want = len - data.len();
            let to = message.payload.len().min(from.saturating_add(want));
            if from < to {
                data.extend_from_slice(&message.payload[from..to]);
            }
        }
        BYTES_READ.fetch_add(fetched, Ordering::Relaxed);
        BYTES_SKIPPED.fetch_add(fetched - data.len() as u64, Ordering::Relaxed);
        if data.len() != len {
            return Err(StoreError::Corrupt(format!(
                "object {key:?} is shorter than its size"
            )));
        }
        Ok(data.freeze())
    }
}

fn chunk_subject(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// One headers-only pass over the object's chunk messages: each one's sequence and size.
async fn build(
    js: &jetstream::Context,
    bucket: &str,
    info: &NatsObjectInfo,
) -> Result<ChunkIndex, StoreError> {
    let key = &info.name;
    let context = format!("indexing object {key:?}");
    let mut chunks = Vec::with_capacity(info.chunks);
    let mut offset = 0u64;
    if info.chunks > 0 {
        INDEX_BUILDS.fetch_add(1, Ordering::Relaxed);
        let stream = js
            .get_stream_no_info(format!("OBJ_{bucket}"))
            .await
            .map_err(|e| unavailable(&context, e))?;
        let mut messages = stream
            .create_consumer(OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                filter_subject: chunk_subject(bucket, &info.nuid),
                headers_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&context, e))?
            .messages()
            .await
            .map_err(|e| unavailable(&context, e))?;
        loop {
            let message = messages
                .next()
                .await
                .ok_or_else(|| unavailable(&context, "the chunks ended early"))?
                .map_err(|e| unavailable(&context, e))?;
            let delivered = message.info().map_err(|e| unavailable(&context, e))?;
            let size = message
                .headers
                .as_ref()
                .and_then(|h| h.get(MSG_SIZE_HEADER))
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("{context}: a chunk has no {MSG_SIZE_HEADER}"))
                })?;
            chunks.push((offset, delivered.stream_sequence));
            offset += size;
            if delivered.pending == 0 || chunks.len() >= info.chunks {
                break;
            }
        }
    }
    if chunks.len() != info.chunks || offset != info.size as u64 {
        return Err(StoreError::Corrupt(format!(
            "object {key:?} has {} chunks of {offset} bytes, not {} of {} as its info says",
            chunks.len(),
            info.chunks,
            info.size
        )));
    }
    Ok(ChunkIndex {
        chunks,
        size: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(sizes: &[u64]) -> ChunkIndex {
        let mut chunks = Vec::new();
        let mut offset = 0;
        for (i, size) in sizes.iter().enumerate() {
            chunks.push((offset, 100 + i as u64));
            offset += size;
        }
        ChunkIndex {
            chunks,
            size: offset,
        }
    }

    #[test]
    fn an_offset_finds_only_the_chunks_it_needs() {
        let index = index(&[10, 10, 10, 5]);
        let covering = |offset, len| index.covering(offset, len).collect::<Vec<_>>();
        assert_eq!(covering(0, 10), [(0, 10, 100)]);
        assert_eq!(covering(9, 2), [(0, 10, 100), (10, 10, 101)]);
        assert_eq!(covering(10, 10), [(10, 10, 101)]);
        assert_eq!(covering(25, 100), [(20, 10, 102), (30, 5, 103)]);
        assert_eq!(covering(34, 1), [(30, 5, 103)]);
        // Chunks of other sizes than the first (an object put from a stream).
        let uneven = super::tests::index(&[3, 100, 1]);
        assert_eq!(
            uneven.covering(50, 60).collect::<Vec<_>>(),
            [(3, 100, 101), (103, 1, 102)]
        );
    }

    #[test]
    fn few_indexes_are_kept_and_the_least_used_goes_first() {
        let indexes = ObjectIndexes::default();
        for i in 0..KEPT + 3 {
            indexes.keep("b", &format!("n{i}"), Arc::new(index(&[1])));
        }
        assert_eq!(indexes.len(), KEPT);
        assert!(indexes.lookup("b", "n0").is_none());
        assert!(indexes.lookup("b", &format!("n{}", KEPT + 2)).is_some());
        assert!(indexes.lookup("other", &format!("n{}", KEPT + 2)).is_none());
    }
}
