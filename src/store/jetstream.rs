//! The JetStream adapter of the Store port (SPEC §3).
//!
//! - One stream per category (`facts_<category>`, subjects `facts.<category>.>`), created or
//!   updated from config at start-up.
//! - Idempotency for the stream's whole retention: each fact is published on its own subject,
//!   `facts.<category>.<kind>.<key>` with `key` = the first 128 bits of SHA-256(message_id) in hex,
//!   and `Nats-Expected-Last-Subject-Sequence: 0` checked against `facts.<category>.*.<key>`
//!   (`Nats-Expected-Last-Subject-Sequence-Subject`), so the key is the message id whatever the
//!   subject kind. JetStream refuses a second message under that key atomically; the node then
//!   reads the stored one with a direct get and compares its `Bsfg-Content-Hash` header.
//!   (JetStream's own `Nats-Msg-Id` dedupe is not used: it forgets after its window and treats
//!   different payloads under one id as plain duplicates.) Before that, `append.rs` makes the key
//!   the node's: the id is looked up in every category, before the backpressure check.
//! - Durable pull consumers with `AckPolicy::All` carry each cursor (their ack floor, visible in
//!   `nats consumer info`); reading a page never touches them (see `consumers.rs`).
//!
//! Limits: one node writes a zone's streams; long polls are woken by this node's own appends
//! (and re-check the stream every second for anything else).

use super::{Appended, CategoryFill, NewFact, ObjectChunk, ObjectInfo, Page, Store, StoreError};
use crate::{
    config::{CategoryPolicy, Config, ConsumerSpec},
    fact::Category,
};
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    object_store::ObjectStore,
    stream::{self, DiscardPolicy, StorageType},
};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};
use tokio::sync::Mutex;

pub(super) const CONTENT_HASH_HEADER: &str = "Bsfg-Content-Hash";
/// The subject (wildcards allowed) that `Nats-Expected-Last-Subject-Sequence` is checked against.
pub(super) const EXPECTED_LAST_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// How long a delivery that was neither NAKed nor acked stays in flight (after a crash).
pub(super) const ACK_WAIT: Duration = Duration::from_secs(5);
/// KV bucket holding, per consumer, the highest offset FetchFacts returned (`<name>.fetched`) and
/// the last confirmed offset (`<name>.confirmed`).
pub(super) const MARKS_BUCKET: &str = "bsfg_consumer_marks";
/// KV bucket holding each pull's status as JSON, for `bsfg status`.
pub(super) const STATUS_BUCKET: &str = "bsfg_pull_status";
/// KV bucket holding firmware install requests and the firmware agent's status, as JSON.
pub(super) const FIRMWARE_BUCKET: &str = "bsfg_firmware";
/// The JetStream API of the zone's account (no domain prefix on the local connection).
pub(super) const JS_API: &str = "$JS.API";

pub struct JetStreamStore {
    pub(super) js: jetstream::Context,
    pub(super) streams: BTreeMap<Category, stream::Stream>,
    pub(super) policies: BTreeMap<Category, CategoryPolicy>,
    pub(super) consumers: BTreeMap<String, ConsumerHandle>,
    pub(super) marks: jetstream::kv::Store,
    statuses: jetstream::kv::Store,
    pub(super) firmware: jetstream::kv::Store,
    /// Last offset appended per category by this node, to wake long polls.
    pub(super) appended: BTreeMap<Category, tokio::sync::watch::Sender<u64>>,
    pub(super) buckets: BTreeMap<String, ObjectStore>,
    /// Serializes puts so "exists with other bytes" is decided without a race.
    pub(super) put_lock: Mutex<()>,
    /// Serializes appends of one message id across categories (`append.rs`).
    pub(super) id_locks: super::append::MessageIdLocks,
    /// Where the chunks of the objects read last are (`object_index.rs`).
    pub(super) object_indexes: super::object_index::ObjectIndexes,
    /// How long one request to nats-server may take (`nats.request_timeout`).
    pub(super) request_timeout: Duration,
    /// The categories whose streams take atomic batches (`allow_atomic`, nats-server 2.12+).
    pub(super) atomic: BTreeSet<Category>,
}

pub(super) struct ConsumerHandle {
    pub(super) consumer: PullConsumer,
    /// One fetch or confirm at a time per consumer, and its marks.
    pub(super) marks: Arc<Mutex<ConsumerMarks>>,
}

