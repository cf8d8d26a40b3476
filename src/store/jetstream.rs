//! The JetStream adapter of the Store port (SPEC §3).
//!
//! - One stream per category (`facts_<category>`, subjects `facts.<category>.>`), created or
//!   updated from config at start-up.
//! - Idempotency for the stream's whole retention: each fact is published on its own subject,
//!   `facts.<category>.<kind>.<key>` with `key` = the first 128 bits of SHA-256(message_id) in hex,
//!   and `Nats-Expected-Last-Subject-Sequence: 0`. JetStream refuses a second message on that
//!   subject atomically; the node then reads the stored one with a direct get and compares its
//!   `Bsfg-Content-Hash` header. (JetStream's own `Nats-Msg-Id` dedupe is not used: it forgets
//!   after its window and treats different payloads under one id as plain duplicates.)
//! - Durable pull consumers with `AckPolicy::All`. FetchFacts pulls a page and at once NAKs every
//!   message (waiting for the server's confirmation), so the page is delivered again, in order,
//!   on the next fetch: deterministic replay kept entirely in JetStream. The consumer's
//!   `delivered` sequence is "what was fetched"; its ack floor is the cursor. ConfirmReceipt pulls
//!   up to the offset and acks that one message, which acks everything before it.
//!
//! Limits: a node crash between pulling a page and NAKing it leaves those deliveries in flight
//! until the consumer's ack wait (5 s) ends; meanwhile fetch answers `InFlight` rather than a
//! page with a hole. Each fetch costs two info requests, one pull and one NAK per fact.

use super::{Appended, CategoryFill, NewFact, ObjectChunk, ObjectInfo, Page, Store, StoreError};
use crate::{
    config::{CategoryPolicy, Config, ConsumerSpec},
    fact::{Category, subject_kind},
    proto::StoredFact,
};
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::PublishErrorKind,
    message::PublishMessage,
    object_store::ObjectStore,
    stream::{self, DiscardPolicy, StorageType},
};
use bytes::Bytes;
use futures::{StreamExt, future::try_join_all};
use prost::Message;
use sha2::{Digest, Sha256};
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Mutex;

const CONTENT_HASH_HEADER: &str = "Bsfg-Content-Hash";
/// How long a delivery that was neither NAKed nor acked stays in flight (after a crash).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long fill readings are reused before asking JetStream again.
const FILL_MAX_AGE: Duration = Duration::from_millis(250);

pub struct JetStreamStore {
    pub(super) js: jetstream::Context,
    streams: BTreeMap<Category, stream::Stream>,
    policies: BTreeMap<Category, CategoryPolicy>,
    consumers: BTreeMap<String, ConsumerHandle>,
    pub(super) buckets: BTreeMap<String, ObjectStore>,
    /// Serializes puts so "exists with other bytes" is decided without a race.
    pub(super) put_lock: Mutex<()>,
    fills: Mutex<BTreeMap<Category, (Instant, CategoryFill)>>,
}

