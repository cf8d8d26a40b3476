//! An in-memory Store for unit tests of the layers above (handlers, and later the pull loop).
//! Same contract as the JetStream adapter — idempotency by message id and content hash, pages
//! after the cursor, confirm bounded by what was fetched, immutable objects — with none of its
//! durability. Never used by `bsfg serve`.

use super::{
    Appended, CategoryFill, ExpectedObject, NewFact, ObjectChunk, ObjectInfo, Page, Store,
    StoreError, verify::VerifyingReader,
};
use crate::{
    config::ConsumerSpec,
    fact::{Category, sha256_digest},
    proto::StoredFact,
};
use bytes::Bytes;
use std::{collections::BTreeMap, sync::Mutex, time::Duration};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Default)]
struct State {
    facts: BTreeMap<Category, Vec<StoredFact>>,
    /// message_id → (category, offset, content hash)
    index: BTreeMap<String, (Category, u64, [u8; 32])>,
    /// consumer → (cursor, fetched)
    cursors: BTreeMap<String, (u64, u64)>,
    objects: BTreeMap<(String, String), (ObjectInfo, Bytes)>,
    /// pull → its recorded status (JSON)
    statuses: BTreeMap<String, Vec<u8>>,
    /// firmware records (JSON)
    firmware: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Bytes handed out by `get_object` and whole objects by `read_object`, for tests of
    /// how callers read.
    chunk_bytes: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// (bytes returned by `get_object`, objects copied by `read_object`) so far.
    pub fn object_reads(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.chunk_bytes.load(Relaxed), self.reads.load(Relaxed))
    }
}