/// What the node records per consumer besides JetStream's own consumer state.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ConsumerMarks {
    /// Highest offset FetchFacts returned; confirming beyond it is refused.
    pub fetched: u64,
    /// Last confirmed offset, written after the ack: it survives even a kill -9 of nats-server,
    /// which may lose the consumer's most recent acks (they are flushed lazily).
    pub confirmed: u64,
}

pub(super) fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

impl JetStreamStore {
    /// Connects to the zone's nats-server and creates or updates every stream, bucket and durable
    /// consumer the config declares.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let js = connect(config, &format!("bsfg-{}", config.zone)).await?;
        let mut streams = BTreeMap::new();
        let mut atomic = BTreeSet::new();
        for (category, policy) in &config.categories {
            let stream = ensure_stream(&js, *category, policy).await?;
            if stream.cached_info().config.allow_atomic_publish {
                atomic.insert(*category);
            }
            streams.insert(*category, stream);
        }
        let marks = ensure_kv(
            &js,
            MARKS_BUCKET,
            "bsfg: fetched and confirmed offsets per consumer",
        )
        .await?;
        let statuses = ensure_kv(&js, STATUS_BUCKET, "bsfg: status of each pull").await?;
        let firmware = ensure_kv(
            &js,
            FIRMWARE_BUCKET,
            "bsfg: firmware install requests and the firmware agent's status",
        )
        .await?;
        let mut consumers = BTreeMap::new();
        for spec in config.consumers.values() {
            let stream = &streams[&spec.category];
            let consumer = ensure_consumer(stream, spec).await?;
            let state = ConsumerMarks {
                fetched: read_mark(&marks, &fetched_key(&spec.name)).await?,
                confirmed: read_mark(&marks, &confirmed_key(&spec.name)).await?,
            };
            consumers.insert(
                spec.name.clone(),
                ConsumerHandle {
                    consumer,
                    marks: Arc::new(Mutex::new(state)),
                },
            );
        }
        let appended = Category::ALL
            .into_iter()
            .map(|c| (c, tokio::sync::watch::channel(0).0))
            .collect();
        let buckets = super::objects::ensure_buckets(&js, config).await?;
        Ok(JetStreamStore {
            js,
            streams,
            policies: config.categories.clone(),
            consumers,
            marks,
            statuses,
            firmware,
            appended,
            buckets,
            put_lock: Mutex::new(()),
            id_locks: Default::default(),
            object_indexes: Default::default(),
            request_timeout: config.nats.request_timeout,
            atomic,
        })
    }

    pub(super) fn consumer(&self, spec: &ConsumerSpec) -> Result<&ConsumerHandle, StoreError> {
        self.consumers
            .get(&spec.name)
            .ok_or_else(|| StoreError::UnknownConsumer(spec.name.clone()))
    }

    pub(super) fn stream(&self, category: Category) -> Result<&stream::Stream, StoreError> {
        self.streams
            .get(&category)
            .ok_or_else(|| StoreError::Unavailable(format!("stream for {category} not set up")))
    }

    pub(super) async fn stream_state(
        &self,
        category: Category,
    ) -> Result<stream::State, StoreError> {
        let mut stream = self.stream(category)?.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable(&format!("stream info of {}", category.stream_name()), e))?;
        Ok(info.state.clone())
    }
}

/// A JetStream context on the zone's nats-server, with the configured credentials; `name` is how
/// the connection shows in the server's `connz`.
pub(super) async fn connect(config: &Config, name: &str) -> Result<jetstream::Context, StoreError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
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
    Ok(jetstream::new(client))
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
        // JetStream refuses a duplicate window longer than max_age; idempotency does not use it.
        duplicate_window: if policy.max_age.is_zero() {
            policy.duplicate_window
        } else {
            policy.duplicate_window.min(policy.max_age)
        },
        allow_direct: true,
        // A page of pulled facts is stored as one batch (`append.rs`). A node of an earlier
        // version clears it again when it starts, and never sends batches.
        allow_atomic_publish: true,
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
        // The consumer only carries the cursor: a confirm takes deliveries to acknowledge them
        // and reads nothing but their sequence, so the facts' payloads stay on the server. A
        // node of an earlier version updates it back to whole messages when it starts, and this
        // one to headers only again; both read only the sequence.
        headers_only: true,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| unavailable(&format!("creating consumer {}", spec.name), e))
}

async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
) -> Result<jetstream::kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(jetstream::kv::Config {
        bucket: bucket.to_string(),
        description: description.to_string(),
        history: 1,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| unavailable(&format!("creating the KV bucket {bucket}"), e))
}