struct ConsumerHandle {
    consumer: PullConsumer,
    /// One fetch or confirm at a time per consumer keeps deliveries and NAKs in order.
    lock: Arc<Mutex<()>>,
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

impl JetStreamStore {
    /// Connects to the zone's nats-server and creates or updates every stream, bucket and durable
    /// consumer the config declares.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("bsfg-{}", config.zone))
            .request_timeout(Some(config.nats.request_timeout))
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &config.nats.credentials_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| unavailable(&format!("reading {}", path.display()), e))?;
            let (user, password) = text.trim().split_once(':').ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "{}: expected user:password on one line",
                    path.display()
                ))
            })?;
            options = options.user_and_password(user.into(), password.into());
        }
        let client = options
            .connect(config.nats.url.as_str())
            .await
            .map_err(|e| unavailable(&format!("connecting to {}", config.nats.url), e))?;
        let js = jetstream::new(client);
        let mut streams = BTreeMap::new();
        for (category, policy) in &config.categories {
            let stream = ensure_stream(&js, *category, policy).await?;
            streams.insert(*category, stream);
        }
        let mut consumers = BTreeMap::new();
        for spec in config.consumers.values() {
            let stream = &streams[&spec.category];
            let consumer = ensure_consumer(stream, spec).await?;
            consumers.insert(
                spec.name.clone(),
                ConsumerHandle {
                    consumer,
                    lock: Arc::new(Mutex::new(())),
                },
            );
        }
        let buckets = super::objects::ensure_buckets(&js, config).await?;
        Ok(JetStreamStore {
            js,
            streams,
            policies: config.categories.clone(),
            consumers,
            buckets,
            put_lock: Mutex::new(()),
            fills: Mutex::new(BTreeMap::new()),
        })
    }

    fn consumer(&self, spec: &ConsumerSpec) -> Result<&ConsumerHandle, StoreError> {
        self.consumers
            .get(&spec.name)
            .ok_or_else(|| StoreError::UnknownConsumer(spec.name.clone()))
    }

    fn stream(&self, category: Category) -> Result<&stream::Stream, StoreError> {
        self.streams
            .get(&category)
            .ok_or_else(|| StoreError::Unavailable(format!("stream for {category} not set up")))
    }

    async fn stream_state(&self, category: Category) -> Result<stream::State, StoreError> {
        let mut stream = self.stream(category)?.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable(&format!("stream info of {}", category.stream_name()), e))?;
        Ok(info.state.clone())
    }

    /// The stored fact's idempotency answer after JetStream refused a second message on its
    /// subject.
    async fn existing(&self, new: NewFact<'_>, subject: &str) -> Result<Appended, StoreError> {
        let stored = self
            .stream(new.category)?
            .direct_get_last_for_subject(subject)
            .await
            .map_err(|e| unavailable("reading the stored fact", e))?;
        let stored_hash = stored
            .headers
            .get(CONTENT_HASH_HEADER)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let stored_fact = StoredFact::decode(stored.payload.as_ref())
            .map_err(|e| StoreError::Corrupt(format!("offset {}: {e}", stored.sequence)))?;
        let same_id = stored_fact
            .envelope
            .as_ref()
            .is_some_and(|e| e.message_id == new.envelope.message_id);
        if same_id && stored_hash == hex::encode(new.content_hash) {
            Ok(Appended {
                offset: stored.sequence,
                duplicate: true,
            })
        } else {
            Err(StoreError::Conflict {
                message_id: new.envelope.message_id.clone(),
                offset: stored.sequence,
            })
        }
    }

    /// Pulls up to `limit` deliveries; with `max_wait` > 0 waits that long for the first.
    async fn pull(
        consumer: &PullConsumer,
        limit: usize,
        max_wait: Duration,
    ) -> Result<Vec<jetstream::Message>, StoreError> {
        let mut out = Vec::with_capacity(limit);
        if !max_wait.is_zero() {
            // Long poll for one delivery only: a larger outstanding pull would take facts that
            // arrive after we answered and leave them in flight.
            let mut first = consumer
                .batch()
                .max_messages(1)
                .expires(max_wait)
                .messages()
                .await
                .map_err(|e| unavailable("pull request", e))?;
            match first.next().await {
                Some(Ok(message)) => out.push(message),
                Some(Err(e)) => return Err(unavailable("pull", e)),
                None => return Ok(out),
            }
            if limit == 1 {
                return Ok(out);
            }
        }
        let mut rest = consumer
            .fetch()
            .max_messages(limit - out.len())
            .messages()
            .await
            .map_err(|e| unavailable("pull request", e))?;
        while let Some(message) = rest.next().await {
            out.push(message.map_err(|e| unavailable("pull", e))?);
        }
        Ok(out)
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    category: Category,
    policy: &CategoryPolicy,
) -> Result<stream::Stream, StoreError> {
    let config = stream::Config {
        name: category.stream_name(),
        subjects: vec![category.subject_filter()],
        max_age: policy.max_age,
        max_bytes: policy.max_bytes,
        num_replicas: policy.replicas,
        storage: if policy.memory_storage {
            StorageType::Memory
        } else {
            StorageType::File
        },
        discard: if policy.safety_critical {
            DiscardPolicy::New
        } else {
            DiscardPolicy::Old
        },
        duplicate_window: policy.duplicate_window,
        allow_direct: true,
        ..Default::default()
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| unavailable(&format!("creating stream {}", category.stream_name()), e))?;
    js.get_stream(category.stream_name())
        .await
        .map_err(|e| unavailable(&format!("opening stream {}", category.stream_name()), e))
}

