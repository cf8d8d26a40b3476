//! AppendFact on JetStream (SPEC §2, §3): idempotency is the node's, and it comes before
//! backpressure.
//!
//! 1. The message id's stripe lock is taken (64 stripes, chosen by a hash of the id), so two
//!    appends of one id inside this node never interleave — whatever their categories.
//! 2. Every category stream is asked, with one direct get each (concurrently), for the last fact
//!    on `facts.<category>.*.<key>`. A stored fact answers the call: same content hash → its
//!    offset and category with `duplicate`; other content → [`StoreError::Conflict`] naming where
//!    it is. Nothing is written in either case, and the fill of the category does not matter.
//! 3. Only a new fact meets backpressure (a safety-critical category from 80 % fill) and is
//!    published — still with `Nats-Expected-Last-Subject-Sequence: 0` on its category's key
//!    subject, so JetStream itself refuses a second copy in one category even from outside this
//!    node.
//!
//! Limits: the stripe locks are this process's. Two processes appending the same id at the same
//! moment into two *different* categories could both store it (one node writes a zone's streams,
//! SPEC §1); within one category JetStream's check holds regardless. Every append costs one
//! direct get per configured category before the publish.

use super::{
    Appended, NewFact, Store, StoreError,
    atomic_batch::{self, Outbound},
    batch_get,
    jetstream::{
        CONTENT_HASH_HEADER, EXPECTED_LAST_SUBJECT_HEADER, JS_API, JetStreamStore, fact_subject,
        idempotency_filter, idempotency_key, unavailable,
    },
};
use crate::{
    fact::{Category, subject_kind},
    proto::StoredFact,
};
use async_nats::HeaderMap;
use async_nats::jetstream::{
    context::{PublishAckFuture, PublishError, PublishErrorKind},
    message::{PublishMessage, StreamMessage},
    publish::PublishAck,
    stream::DirectGetErrorKind,
};
use bytes::Bytes;
use futures::future::try_join_all;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 64;

/// Per-message-id locks: one of [`STRIPES`] mutexes, chosen by the id.
pub(super) struct MessageIdLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for MessageIdLocks {
    fn default() -> Self {
        MessageIdLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl MessageIdLocks {
    fn stripe(&self, message_id: &str) -> usize {
        let digest = Sha256::digest(message_id.as_bytes());
        usize::from(digest[0]) % self.stripes.len()
    }

    pub(super) async fn lock(&self, message_id: &str) -> MutexGuard<'_, ()> {
        self.stripes[self.stripe(message_id)].lock().await
    }

    /// The stripes of all `ids`, each once, taken in stripe order (so two pages never wait on
    /// each other crosswise).
    async fn lock_all<'i>(&self, ids: impl Iterator<Item = &'i str>) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = ids.map(|id| self.stripe(id)).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for index in stripes {
            guards.push(self.stripes[index].lock().await);
        }
        guards
    }
}

impl JetStreamStore {
    pub(super) async fn append_fact(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        let _same_id = self.id_locks.lock(&new.envelope.message_id).await;
        if let Some((category, stored)) = self.stored_under_id(new).await? {
            return answer(new, category, &stored);
        }
        self.room_for(new.category, &mut BTreeSet::new()).await?;
        self.publish(new).await
    }

    /// The fact stored under the message id, in the category appended to first, then in any
    /// other (in `Category::ALL` order).
    async fn stored_under_id(
        &self,
        new: NewFact<'_>,
    ) -> Result<Option<(Category, StreamMessage)>, StoreError> {
        let mut categories: Vec<Category> = self.streams.keys().copied().collect();
        categories.sort_by_key(|c| *c != new.category);
        let found = try_join_all(categories.iter().map(|category| async move {
            let filter = idempotency_filter(*category, &new.envelope.message_id);
            match self
                .stream(*category)?
                .direct_get_last_for_subject(filter)
                .await
            {
                Ok(message) => Ok(Some((*category, message))),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(unavailable(
                    &format!("looking up the message id in {}", category.stream_name()),
                    e,
                )),
            }
        }))
        .await?;
        Ok(found.into_iter().flatten().next())
    }

