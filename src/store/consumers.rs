//! FetchFacts and ConfirmReceipt on JetStream (SPEC §3, §4).
//!
//! - The cursor is the durable consumer's ack floor (`AckPolicy::All`), so `nats consumer info`
//!   shows it. nats-server flushes consumer acks lazily, so a kill -9 of nats-server can lose the
//!   latest ones; the node therefore also writes each confirmed offset to the KV bucket
//!   `bsfg_consumer_marks` after the ack, and the cursor is the higher of the two.
//! - A page is read straight from the category stream by sequence (batch direct get, one request
//!   for up to 1 000 facts), starting right after the cursor: the same call without a confirm
//!   returns the same page, whatever happened in between. The highest offset ever returned is kept per consumer in the same KV bucket;
//!   confirming beyond it is refused.
//! - Confirming pulls the consumer's next deliveries up to the offset and acks that one message,
//!   which acks everything before it; any delivery past the offset is handed back (NAK).
//! - Facts after the cursor that retention already evicted are reported as a gap (`data_loss`),
//!   never skipped; only an operator's `bsfg skip-gap` moves the cursor past one (`gap.rs`).
//!
//! - A long poll waits for a first fact without holding the consumer's lock; the lock is taken
//!   only to read the page and record the fetched mark, so metrics and confirms never wait behind
//!   a waiting fetch.
//!
//! Limits: if the node dies between pulling and acking in a confirm, those deliveries stay in
//! flight for the consumer's ack wait (5 s); a confirm meanwhile answers `InFlight` (retry).

use super::{
    Page, StoreError, batch_get,
    gap::gap_at,
    jetstream::{
        ConsumerMarks, JS_API, JetStreamStore, confirmed_key, fetched_key, read_mark, unavailable,
    },
};
use crate::{config::ConsumerSpec, fact::Category, proto::StoredFact};
use async_nats::jetstream::{self, AckKind};
use futures::{StreamExt, future::try_join_all};
use prost::Message;
use std::time::{Duration, Instant};

/// How often a long poll re-reads the stream in case someone else appended.
const LONG_POLL_RECHECK: Duration = Duration::from_secs(1);

fn decode(
    message: &jetstream::message::StreamMessage,
    category: Category,
) -> Result<StoredFact, StoreError> {
    let mut stored = StoredFact::decode(message.payload.as_ref())
        .map_err(|e| StoreError::Corrupt(format!("offset {}: {e}", message.sequence)))?;
    stored.offset = message.sequence;
    stored.category = category.to_wire() as i32;
    stored.appended_at_unix_ms =
        i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    Ok(stored)
}

impl JetStreamStore {
    /// Pulls up to `batch` deliveries and acks the highest one at or below `offset` (ack policy
    /// *all*: everything before it is acked too); hands back deliveries past `offset`. Returns the
    /// new floor, or `None` when no usable delivery came (they are in flight elsewhere).
    async fn ack_up_to(
        &self,
        handle: &super::jetstream::ConsumerHandle,
        floor: u64,
        offset: u64,
        batch: u64,
    ) -> Result<Option<u64>, StoreError> {
        let want = usize::try_from((offset - floor).min(batch)).unwrap_or(usize::MAX);
        let mut deliveries = handle
            .consumer
            .fetch()
            .max_messages(want)
            .messages()
            .await
            .map_err(|e| unavailable("pull request", e))?;
        let mut best: Option<(u64, jetstream::Message)> = None;
        let mut hand_back = Vec::new();
        while let Some(delivery) = deliveries.next().await {
            let message = delivery.map_err(|e| unavailable("pull", e))?;
            let sequence = message
                .info()
                .map_err(|e| StoreError::Corrupt(format!("delivery metadata: {e}")))?
                .stream_sequence;
            if sequence > offset {
                hand_back.push(message);
            } else if best.as_ref().is_none_or(|(b, _)| sequence > *b) {
                best = Some((sequence, message));
            }
        }
        try_join_all(
            hand_back
                .iter()
                .map(|m| m.double_ack_with(AckKind::Nak(None))),
        )
        .await
        .map_err(|e| unavailable("handing back deliveries", e))?;
        match best {
            Some((sequence, message)) if sequence > floor => {
                message
                    .double_ack()
                    .await
                    .map_err(|e| unavailable("acknowledging", e))?;
                Ok(Some(sequence))
            }
            _ => Ok(None),
        }
    }

