//! The Object Store half of the JetStream adapter: buckets from config, content-addressed puts,
//! chunked reads. Digests are `sha256:<hex>`; JetStream's own `SHA-256=<base64url>` is converted.
//!
//! Limits: GetObject at an offset reads the object from its start and skips (JetStream objects are
//! chunked streams without an index), so reading a large object chunk by chunk costs quadratic
//! bytes read on the nats-server side; fine for the artifact sizes of a plant (PDFs, recipes).

use super::{ObjectChunk, ObjectInfo, StoreError, jetstream::JetStreamStore};
use crate::{config::Config, fact::sha256_digest};
use async_nats::jetstream::{
    self,
    object_store::{self, InfoErrorKind, ObjectMetadata, ObjectStore},
    stream::StorageType,
};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap};
use tokio::io::AsyncReadExt;

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
        let info = self
            .object_info_impl(bucket, key)
            .await?
            .ok_or_else(not_found)?;
        if offset > info.size {
            return Err(StoreError::ObjectOffset {
                key: key.to_string(),
                offset,
                size: info.size,
            });
        }
        let mut object = self
            .bucket(bucket)?
            .get(key)
            .await
            .map_err(|e| unavailable(&format!("reading object {key:?}"), e))?;
        let mut skip = offset;
        let mut scratch = vec![0u8; 64 * 1024];
        while skip > 0 {
            let want = usize::try_from(skip)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            let n = object
                .read(&mut scratch[..want])
                .await
                .map_err(|e| unavailable(&format!("reading object {key:?}"), e))?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "object {key:?} is shorter than its size"
                )));
            }
            skip -= n as u64;
        }
        let remaining = usize::try_from(info.size - offset).unwrap_or(usize::MAX);
        let take = remaining.min(limit);
        let mut data = BytesMut::zeroed(take);
        let mut filled = 0;
        while filled < take {
            let n = object
                .read(&mut data[filled..])
                .await
                .map_err(|e| unavailable(&format!("reading object {key:?}"), e))?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "object {key:?} is shorter than its size"
                )));
            }
            filled += n;
        }
        let eof = offset + take as u64 == info.size;
        Ok(ObjectChunk {
            info,
            data: data.freeze(),
            eof,
        })
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