    /// A page (SPEC §2 rules for each fact, as [`Self::append_fact`]): the ids' stripe locks,
    /// the page's idempotency lookups as one batch read per category, then its new facts as one
    /// atomic batch ([`Self::publish_as_batch`]) or, where that does not apply, their publishes
    /// sent in page order before the first acknowledgement is awaited. A lookup that finds a
    /// conflict ends the page there: nothing from it on is published. A publish refused after
    /// others of the page were sent (full, or stored meanwhile from outside this node) ends the
    /// results there; what was sent after it may be stored, which a retry of the page answers as
    /// duplicates.
    pub(super) async fn append_page_pipelined(
        &self,
        facts: &[NewFact<'_>],
    ) -> Vec<Result<Appended, StoreError>> {
        let ids: BTreeSet<&str> = facts
            .iter()
            .map(|f| f.envelope.message_id.as_str())
            .collect();
        if ids.len() < facts.len() {
            // One id twice in a page: the second's lookup could not see the first's publish.
            return super::append_each(self, facts).await;
        }
        let _same_ids = self.id_locks.lock_all(ids.into_iter()).await;
        let lookups = match self.stored_under_ids(facts).await {
            Ok(found) => found,
            Err(e) => return vec![Err(e)],
        };
        let mut results: Vec<Option<Result<Appended, StoreError>>> = Vec::new();
        let mut new_ones = Vec::new();
        let mut room_checked = BTreeSet::new();
        for (new, lookup) in facts.iter().zip(lookups) {
            let outcome = match lookup {
                Some((category, stored)) => Some(answer(*new, category, &stored)),
                None => match self.room_for(new.category, &mut room_checked).await {
                    Err(e) => Some(Err(e)),
                    Ok(()) => {
                        new_ones.push(results.len());
                        None
                    }
                },
            };
            let failed = matches!(outcome, Some(Err(_)));
            results.push(outcome);
            if failed {
                break;
            }
        }
        match self.publish_as_batch(facts, &new_ones).await {
            Ok(Some(appended)) => {
                for (index, appended) in new_ones.iter().zip(appended) {
                    results[*index] = Some(Ok(appended));
                }
            }
            Ok(None) => {
                let mut sent = Vec::new();
                for index in new_ones {
                    match self.send(facts[index]).await {
                        Ok(ack) => sent.push((index, ack)),
                        Err(e) => {
                            results[index] = Some(Err(e));
                            break;
                        }
                    }
                }
                for (index, ack) in sent {
                    results[index] = Some(self.acknowledged(facts[index], ack.await).await);
                }
            }
            Err(e) => {
                if let Some(first) = new_ones.first() {
                    results[*first] = Some(Err(e));
                }
            }
        }
        let mut results: Vec<Result<Appended, StoreError>> =
            results.into_iter().flatten().collect();
        if let Some(first_error) = results.iter().position(Result::is_err) {
            results.truncate(first_error + 1);
        }
        results
    }

    /// Backpressure (SPEC §3) for a new fact of `category`: a safety-critical category refuses
    /// from 80 % fill. Checked once per category and page (`checked`).
    async fn room_for(
        &self,
        category: Category,
        checked: &mut BTreeSet<Category>,
    ) -> Result<(), StoreError> {
        if !self.policies[&category].safety_critical || !checked.insert(category) {
            return Ok(());
        }
        let fill = self.fill(category).await?;
        if fill.percent >= 80.0 {
            return Err(StoreError::Full {
                category,
                percent: fill.percent,
            });
        }
        Ok(())
    }

    /// For each fact of a page, the fact stored under its message id, as [`Self::stored_under_id`]
    /// finds it (its own category first), with one batch read per category for the whole page
    /// (`batch_get::last_for`) instead of one direct get per fact and category.
    async fn stored_under_ids(
        &self,
        facts: &[NewFact<'_>],
    ) -> Result<Vec<Option<(Category, StreamMessage)>>, StoreError> {
        let keys: Vec<String> = facts
            .iter()
            .map(|f| idempotency_key(&f.envelope.message_id))
            .collect();
        let index: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| (key.as_str(), i))
            .collect();
        let client = self.js.client();
        let per_category = try_join_all(self.streams.keys().map(|category| {
            let client = &client;
            async move {
                let filters: Vec<String> = facts
                    .iter()
                    .map(|f| idempotency_filter(*category, &f.envelope.message_id))
                    .collect();
                let mut found = Vec::new();
                for chunk in filters.chunks(batch_get::MAX_SUBJECTS.min(batch_get::MAX_BATCH)) {
                    found.extend(
                        batch_get::last_for(
                            client,
                            JS_API,
                            &category.stream_name(),
                            chunk,
                            self.request_timeout,
                        )
                        .await?,
                    );
                }
                Ok::<_, StoreError>((*category, found))
            }
        }))
        .await?;
        let mut found: Vec<Option<(Category, StreamMessage)>> = vec![None; facts.len()];
        for (category, messages) in per_category {
            for message in messages {
                let Some(&i) = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|k| index.get(k))
                else {
                    continue;
                };
                let own = facts[i].category;
                let better = match &found[i] {
                    None => true,
                    Some((earlier, _)) => *earlier != own && category == own,
                };
                if better {
                    found[i] = Some((category, message));
                }
            }
        }
        Ok(found)
    }