    /// JetStream's ack floor of the consumer.
    pub(super) async fn ack_floor(&self, spec: &ConsumerSpec) -> Result<u64, StoreError> {
        let mut consumer = self.consumer(spec)?.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| unavailable(&format!("consumer info of {}", spec.name), e))?;
        Ok(info.ack_floor.stream_sequence)
    }

    /// Takes in the confirmed mark as recorded now — another process (`bsfg skip-gap`) may have
    /// moved it — and returns the result.
    pub(super) async fn reload_confirmed(
        &self,
        spec: &ConsumerSpec,
        marks: &mut ConsumerMarks,
    ) -> Result<u64, StoreError> {
        let recorded = read_mark(&self.marks, &confirmed_key(&spec.name)).await?;
        marks.confirmed = marks.confirmed.max(recorded);
        Ok(marks.confirmed)
    }

    pub(super) async fn write_mark(&self, key: String, value: u64) -> Result<(), StoreError> {
        self.marks
            .put(&key, value.to_string().into())
            .await
            .map_err(|e| unavailable(&format!("recording consumer mark {key}"), e))?;
        Ok(())
    }

    pub(super) async fn fetch_page(
        &self,
        spec: &ConsumerSpec,
        limit: u32,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Page, StoreError> {
        let handle = self.consumer(spec)?;
        // Wait without holding the consumer's lock: metrics, status and confirms take it, and
        // must never wait behind a long poll (SPEC §7).
        self.wait_for_facts(spec, max_wait).await?;
        let mut marks = handle.marks.lock().await;
        let mut cursor = self.ack_floor(spec).await?.max(marks.confirmed);
        let state = self.stream_state(spec.category).await?;
        let stream = self.stream(spec.category)?;
        let subjects = spec.category.subject_filter();
        let mut gap = gap_at(stream, &subjects, cursor, &state).await?;
        if gap.is_some() {
            // An operator may have moved the cursor past this gap (`bsfg skip-gap`, another
            // process) since this node last read the mark.
            let recorded = self.reload_confirmed(spec, &mut marks).await?;
            if recorded > cursor {
                cursor = recorded;
                gap = gap_at(stream, &subjects, cursor, &state).await?;
            }
        }
        if let Some(gap) = gap {
            return Err(StoreError::Gap {
                consumer: spec.name.clone(),
                from: gap.from,
                to: gap.to,
            });
        }
        let end = state.last_sequence.min(cursor + u64::from(limit));
        // Read in batches, and no further than the response budget can carry. The page ends
        // before a hole in the stream; the next page reports it as a gap.
        let mut facts = Vec::new();
        let mut read_bytes = 0usize;
        let mut next = cursor + 1;
        let client = self.js.client();
        let stream_name = spec.category.stream_name();
        'read: while next <= end && read_bytes <= max_bytes {
            let want = usize::try_from(end - next + 1).unwrap_or(usize::MAX);
            let budget = max_bytes.saturating_sub(read_bytes).max(1);
            let messages = batch_get::range(
                &client,
                JS_API,
                &stream_name,
                next,
                want,
                Some(budget),
                self.request_timeout,
            )
            .await?;
            let messages = if messages.is_empty() && facts.is_empty() {
                // The byte budget is a hint to the server, which may send nothing when the first
                // fact alone exceeds it by its headers: one fact always moves the consumer on.
                batch_get::range(
                    &client,
                    JS_API,
                    &stream_name,
                    next,
                    1,
                    None,
                    self.request_timeout,
                )
                .await?
            } else {
                messages
            };
            if messages.is_empty() {
                break;
            }
            for message in messages {
                // The server skips a deleted sequence; the page ends before the hole.
                if message.sequence != next {
                    break 'read;
                }
                read_bytes += message.payload.len();
                facts.push(decode(&message, spec.category)?);
                next += 1;
                if next > end {
                    break 'read;
                }
            }
        }
        if facts.is_empty() && end > cursor {
            // Evicted or deleted between the gap check and the read.
            let state = self.stream_state(spec.category).await?;
            if let Some(gap) = gap_at(stream, &subjects, cursor, &state).await? {
                return Err(StoreError::Gap {
                    consumer: spec.name.clone(),
                    from: gap.from,
                    to: gap.to,
                });
            }
        }
        // Only what the response will carry counts as fetched (SPEC §4).
        let facts = super::within_budget(facts, max_bytes);
        let end = facts.last().map_or(cursor, |f| f.offset);
        if end > marks.fetched {
            self.write_mark(fetched_key(&spec.name), end).await?;
            marks.fetched = end;
        }
        Ok(Page {
            facts,
            high_watermark: state.last_sequence,
        })
    }

    /// Returns once a fact follows the consumer's cursor, or when `max_wait` has passed. Takes
    /// the consumer's lock only for an instant, to read the confirmed mark.
    async fn wait_for_facts(
        &self,
        spec: &ConsumerSpec,
        max_wait: Duration,
    ) -> Result<(), StoreError> {
        if max_wait.is_zero() {
            return Ok(());
        }
        let handle = self.consumer(spec)?;
        // Subscribe before reading the stream so an append in between still wakes us.
        let mut appended = self.appended.get(&spec.category).map(|s| s.subscribe());
        let confirmed = handle.marks.lock().await.confirmed;
        let cursor = self.ack_floor(spec).await?.max(confirmed);
        let mut state = self.stream_state(spec.category).await?;
        let deadline = Instant::now() + max_wait;
        while state.last_sequence <= cursor && Instant::now() < deadline {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(LONG_POLL_RECHECK);
            if let Some(rx) = appended.as_mut() {
                let _ = tokio::time::timeout(wait, rx.changed()).await;
            } else {
                tokio::time::sleep(wait).await;
            }
            state = self.stream_state(spec.category).await?;
        }
        Ok(())
    }

    pub(super) async fn confirm_offset(
        &self,
        spec: &ConsumerSpec,
        offset: u64,
    ) -> Result<u64, StoreError> {
        let handle = self.consumer(spec)?;
        let mut marks = handle.marks.lock().await;
        let floor = self.ack_floor(spec).await?;
        let cursor = floor.max(marks.confirmed);
        if offset <= cursor {
            return Ok(cursor);
        }
        if offset > marks.fetched {
            return Err(StoreError::BeyondFetched {
                consumer: spec.name.clone(),
                offset,
                fetched: marks.fetched,
            });
        }
        // Bring JetStream's ack floor up to the offset, at most max_ack_pending deliveries at a
        // time (after a nats-server crash the floor may be far behind the recorded mark).
        let batch = spec.max_ack_pending.max(1) as u64;
        let mut floor = floor;
        let mut rounds = (offset - floor) / batch + 2;
        while floor < offset && rounds > 0 {
            rounds -= 1;
            match self.ack_up_to(handle, floor, offset, batch).await? {
                Some(acked) => floor = acked,
                None => break,
            }
        }
        let confirmed = floor >= offset;
        if confirmed {
            self.write_mark(confirmed_key(&spec.name), offset).await?;
            marks.confirmed = offset;
            Ok(offset)
        } else {
            Err(StoreError::InFlight {
                consumer: spec.name.clone(),
            })
        }
    }
}
