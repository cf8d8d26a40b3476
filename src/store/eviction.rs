//! The eviction watch (SPEC §3): retention never passes a consumer's cursor without a logged,
//! counted warning — seen when it happens, not at the next fetch. Every few seconds, independent
//! of any fetch, the node looks for a gap right after each declared consumer's cursor (facts
//! evicted from the stream's head, or a hole of deleted messages) and, for offsets not reported
//! before, logs one warning and adds them to `bsfg_evicted_unconfirmed_facts_total{consumer}`.
//!
//! It only observes: the cursor moves past a gap only through `bsfg skip-gap` (`gap.rs`).
//!
//! Limits: it sees the first gap after each cursor; a second hole further on is reported once
//! the cursor reaches it. What was reported is kept in memory, so a restarted node reports a gap
//! that is still there once more (and counts it in its fresh counter).

use super::{Store, StoreError, gap::Gap, jetstream::JetStreamStore};
use crate::{config::Config, ops::metrics::Metrics};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

/// How often the watch looks.
pub const EVICTION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Offsets already reported per consumer, as disjoint inclusive ranges.
#[derive(Debug, Default)]
pub struct Reported {
    ranges: Vec<(u64, u64)>,
}

impl Reported {
    /// Records `gap` and returns how many of its offsets were not reported before. Ranges at or
    /// below the gap's cursor are forgotten (the cursor never goes back).
    pub fn record(&mut self, gap: Gap) -> u64 {
        self.ranges.retain(|(_, to)| *to > gap.cursor);
        let mut fresh = Vec::new();
        let mut next = gap.from;
        let mut known = self.ranges.clone();
        known.sort_unstable();
        for (from, to) in known {
            if to < next || from > gap.to {
                continue;
            }
            if from > next {
                fresh.push((next, from - 1));
            }
            next = next.max(to.saturating_add(1));
        }
        if next <= gap.to {
            fresh.push((next, gap.to));
        }
        let count = fresh.iter().map(|(from, to)| to - from + 1).sum();
        self.ranges.extend(fresh);
        count
    }
}

fn series(consumer: &str) -> String {
    format!("bsfg_evicted_unconfirmed_facts_total{{consumer=\"{consumer}\"}}")
}

/// Runs forever: checks every consumer each [`EVICTION_CHECK_INTERVAL`].
pub async fn watch(store: Arc<JetStreamStore>, config: Arc<Config>, metrics: Arc<Metrics>) {
    let mut reported: BTreeMap<String, Reported> = BTreeMap::new();
    for name in config.consumers.keys() {
        metrics.add_counter(series(name), 0);
    }
    let mut ticks = tokio::time::interval(EVICTION_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for spec in config.consumers.values() {
            match store.gap(spec).await {
                Ok(Some(gap)) => {
                    let fresh = reported.entry(spec.name.clone()).or_default().record(gap);
                    if fresh > 0 {
                        tracing::warn!(
                            consumer = %spec.name,
                            category = %spec.category,
                            cursor = gap.cursor,
                            from_offset = gap.from,
                            to_offset = gap.to,
                            newly_missing = fresh,
                            "retention evicted facts a consumer had not confirmed: FetchFacts answers data_loss until an operator runs bsfg skip-gap"
                        );
                        metrics.add_counter(series(&spec.name), fresh);
                    }
                }
                Ok(None) => {}
                Err(StoreError::Unavailable(e)) => {
                    tracing::debug!(consumer = %spec.name, error = %e, "eviction check skipped: JetStream unavailable");
                }
                Err(e) => {
                    tracing::warn!(consumer = %spec.name, error = %e, "eviction check failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(cursor: u64, from: u64, to: u64) -> Gap {
        Gap { cursor, from, to }
    }

    #[test]
    fn each_lost_offset_is_counted_once() {
        let mut r = Reported::default();
        assert_eq!(r.record(gap(0, 1, 3)), 3);
        assert_eq!(r.record(gap(0, 1, 3)), 0, "the same gap again");
        assert_eq!(r.record(gap(0, 1, 5)), 2, "it grew by two");
        // A hole further on, after the cursor moved past the first gap.
        assert_eq!(r.record(gap(5, 8, 9)), 2);
        // A hole counted first, then head eviction reaching below it.
        let mut r = Reported::default();
        assert_eq!(r.record(gap(0, 5, 6)), 2);
        assert_eq!(r.record(gap(0, 1, 9)), 7);
        assert_eq!(r.record(gap(0, 1, 9)), 0);
    }
}