    /// The page's new facts (`indices` of `facts`) as one atomic batch when they are two or more
    /// of one category whose stream allows it: stored together, in order, as one write (under
    /// `sync_interval: always`, one sync for the page instead of one per fact). `None` when the
    /// batch does not apply, or when the server refused it as a whole (a fact stored meanwhile
    /// from outside this node, the stream full): nothing was stored, and the caller publishes
    /// them one by one for each fact's own answer.
    async fn publish_as_batch(
        &self,
        facts: &[NewFact<'_>],
        indices: &[usize],
    ) -> Result<Option<Vec<Appended>>, StoreError> {
        let Some(first) = indices.first().map(|i| facts[*i].category) else {
            return Ok(None);
        };
        if indices.len() < 2
            || indices.len() > atomic_batch::MAX_MESSAGES
            || !self.atomic.contains(&first)
            || indices.iter().any(|i| facts[*i].category != first)
        {
            return Ok(None);
        }
        let messages = indices.iter().map(|i| outbound(facts[*i])).collect();
        let client = self.js.client();
        match atomic_batch::publish(&client, messages, self.request_timeout).await? {
            atomic_batch::Outcome::Stored { last } => {
                if let Some(sender) = self.appended.get(&first) {
                    sender.send_replace(last);
                }
                let start = last + 1 - indices.len() as u64;
                Ok(Some(
                    (start..=last)
                        .map(|offset| Appended {
                            offset,
                            category: first,
                            duplicate: false,
                        })
                        .collect(),
                ))
            }
            atomic_batch::Outcome::Refused(reason) => {
                tracing::debug!(%reason, facts = indices.len(), "the page was refused as one batch; publishing it fact by fact");
                Ok(None)
            }
        }
    }

    async fn publish(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        let ack = self.send(new).await?;
        self.acknowledged(new, ack.await).await
    }

    /// Sends the fact's publish (with the per-id check `Nats-Expected-Last-Subject-Sequence: 0`)
    /// without waiting for its acknowledgement.
    async fn send(&self, new: NewFact<'_>) -> Result<PublishAckFuture, StoreError> {
        let message = outbound(new);
        let publish = PublishMessage::build()
            .payload(message.payload)
            .headers(message.headers);
        self.js
            .send_publish(message.subject, publish)
            .await
            .map_err(|e| unavailable("publishing the fact", e))
    }

    /// What the acknowledgement of `new`'s publish means for the append.
    async fn acknowledged(
        &self,
        new: NewFact<'_>,
        ack: Result<PublishAck, PublishError>,
    ) -> Result<Appended, StoreError> {
        let filter = idempotency_filter(new.category, &new.envelope.message_id);
        match ack {
            Ok(ack) => {
                if let Some(sender) = self.appended.get(&new.category) {
                    sender.send_replace(ack.sequence);
                }
                Ok(Appended {
                    offset: ack.sequence,
                    category: new.category,
                    duplicate: false,
                })
            }
            // Stored meanwhile by someone outside this node: answer as for any stored fact.
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let stored = self
                    .stream(new.category)?
                    .direct_get_last_for_subject(&filter)
                    .await
                    .map_err(|e| unavailable("reading the stored fact", e))?;
                answer(new, new.category, &stored)
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
}

/// A fact as published: on its key's subject, with its content hash, and refused by JetStream
/// if its category already holds a fact under the key (`Nats-Expected-Last-Subject-Sequence: 0`
/// on the key's filter).
fn outbound(new: NewFact<'_>) -> Outbound {
    let subject = fact_subject(
        new.category,
        subject_kind(&new.fact.subject),
        &new.envelope.message_id,
    );
    let filter = idempotency_filter(new.category, &new.envelope.message_id);
    let payload = StoredFact {
        envelope: Some(new.envelope.clone()),
        fact: Some(new.fact.clone()),
        ..Default::default()
    }
    .encode_to_vec();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_HASH_HEADER, hex::encode(new.content_hash).as_str());
    headers.insert(EXPECTED_LAST_SUBJECT_HEADER, filter.as_str());
    headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    Outbound {
        subject,
        headers,
        payload: Bytes::from(payload),
    }
}

/// The idempotency answer for `new` given the fact stored under its key in `category`.
fn answer(
    new: NewFact<'_>,
    category: Category,
    stored: &StreamMessage,
) -> Result<Appended, StoreError> {
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
            category,
            duplicate: true,
        })
    } else {
        Err(StoreError::Conflict {
            message_id: new.envelope.message_id.clone(),
            category,
            offset: stored.sequence,
        })
    }
}
