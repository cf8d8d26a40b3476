//! The Object Store half of the JetStream adapter: buckets from config, content-addressed puts
//! (reads are in `object_read.rs`). Digests are `sha256:<hex>`; JetStream's own
//! `SHA-256=<base64url>` is converted.
//!
//! GetObject at an offset reads only the chunks it answers with, through an index of the object's
//! chunks (`object_index.rs`); reading a whole object (the firmware agent's copy of a bundle) is
//! one pass over its chunks, one chunk in memory (`object_read.rs`).
//!
//! A put streams: async-nats publishes each chunk as it reads it and the object's metadata — what
//! makes it visible — after the last; [`VerifyingReader`] fails the read on any other bytes than
//! the announced ones, and the chunks of a put that failed are purged
//! ([`purge_unreferenced_chunks`]). No put or read holds a whole object in memory.
//!
//! Limits: a put holds the put lock for its whole transfer: a PutObject waits behind an artifact
//! the pull is bringing over from a peer.

use super::{
    ExpectedObject, ObjectChunk, ObjectInfo, StoreError, jetstream::JetStreamStore,
    verify::VerifyingReader,
};
use crate::{config::Config, fact::sha256_digest};
use async_nats::jetstream::{
    self,
    object_store::{self, InfoErrorKind, ObjectMetadata, ObjectStore},
    stream::StorageType,
};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::io::AsyncRead;

const MEDIA_TYPE_KEY: &str = "bsfg-media-type";

pub(super) fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

pub async fn ensure_buckets(
    js: &jetstream::Context,
    config: &Config,
) -> Result<BTreeMap<String, ObjectStore>, StoreError> {
    let mut out = BTreeMap::new();
    for spec in config.buckets.values() {
        let store = match js.get_object_store(&spec.name).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: spec.name.clone(),
                    description: Some("bsfg artifacts".into()),
                    max_bytes: spec.max_bytes,
                    num_replicas: spec.replicas,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable(&format!("creating bucket {}", spec.name), e))?,
        };
        out.insert(spec.name.clone(), store);
    }
    Ok(out)
}

/// Purges the chunks no object's metadata names: those of a put that failed (its reader refused
/// the bytes, or its source or JetStream failed midway) or that the node did not finish (killed,
/// power cut). Safe only while no put of the bucket is under way: called under the put lock, and
/// by `bsfg serve` before it serves ([`JetStreamStore::purge_unfinished_puts`]) — never when the
/// store is opened by another command (`skip-gap`, the firmware agent) beside a running node.
/// Only the node puts (one node per JetStream domain, SPEC §1). Returns how many chunk subjects
/// were purged.
pub async fn purge_unreferenced_chunks(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<usize, StoreError> {
    let context = |what: &str| format!("{what} of bucket {bucket:?}");
    let store = js
        .get_object_store(bucket)
        .await
        .map_err(|e| unavailable(&context("opening"), e))?;
    let stream = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|e| unavailable(&context("opening the stream"), e))?;
    let chunk_prefix = format!("$O.{bucket}.C.");
    let chunks: Vec<String> = stream
        .info_with_subjects(format!("{chunk_prefix}>"))
        .await
        .map_err(|e| unavailable(&context("listing the chunks"), e))?
        .map_ok(|(subject, _count)| subject)
        .try_collect()
        .await
        .map_err(|e| unavailable(&context("listing the chunks"), e))?;
    if chunks.is_empty() {
        return Ok(0);
    }
    let referenced: BTreeSet<String> = store
        .list()
        .await
        .map_err(|e| unavailable(&context("listing the objects"), e))?
        .map_ok(|info| info.nuid)
        .try_collect()
        .await
        .map_err(|e| unavailable(&context("listing the objects"), e))?;
    let mut purged = 0;
    for subject in chunks {
        let Some(nuid) = subject.strip_prefix(&chunk_prefix) else {
            continue;
        };
        if referenced.contains(nuid) {
            continue;
        }
        stream
            .purge()
            .filter(&subject)
            .await
            .map_err(|e| unavailable(&format!("purging {subject}"), e))?;
        tracing::info!(
            bucket,
            subject,
            "purged the chunks of an object that was never completed"
        );
        purged += 1;
    }
    Ok(purged)
}

/// `SHA-256=<base64url>` (JetStream) → `sha256:<hex>`.
fn digest_from_nats(digest: &str) -> Option<String> {
    let encoded = digest.strip_prefix("SHA-256=")?;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .ok()?;
    Some(format!("sha256:{}", hex::encode(raw)))
}

pub(super) fn to_info(
    bucket: &str,
    key: &str,
    info: &object_store::ObjectInfo,
) -> Result<ObjectInfo, StoreError> {
    let digest = info
        .digest
        .as_deref()
        .and_then(digest_from_nats)
        .ok_or_else(|| {
            StoreError::Corrupt(format!("object {key:?} in {bucket:?} has no digest"))
        })?;
    Ok(ObjectInfo {
        bucket: bucket.to_string(),
        key: key.to_string(),
        digest,
        size: info.size as u64,
        media_type: info
            .metadata
            .get(MEDIA_TYPE_KEY)
            .cloned()
            .unwrap_or_default(),
    })
}

impl JetStreamStore {
    pub(super) fn bucket(&self, bucket: &str) -> Result<&ObjectStore, StoreError> {
        self.buckets
            .get(bucket)
            .ok_or_else(|| StoreError::ObjectNotFound {
                bucket: bucket.to_string(),
                key: String::new(),
            })
    }