impl MemoryStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    async fn append(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        let mut state = self.state();
        // The key is the node's: the same message id in any category (SPEC §2).
        let key = new.envelope.message_id.clone();
        if let Some((category, offset, hash)) = state.index.get(&key) {
            return if *hash == new.content_hash {
                Ok(Appended {
                    offset: *offset,
                    category: *category,
                    duplicate: true,
                })
            } else {
                Err(StoreError::Conflict {
                    message_id: key,
                    category: *category,
                    offset: *offset,
                })
            };
        }
        let log = state.facts.entry(new.category).or_default();
        let offset = log.len() as u64 + 1;
        log.push(StoredFact {
            offset,
            category: new.category.to_wire() as i32,
            envelope: Some(new.envelope.clone()),
            fact: Some(new.fact.clone()),
            appended_at_unix_ms: 1,
        });
        state
            .index
            .insert(key, (new.category, offset, new.content_hash));
        Ok(Appended {
            offset,
            category: new.category,
            duplicate: false,
        })
    }

    async fn fetch(
        &self,
        spec: &ConsumerSpec,
        limit: u32,
        max_bytes: usize,
        _max_wait: Duration,
    ) -> Result<Page, StoreError> {
        let mut state = self.state();
        let log = state.facts.get(&spec.category).cloned().unwrap_or_default();
        let (cursor, fetched) = state.cursors.entry(spec.name.clone()).or_default();
        let facts: Vec<StoredFact> = log
            .iter()
            .skip(*cursor as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        let facts = super::within_budget(facts, max_bytes);
        if let Some(last) = facts.last() {
            *fetched = (*fetched).max(last.offset);
        }
        Ok(Page {
            facts,
            high_watermark: log.len() as u64,
        })
    }

    async fn confirm(&self, spec: &ConsumerSpec, offset: u64) -> Result<u64, StoreError> {
        let mut state = self.state();
        let (cursor, fetched) = state.cursors.entry(spec.name.clone()).or_default();
        if offset <= *cursor {
            return Ok(*cursor);
        }
        if offset > *fetched {
            return Err(StoreError::BeyondFetched {
                consumer: spec.name.clone(),
                offset,
                fetched: *fetched,
            });
        }
        *cursor = offset;
        Ok(offset)
    }

    async fn cursor(&self, spec: &ConsumerSpec) -> Result<(u64, u64), StoreError> {
        let mut state = self.state();
        let high = state
            .facts
            .get(&spec.category)
            .map_or(0, |l| l.len() as u64);
        Ok((state.cursors.entry(spec.name.clone()).or_default().0, high))
    }

    /// Nothing is ever evicted here.
    async fn gap(&self, _spec: &ConsumerSpec) -> Result<Option<super::gap::Gap>, StoreError> {
        Ok(None)
    }

    async fn skip_gap(
        &self,
        _spec: &ConsumerSpec,
        _gap: super::gap::Gap,
    ) -> Result<Option<super::gap::Gap>, StoreError> {
        Ok(None)
    }

    async fn put_firmware(&self, key: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.state().firmware.insert(key.to_string(), json);
        Ok(())
    }

    async fn get_firmware(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().firmware.get(key).cloned())
    }

    async fn firmware_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.state().firmware.keys().cloned().collect())
    }

    async fn put_status(&self, pull: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.state().statuses.insert(pull.to_string(), json);
        Ok(())
    }

    async fn get_status(&self, pull: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().statuses.get(pull).cloned())
    }

    async fn fill(&self, _category: Category) -> Result<CategoryFill, StoreError> {
        Ok(CategoryFill {
            bytes: 0,
            max_bytes: -1,
            percent: 0.0,
        })
    }

    async fn put_object(
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
        self.put_object_stream(expected, &data[..]).await
    }

    async fn put_object_stream<R: AsyncRead + Send + Unpin>(
        &self,
        expected: ExpectedObject<'_>,
        reader: R,
    ) -> Result<ObjectInfo, StoreError> {
        let id = (expected.bucket.to_string(), expected.key.to_string());
        let exists = |state: &State| {
            state.objects.get(&id).map(|(info, _)| {
                if info.digest == expected.digest && info.size == expected.size {
                    Ok(info.clone())
                } else {
                    Err(StoreError::ObjectExists {
                        bucket: id.0.clone(),
                        key: id.1.clone(),
                        existing: info.digest.clone(),
                    })
                }
            })
        };
        if let Some(done) = exists(&self.state()) {
            return done;
        }
        // The memory store keeps its objects in memory anyway; the bytes become visible only
        // once they are all here and checked, as in the JetStream adapter.
        let mut verified = VerifyingReader::new(reader, &expected);
        let mut data = Vec::new();
        if let Err(e) = verified.read_to_end(&mut data).await {
            return Err(verified
                .failure(expected.key)
                .unwrap_or(StoreError::ObjectSource {
                    key: expected.key.to_string(),
                    received: data.len() as u64,
                    error: e.to_string(),
                }));
        }
        let mut state = self.state();
        if let Some(done) = exists(&state) {
            return done;
        }
        let info = ObjectInfo {
            bucket: id.0.clone(),
            key: id.1.clone(),
            digest: expected.digest.to_string(),
            size: data.len() as u64,
            media_type: expected.media_type.to_string(),
        };
        state.objects.insert(id, (info.clone(), data.into()));
        Ok(info)
    }

    async fn object_info(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self
            .state()
            .objects
            .get(&(bucket.to_string(), key.to_string()))
            .map(|(i, _)| i.clone()))
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ObjectChunk, StoreError> {
        let state = self.state();
        let (info, data) = state
            .objects
            .get(&(bucket.to_string(), key.to_string()))
            .ok_or_else(|| StoreError::ObjectNotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })?;
        if offset > info.size {
            return Err(StoreError::ObjectOffset {
                key: key.to_string(),
                offset,
                size: info.size,
            });
        }
        let start = offset as usize;
        let end = (start + limit).min(data.len());
        self.chunk_bytes
            .fetch_add((end - start) as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(ObjectChunk {
            info: info.clone(),
            data: data.slice(start..end),
            eof: end == data.len(),
        })
    }

    type ObjectReader = std::io::Cursor<Bytes>;

    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, Self::ObjectReader), StoreError> {
        let (info, data) = self
            .state()
            .objects
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| StoreError::ObjectNotFound {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })?;
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((info, std::io::Cursor::new(data)))
    }

    async fn list_objects(&self, bucket: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Ok(self
            .state()
            .objects
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|(_, (info, _))| info.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Envelope, Fact};

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(future))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    #[test]
    fn the_key_is_the_nodes_across_categories() {
        let store = MemoryStore::default();
        let envelope = Envelope {
            message_id: "m-1".into(),
            ..Default::default()
        };
        let fact = Fact {
            subject: "batch:B-1".into(),
            ..Default::default()
        };
        let new = |category, content_hash| NewFact {
            category,
            envelope: &envelope,
            fact: &fact,
            content_hash,
        };
        run(async {
            let first = store.append(new(Category::Operational, [1; 32])).await;
            assert_eq!(first.map(|a| (a.offset, a.duplicate)), Ok((1, false)));
            let same = store.append(new(Category::Audit, [1; 32])).await;
            assert_eq!(
                same,
                Ok(Appended {
                    offset: 1,
                    category: Category::Operational,
                    duplicate: true
                })
            );
            let other = store.append(new(Category::Audit, [2; 32])).await;
            assert!(
                matches!(
                    other,
                    Err(StoreError::Conflict {
                        category: Category::Operational,
                        offset: 1,
                        ..
                    })
                ),
                "{other:?}"
            );
        });
    }
}
