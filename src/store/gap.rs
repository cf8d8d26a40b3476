//! Gaps after a consumer's cursor (SPEC §4, "no silent loss"): facts that retention evicted before
//! anyone confirmed them, or a hole in the middle of a stream (messages deleted by hand, e.g.
//! `nats stream rmm`) right after the cursor. FetchFacts answers `data_loss` naming them; only an operator's explicit
//! `bsfg skip-gap`, which records an audit fact first, moves the cursor past one.
//!
//! The operator's command runs beside the serving node, so it moves the cursor where both read
//! it: the `<consumer>.confirmed` mark in the marks bucket. A serving node that finds a gap
//! re-reads that mark before answering `data_loss` (see `consumers.rs`), so the next FetchFacts
//! after a skip starts right after the gap. JetStream's own ack floor catches up at the next
//! confirm (evicted messages are never delivered, so the consumer skips them by itself).

use super::{
    StoreError,
    jetstream::{JetStreamStore, confirmed_key, fetched_key, unavailable},
};
use crate::config::ConsumerSpec;
use async_nats::jetstream::stream::{self, DirectGetErrorKind};

/// Offsets `from..=to` evicted right after a consumer's `cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub cursor: u64,
    pub from: u64,
    pub to: u64,
}

impl Gap {
    /// How many facts were lost.
    pub fn missing(&self) -> u64 {
        self.to - self.from + 1
    }
}

/// The gap after `cursor` in a stream in `state`, if facts after the cursor exist or existed but
/// the first one still stored is not the next offset. (A stream whose facts were all evicted has
/// `first_sequence == last_sequence + 1`.)
pub fn gap_after(cursor: u64, first_sequence: u64, last_sequence: u64) -> Option<Gap> {
    (last_sequence > cursor && first_sequence > cursor + 1).then(|| Gap {
        cursor,
        from: cursor + 1,
        to: first_sequence - 1,
    })
}

pub(super) fn gap_in(cursor: u64, state: &stream::State) -> Option<Gap> {
    gap_after(cursor, state.first_sequence, state.last_sequence)
}

/// The gap right after `cursor` in `stream` (whose state is `state`): facts evicted from its head,
/// or a hole in its middle (deleted messages) starting at `cursor + 1`, up to the next fact
/// still stored. Costs nothing unless the stream has interior deletions; then one or two direct
/// gets.
pub(super) async fn gap_at(
    stream: &stream::Stream,
    subjects: &str,
    cursor: u64,
    state: &stream::State,
) -> Result<Option<Gap>, StoreError> {
    if let Some(gap) = gap_in(cursor, state) {
        return Ok(Some(gap));
    }
    let next = cursor + 1;
    if next > state.last_sequence || next < state.first_sequence {
        return Ok(None);
    }
    // Head evictions move the first sequence; only deletions inside the stream leave holes.
    let interior = state.messages < state.last_sequence - state.first_sequence + 1;
    if !interior {
        return Ok(None);
    }
    match stream.direct_get(next).await {
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
        Err(e) => return Err(unavailable("reading the fact after the cursor", e)),
    }
    let to = match stream
        .direct_get_next_for_subject(subjects, Some(next))
        .await
    {
        Ok(stored) => stored.sequence.saturating_sub(1),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => state.last_sequence,
        Err(e) => return Err(unavailable("looking for the end of a hole", e)),
    };
    Ok((to >= next).then_some(Gap {
        cursor,
        from: next,
        to,
    }))
}

impl JetStreamStore {
    /// The consumer's cursor as recorded now, by this process or another (`bsfg skip-gap`).
    async fn recorded_cursor(&self, spec: &ConsumerSpec) -> Result<u64, StoreError> {
        let handle = self.consumer(spec)?;
        let mut marks = handle.marks.lock().await;
        let confirmed = self.reload_confirmed(spec, &mut marks).await?;
        Ok(self.ack_floor(spec).await?.max(confirmed))
    }

    /// The gap after the consumer's cursor, if any.
    pub(super) async fn find_gap(&self, spec: &ConsumerSpec) -> Result<Option<Gap>, StoreError> {
        let cursor = self.recorded_cursor(spec).await?;
        let state = self.stream_state(spec.category).await?;
        let stream = self.stream(spec.category)?;
        gap_at(stream, &spec.category.subject_filter(), cursor, &state).await
    }

    /// Moves the consumer's cursor to the last offset of `gap`, provided the gap is still exactly
    /// `gap` (nothing confirmed or evicted meanwhile); otherwise returns the gap as it is now and
    /// changes nothing.
    pub(super) async fn move_past_gap(
        &self,
        spec: &ConsumerSpec,
        gap: Gap,
    ) -> Result<Option<Gap>, StoreError> {
        let now = self.find_gap(spec).await?;
        if now != Some(gap) {
            return Ok(now);
        }
        let handle = self.consumer(spec)?;
        let mut marks = handle.marks.lock().await;
        if marks.fetched < gap.to {
            self.write_mark(fetched_key(&spec.name), gap.to).await?;
            marks.fetched = gap.to;
        }
        self.write_mark(confirmed_key(&spec.name), gap.to).await?;
        marks.confirmed = gap.to;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_only_what_was_evicted_after_the_cursor() {
        // Offsets 1..=10 stored, cursor 3: no gap.
        assert_eq!(gap_after(3, 1, 10), None);
        // 1..=5 evicted, cursor 3: 4..=5 are lost.
        assert_eq!(
            gap_after(3, 6, 10),
            Some(Gap {
                cursor: 3,
                from: 4,
                to: 5
            })
        );
        // Evicted only up to the cursor: nothing lost.
        assert_eq!(gap_after(5, 6, 10), None);
        // Everything evicted (first = last + 1), nothing confirmed: all of 1..=3 are lost.
        let all = gap_after(0, 4, 3).expect("a gap");
        assert_eq!((all.from, all.to, all.missing()), (1, 3, 3));
        // Everything evicted but everything confirmed: nothing lost.
        assert_eq!(gap_after(3, 4, 3), None);
        // Empty stream that never held anything.
        assert_eq!(gap_after(0, 0, 0), None);
        assert_eq!(gap_after(0, 1, 0), None);
    }
}