    pub(super) async fn object_info_impl(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectInfo>, StoreError> {
        match self.bucket(bucket)?.info(key).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => to_info(bucket, key, &info).map(Some),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(&format!("object info of {key:?}"), e)),
        }
    }

    /// Purges in every bucket what puts left when the node stopped midway (killed, power cut).
    /// For `bsfg serve`, before it serves: see [`purge_unreferenced_chunks`] for why only then.
    pub async fn purge_unfinished_puts(&self) {
        for bucket in self.buckets.keys() {
            if let Err(e) = purge_unreferenced_chunks(&self.js, bucket).await {
                tracing::warn!(bucket, error = %e, "cannot purge the chunks of unfinished puts");
            }
        }
    }

    /// A PutObject: the bytes are whole, so their digest is what they are checked against.
    pub(super) async fn put_object_impl(
        &self,
        bucket: &str,
        key: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<ObjectInfo, StoreError> {
        let digest = sha256_digest(&data);
        let expected = ExpectedObject {
            bucket,
            key,
            media_type,
            size: data.len() as u64,
            digest: &digest,
        };
        self.put_object_stream_impl(expected, &data[..]).await
    }

    /// The object is written by async-nats's `put`, which publishes the chunks as it reads them
    /// and the metadata (what makes the object visible) only after the reader's end: the
    /// [`VerifyingReader`] fails the read on anything but the expected bytes, so `put` fails
    /// before the metadata. The chunks it had published are left behind under a fresh nuid
    /// (a retry writes under another one, so they are never overwritten): they are purged here.
    pub(super) async fn put_object_stream_impl<R: AsyncRead + Send + Unpin>(
        &self,
        expected: ExpectedObject<'_>,
        reader: R,
    ) -> Result<ObjectInfo, StoreError> {
        let (bucket, key) = (expected.bucket, expected.key);
        let store = self.bucket(bucket)?;
        // Held for the whole transfer: the existence check, the put and the purge of a failed
        // put's chunks see no other put of this node.
        let _serial = self.put_lock.lock().await;
        if let Some(existing) = self.object_info_impl(bucket, key).await? {
            if existing.digest == expected.digest && existing.size == expected.size {
                return Ok(existing);
            }
            return Err(StoreError::ObjectExists {
                bucket: bucket.to_string(),
                key: key.to_string(),
                existing: existing.digest,
            });
        }
        let meta = ObjectMetadata {
            name: key.to_string(),
            description: None,
            chunk_size: None,
            metadata: HashMap::from([(
                MEDIA_TYPE_KEY.to_string(),
                expected.media_type.to_string(),
            )]),
            headers: None,
        };
        let mut verified = VerifyingReader::new(reader, &expected);
        let info = match store.put(meta, &mut verified).await {
            Ok(info) => info,
            Err(e) => {
                if let Err(purge) = purge_unreferenced_chunks(&self.js, bucket).await {
                    tracing::warn!(bucket, key, error = %purge, "cannot purge the chunks of a failed put; they stay until the next start or failed put");
                }
                return Err(verified
                    .failure(key)
                    .unwrap_or_else(|| unavailable(&format!("storing object {key:?}"), e)));
            }
        };
        let stored = to_info(bucket, key, &info)?;
        if stored.digest != expected.digest {
            return Err(StoreError::Corrupt(format!(
                "object {key:?} stored with digest {} but sent with {}",
                stored.digest, expected.digest
            )));
        }
        Ok(stored)
    }

    pub(super) async fn get_object_impl(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ObjectChunk, StoreError> {
        let not_found = || StoreError::ObjectNotFound {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let stored = match self.bucket(bucket)?.info(key).await {
            Ok(stored) if stored.deleted => return Err(not_found()),
            Ok(stored) => stored,
            Err(e) if e.kind() == InfoErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(unavailable(&format!("object info of {key:?}"), e)),
        };
        let info = to_info(bucket, key, &stored)?;
        if offset > info.size {
            return Err(StoreError::ObjectOffset {
                key: key.to_string(),
                offset,
                size: info.size,
            });
        }
        let remaining = usize::try_from(info.size - offset).unwrap_or(usize::MAX);
        let take = remaining.min(limit);
        let data = self
            .object_indexes
            .read(&self.js, bucket, &stored, offset, take)
            .await?;
        let eof = offset + take as u64 == info.size;
        Ok(ObjectChunk { info, data, eof })
    }

    /// Every object in `bucket` (those without a digest, which bsfg never puts, left out).
    pub(super) async fn list_objects_impl(
        &self,
        bucket: &str,
    ) -> Result<Vec<ObjectInfo>, StoreError> {
        let context = format!("listing bucket {bucket:?}");
        let mut list = self
            .bucket(bucket)?
            .list()
            .await
            .map_err(|e| unavailable(&context, e))?;
        let mut out = Vec::new();
        while let Some(item) = list.next().await {
            let stored = item.map_err(|e| unavailable(&context, e))?;
            if let Ok(info) = to_info(bucket, &stored.name, &stored) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_jetstream_digests() {
        // sha256("foo")
        let nats = "SHA-256=LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564=";
        assert_eq!(
            digest_from_nats(nats).as_deref(),
            Some("sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
        );
        assert_eq!(digest_from_nats("MD5=abc"), None);
    }
}