async fn ensure_consumer(
    stream: &stream::Stream,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, StoreError> {
    let config = pull::Config {
        durable_name: Some(spec.name.clone()),
        description: Some(format!("bsfg durable consumer of {}", spec.category)),
        ack_policy: AckPolicy::All,
        deliver_policy: DeliverPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: i64::from(spec.max_ack_pending),
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| unavailable(&format!("creating consumer {}", spec.name), e))
}

/// `facts.<category>.<kind>.<first 128 bits of sha256(message_id) in hex>`
pub fn fact_subject(category: Category, kind: &str, message_id: &str) -> String {
    let digest = Sha256::digest(message_id.as_bytes());
    format!("facts.{category}.{kind}.{}", hex::encode(&digest[..16]))
}

fn decode_delivery(
    message: &jetstream::Message,
    category: Category,
) -> Result<StoredFact, StoreError> {
    let info = message
        .info()
        .map_err(|e| StoreError::Corrupt(format!("delivery metadata: {e}")))?;
    let mut stored = StoredFact::decode(message.payload.as_ref())
        .map_err(|e| StoreError::Corrupt(format!("offset {}: {e}", info.stream_sequence)))?;
    stored.offset = info.stream_sequence;
    stored.category = category.to_wire() as i32;
    stored.appended_at_unix_ms =
        i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    Ok(stored)
}

async fn nak_all(messages: &[jetstream::Message]) -> Result<(), StoreError> {
    try_join_all(
        messages
            .iter()
            .map(|m| m.double_ack_with(AckKind::Nak(None))),
    )
    .await
    .map_err(|e| unavailable("returning deliveries to the consumer", e))?;
    Ok(())
}

impl Store for JetStreamStore {
    async fn append(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        let policy = &self.policies[&new.category];
        if policy.safety_critical {
            let fill = self.fill(new.category).await?;
            if fill.percent >= 80.0 {
                return Err(StoreError::Full {
                    category: new.category,
                    percent: fill.percent,
                });
            }
        }
        let subject = fact_subject(
            new.category,
            subject_kind(&new.fact.subject),
            &new.envelope.message_id,
        );
        let payload = StoredFact {
            envelope: Some(new.envelope.clone()),
            fact: Some(new.fact.clone()),
            ..Default::default()
        }
        .encode_to_vec();
        let publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .header(CONTENT_HASH_HEADER, hex::encode(new.content_hash).as_str())
            .expected_last_subject_sequence(0);
        let ack = match self.js.send_publish(subject.clone(), publish).await {
            Ok(future) => future.await,
            Err(e) => return Err(unavailable("publishing the fact", e)),
        };
        match ack {
            Ok(ack) => Ok(Appended {
                offset: ack.sequence,
                duplicate: false,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.existing(new, &subject).await
            }
            Err(e) if e.to_string().contains("maximum") => {
                let percent = self.fill(new.category).await.map_or(100.0, |f| f.percent);
                Err(StoreError::Full {
                    category: new.category,
                    percent,
                })
            }
            Err(e) => Err(unavailable("storing the fact", e)),
        }
    }

    async fn fetch(
        &self,
        spec: &ConsumerSpec,
        limit: u32,
        max_wait: Duration,
    ) -> Result<Page, StoreError> {
        let handle = self.consumer(spec)?;
        let _serial = handle.lock.lock().await;
        let mut consumer = handle.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| unavailable(&format!("consumer info of {}", spec.name), e))?;
        let cursor = info.ack_floor.stream_sequence;
        let state = self.stream_state(spec.category).await?;
        if state.last_sequence > cursor && state.first_sequence > cursor + 1 {
            return Err(StoreError::Gap {
                consumer: spec.name.clone(),
                from: cursor + 1,
                to: state.first_sequence - 1,
            });
        }
        let deliveries = Self::pull(&consumer, limit as usize, max_wait).await?;
        let returned = nak_all(&deliveries).await;
        let mut facts = Vec::with_capacity(deliveries.len());
        let mut expected = cursor + 1;
        for message in &deliveries {
            let stored = decode_delivery(message, spec.category)?;
            if stored.offset != expected {
                break; // a hole: earlier deliveries are still in flight
            }
            expected += 1;
            facts.push(stored);
        }
        returned?;
        if facts.is_empty() && !deliveries.is_empty() {
            return Err(StoreError::InFlight {
                consumer: spec.name.clone(),
            });
        }
        let high_watermark = if facts.is_empty() {
            state.last_sequence
        } else {
            self.stream_state(spec.category).await?.last_sequence
        };
        Ok(Page {
            facts,
            high_watermark,
        })
    }

    async fn confirm(&self, spec: &ConsumerSpec, offset: u64) -> Result<u64, StoreError> {
        let handle = self.consumer(spec)?;
        let _serial = handle.lock.lock().await;
        let mut consumer = handle.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| unavailable(&format!("consumer info of {}", spec.name), e))?;
        let cursor = info.ack_floor.stream_sequence;
        let fetched = info.delivered.stream_sequence;
        if offset <= cursor {
            return Ok(cursor);
        }
        if offset > fetched {
            return Err(StoreError::BeyondFetched {
                consumer: spec.name.clone(),
                offset,
                fetched,
            });
        }
        let want = usize::try_from(offset - cursor).unwrap_or(usize::MAX);
        let deliveries = Self::pull(&consumer, want, Duration::ZERO).await?;
        let mut confirmed = None;
        let mut give_back = Vec::new();
        for message in deliveries {
            let sequence = message
                .info()
                .map_err(|e| StoreError::Corrupt(format!("delivery metadata: {e}")))?
                .stream_sequence;
            if sequence == offset {
                message
                    .double_ack()
                    .await
                    .map_err(|e| unavailable("acknowledging", e))?;
                confirmed = Some(offset);
            } else if sequence > offset {
                give_back.push(message);
            }
        }
        nak_all(&give_back).await?;
        confirmed.ok_or(StoreError::InFlight {
            consumer: spec.name.clone(),
        })
    }

    async fn cursor(&self, spec: &ConsumerSpec) -> Result<(u64, u64), StoreError> {
        let mut consumer = self.consumer(spec)?.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| unavailable(&format!("consumer info of {}", spec.name), e))?;
        let cursor = info.ack_floor.stream_sequence;
        Ok((
            cursor,
            self.stream_state(spec.category).await?.last_sequence,
        ))
    }

    async fn fill(&self, category: Category) -> Result<CategoryFill, StoreError> {
        let mut fills = self.fills.lock().await;
        if let Some((at, fill)) = fills.get(&category) {
            if at.elapsed() < FILL_MAX_AGE {
                return Ok(*fill);
            }
        }
        let state = self.stream_state(category).await?;
        let max_bytes = self.policies[&category].max_bytes;
        let percent = if max_bytes > 0 {
            state.bytes as f64 * 100.0 / max_bytes as f64
        } else {
            0.0
        };
        let fill = CategoryFill {
            bytes: state.bytes,
            max_bytes,
            percent,
        };
        fills.insert(category, (Instant::now(), fill));
        Ok(fill)
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_object_impl(bucket, key, media_type, data).await
    }

    async fn object_info(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.object_info_impl(bucket, key).await
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        limit: usize,
    ) -> Result<ObjectChunk, StoreError> {
        self.get_object_impl(bucket, key, offset, limit).await
    }
}