pub(super) async fn read_mark(kv: &jetstream::kv::Store, key: &str) -> Result<u64, StoreError> {
    let value = kv
        .get(key)
        .await
        .map_err(|e| unavailable(&format!("reading consumer mark {key}"), e))?;
    Ok(value
        .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()))
        .unwrap_or(0))
}

/// A consumer's `<name>.fetched` key in [`MARKS_BUCKET`].
pub(super) fn fetched_key(consumer: &str) -> String {
    format!("{consumer}.fetched")
}

/// A consumer's `<name>.confirmed` key in [`MARKS_BUCKET`].
pub(super) fn confirmed_key(consumer: &str) -> String {
    format!("{consumer}.confirmed")
}

/// The first 128 bits of SHA-256(message_id) in hex: the last token of a fact's subject.
pub(super) fn idempotency_key(message_id: &str) -> String {
    hex::encode(&Sha256::digest(message_id.as_bytes())[..16])
}

/// `facts.<category>.<kind>.<idempotency key>`: where a fact is published.
pub fn fact_subject(category: Category, kind: &str, message_id: &str) -> String {
    format!("facts.{category}.{kind}.{}", idempotency_key(message_id))
}

/// `facts.<category>.*.<idempotency key>`: every subject a fact with this message id could have
/// been stored under in the category, whatever its subject kind.
pub(super) fn idempotency_filter(category: Category, message_id: &str) -> String {
    format!("facts.{category}.*.{}", idempotency_key(message_id))
}

impl Store for JetStreamStore {
    async fn append(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        self.append_fact(new).await
    }

    async fn append_page<'a>(
        &'a self,
        facts: &'a [NewFact<'a>],
    ) -> Vec<Result<Appended, StoreError>> {
        self.append_page_pipelined(facts).await
    }

    async fn gap(&self, spec: &ConsumerSpec) -> Result<Option<super::gap::Gap>, StoreError> {
        self.find_gap(spec).await
    }

    async fn put_firmware(&self, key: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.put_firmware_record(key, json).await
    }

    async fn get_firmware(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_firmware_record(key).await
    }

    async fn firmware_keys(&self) -> Result<Vec<String>, StoreError> {
        self.firmware_record_keys().await
    }

    async fn skip_gap(
        &self,
        spec: &ConsumerSpec,
        gap: super::gap::Gap,
    ) -> Result<Option<super::gap::Gap>, StoreError> {
        self.move_past_gap(spec, gap).await
    }

    async fn fetch(
        &self,
        spec: &ConsumerSpec,
        limit: u32,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Page, StoreError> {
        self.fetch_page(spec, limit, max_bytes, max_wait).await
    }

    async fn confirm(&self, spec: &ConsumerSpec, offset: u64) -> Result<u64, StoreError> {
        self.confirm_offset(spec, offset).await
    }

    async fn cursor(&self, spec: &ConsumerSpec) -> Result<(u64, u64), StoreError> {
        let handle = self.consumer(spec)?;
        let confirmed = handle.marks.lock().await.confirmed;
        let mut consumer = handle.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| unavailable(&format!("consumer info of {}", spec.name), e))?;
        let cursor = info.ack_floor.stream_sequence.max(confirmed);
        Ok((
            cursor,
            self.stream_state(spec.category).await?.last_sequence,
        ))
    }

    async fn put_status(&self, pull: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.statuses
            .put(pull, json.into())
            .await
            .map_err(|e| unavailable(&format!("recording the status of pull {pull}"), e))?;
        Ok(())
    }

    async fn get_status(&self, pull: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .statuses
            .get(pull)
            .await
            .map_err(|e| unavailable(&format!("reading the status of pull {pull}"), e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn fill(&self, category: Category) -> Result<CategoryFill, StoreError> {
        // Read fresh every time: a safety-critical category must not accept on a stale reading.
        let state = self.stream_state(category).await?;
        let max_bytes = self.policies[&category].max_bytes;
        let percent = if max_bytes > 0 {
            state.bytes as f64 * 100.0 / max_bytes as f64
        } else {
            0.0
        };
        Ok(CategoryFill {
            bytes: state.bytes,
            max_bytes,
            percent,
        })
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

    async fn put_object_stream<R: tokio::io::AsyncRead + Send + Unpin>(
        &self,
        expected: super::ExpectedObject<'_>,
        reader: R,
    ) -> Result<ObjectInfo, StoreError> {
        self.put_object_stream_impl(expected, reader).await
    }

    type ObjectReader = super::object_read::ChunkReader;

    async fn read_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, Self::ObjectReader), StoreError> {
        self.read_object_impl(bucket, key).await
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

    async fn list_objects(&self, bucket: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.list_objects_impl(bucket).await
    }
}
