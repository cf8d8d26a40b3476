//! The Object Store half of the JetStream adapter: buckets from config, content-addressed puts,
//! chunked reads. Digests are `sha256:<hex>`; JetStream's own `SHA-256=<base64url>` is converted.
//!
//! GetObject at an offset reads only the chunks it answers with, through an index of the object's
//! chunks (`object_index.rs`); reading a whole object (the firmware agent's copy of a bundle) is
//! one pass over its chunks.

use super::{ObjectChunk, ObjectInfo, StoreError, jetstream::JetStreamStore};
use crate::{config::Config, fact::sha256_digest};
use async_nats::jetstream::{
    self,
    object_store::{self, GetErrorKind, InfoErrorKind, ObjectMetadata, ObjectStore},
    stream::StorageType,
};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};

const MEDIA_TYPE_KEY: &str = "bsfg-media-type";

fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
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

/// `SHA-256=<base64url>` (JetStream) → `sha256:<hex>`.
fn digest_from_nats(digest: &str) -> Option<String> {
    let encoded = digest.strip_prefix("SHA-256=")?;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .ok()?;
    Some(format!("sha256:{}", hex::encode(raw)))
}

fn to_info(
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
    fn bucket(&self, bucket: &str) -> Result<&ObjectStore, StoreError> {
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

    pub(super) async fn put_object_impl(
        &self,
        bucket: &str,
        key: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<ObjectInfo, StoreError> {
        let store = self.bucket(bucket)?;
        let digest = sha256_digest(&data);
        let _serial = self.put_lock.lock().await;
        if let Some(existing) = self.object_info_impl(bucket, key).await? {
            if existing.digest == digest && existing.size == data.len() as u64 {
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
            metadata: HashMap::from([(MEDIA_TYPE_KEY.to_string(), media_type.to_string())]),
            headers: None,
        };
        let mut reader: &[u8] = &data;
        let info = store
            .put(meta, &mut reader)
            .await
            .map_err(|e| unavailable(&format!("storing object {key:?}"), e))?;
        let stored = to_info(bucket, key, &info)?;
        if stored.digest != digest {
            return Err(StoreError::Corrupt(format!(
                "object {key:?} stored with digest {} but sent with {digest}",
                stored.digest
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

    /// The whole object, read in one pass (one ordered consumer over its chunks; async-nats
    /// checks the digest at the end).
    pub(super) async fn read_object_impl(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, object_store::Object), StoreError> {
        let object = self.bucket(bucket)?.get(key).await.map_err(|e| {
            if e.kind() == GetErrorKind::NotFound {
                StoreError::ObjectNotFound {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                }
            } else {
                unavailable(&format!("reading object {key:?}"), e)
            }
        })?;
        let info = to_info(bucket, key, object.info())?;
        Ok((info, object))
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
