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
    jetstream::{
        CONTENT_HASH_HEADER, EXPECTED_LAST_SUBJECT_HEADER, JetStreamStore, fact_subject,
        idempotency_filter, unavailable,
    },
};
use crate::{
    fact::{Category, subject_kind},
    proto::StoredFact,
};
use async_nats::jetstream::{
    context::PublishErrorKind,
    message::{PublishMessage, StreamMessage},
    stream::DirectGetErrorKind,
};
use bytes::Bytes;
use futures::future::try_join_all;
use prost::Message;
use sha2::{Digest, Sha256};
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
    pub(super) async fn lock(&self, message_id: &str) -> MutexGuard<'_, ()> {
        let digest = Sha256::digest(message_id.as_bytes());
        let index = usize::from(digest[0]) % self.stripes.len();
        self.stripes[index].lock().await
    }
}

impl JetStreamStore {
    pub(super) async fn append_fact(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
        let _same_id = self.id_locks.lock(&new.envelope.message_id).await;
        if let Some((category, stored)) = self.stored_under_id(new).await? {
            return answer(new, category, &stored);
        }
        if self.policies[&new.category].safety_critical {
            let fill = self.fill(new.category).await?;
            if fill.percent >= 80.0 {
                return Err(StoreError::Full {
                    category: new.category,
                    percent: fill.percent,
                });
            }
        }
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

    async fn publish(&self, new: NewFact<'_>) -> Result<Appended, StoreError> {
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
        let publish = PublishMessage::build()
            .payload(Bytes::from(payload))
            .header(CONTENT_HASH_HEADER, hex::encode(new.content_hash).as_str())
            .header(EXPECTED_LAST_SUBJECT_HEADER, filter.as_str())
            .expected_last_subject_sequence(0);
        let ack = match self.js.send_publish(subject, publish).await {
            Ok(future) => future.await,
            Err(e) => return Err(unavailable("publishing the fact", e)),
        };
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
