//! Receiver-driven replication (SPEC §6): for each configured pull, fetch a page from the peer's
//! durable consumer, bring over any referenced artifact that is missing here (verified by size and
//! digest), append every fact to the local log with the same idempotency rules as AppendFact, and
//! only then confirm to the peer. Depends on the Store port and a [`Peer`], never on NATS.
//!
//! Never confirms ahead of durable appends: the confirm for a page is sent after every append of
//! that page was acknowledged by the store, and after `replication.confirm_delay` when the store
//! syncs to disk on an interval. A conflicting duplicate, an artifact that does not match its
//! reference, or a peer whose offsets went backwards stops that pull loudly (state `stopped`,
//! metric, log, `bsfg status`); other pulls go on. Transient errors back off exponentially with
//! jitter, capped at 1 s (a peer that is down costs one attempt a second, and a healed link is
//! used again within about a second); the first success resets the backoff.
//!
//! Artifacts are streamed into the store chunk by chunk (`artifact.rs`): the node holds one
//! GetObject chunk at a time, never a whole object.
//!
//! A page is appended as one ([`Store::append_page`]: one lookup per category, one batch).
//! Limits: one page at a time per pull (the next fetch waits for the confirm).

mod artifact;
pub mod boundary;
mod error;
pub mod peer;
pub mod status;
pub mod status_line;

use crate::{
    config::{Config, PullSpec},
    fact::{self, validate_append},
    ops::metrics::Metrics,
    proto::{AppendFactRequest, StoredFact},
    rpc::client::ClientError,
    store::{NewFact, Store, StoreError},
};
pub use error::PullError;
use peer::Peer;
use status::{PullStatus, now_unix_ms};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

/// A pull's status, shared by its loop, the once-a-second recorder and the `STATUS=` line.
pub type SharedPullStatus = Arc<Mutex<PullStatus>>;

/// How long past its long poll a running pull may go without a success before its lag grows.
const STALL_MARGIN: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

pub struct PullLoop<S, P> {
    pub spec: PullSpec,
    store: Arc<S>,
    peer: P,
    metrics: Arc<Metrics>,
    status: SharedPullStatus,
    max_fact_bytes: usize,
    confirm_delay: Duration,
}

fn lock(status: &Mutex<PullStatus>) -> std::sync::MutexGuard<'_, PullStatus> {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<S: Store, P: Peer> PullLoop<S, P> {
    pub fn new(
        spec: PullSpec,
        config: &Config,
        store: Arc<S>,
        peer: P,
        metrics: Arc<Metrics>,
    ) -> Self {
        let status = PullStatus {
            pull: spec.name.clone(),
            peer: format!("{} ({})", spec.peer_url, spec.peer_identity),
            consumer: spec.consumer.clone(),
            state: "running".into(),
            started_unix_ms: now_unix_ms(),
            stale_after_ms: i64::try_from((spec.idle_wait + STALL_MARGIN).as_millis())
                .unwrap_or(i64::MAX),
            ..Default::default()
        };
        PullLoop {
            spec,
            store,
            peer,
            metrics,
            status: Arc::new(Mutex::new(status)),
            max_fact_bytes: config.limits.max_fact_bytes,
            confirm_delay: config.replication.confirm_delay,
        }
    }

    pub fn status(&self) -> SharedPullStatus {
        self.status.clone()
    }

    /// Runs until a fatal error; transient errors are retried with backoff.
    pub async fn run(self) {
        let mut backoff = BACKOFF_START;
        self.restore().await;
        tracing::info!(pull = %self.spec.name, peer = %self.spec.peer_url, consumer = %self.spec.consumer, cursor = lock(&self.status).cursor, "pull started");
        if self.spec.accept_from_zones.is_none() {
            tracing::warn!(pull = %self.spec.name, peer = %self.spec.peer_url, "accept_from_zones is not set: this pull accepts facts from any zone the peer relays; name the origin zones (e.g. accept_from_zones = [\"plant-a\"]) so a compromised peer cannot forge another zone's facts");
        }
        loop {
            match self.step().await {
                Ok(_) => backoff = BACKOFF_START,
                Err(e) if e.is_fatal() => {
                    self.record_error(&e, "stopped");
                    tracing::error!(pull = %self.spec.name, kind = e.kind(), error = %e, "pull stopped; operator action needed");
                    return;
                }
                Err(e) => {
                    self.record_error(&e, "retrying");
                    tracing::warn!(pull = %self.spec.name, kind = e.kind(), error = %e, retry_in_ms = backoff.as_millis() as u64, "pull failed; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    /// Takes over the cursor and counters this pull recorded before the node restarted (same
    /// peer and consumer), so that a peer whose stream was recreated meanwhile is still seen
    /// going backwards. Without a record (or with the store unreachable) it starts from 0: the
    /// check then holds from the first confirm on.
    pub async fn restore(&self) {
        let recorded = match self.store.get_status(&self.spec.name).await {
            Ok(Some(json)) => serde_json::from_slice::<PullStatus>(&json).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(pull = %self.spec.name, error = %e, "cannot read the recorded pull status; the backwards check starts from the first confirm");
                None
            }
        };
        let mut status = lock(&self.status);
        if let Some(recorded) = recorded
            && recorded.peer == status.peer
            && recorded.consumer == status.consumer
        {
            status.cursor = recorded.cursor;
            status.high_watermark = recorded.high_watermark;
            status.lag_facts = recorded.high_watermark.saturating_sub(recorded.cursor);
            status.facts_replicated = recorded.facts_replicated;
            status.artifacts_replicated = recorded.artifacts_replicated;
            // An outage that spans a restart still counts from the last success before it.
            status.last_success_unix_ms = recorded.last_success_unix_ms;
            status.lag_seconds = recorded.lag_seconds_at_success;
            status.lag_seconds_at_success = recorded.lag_seconds_at_success;
        }
        status.export(&self.metrics);
    }

    fn record_error(&self, error: &PullError, state: &str) {
        self.metrics.add_counter(
            format!(
                "bsfg_replication_errors_total{{pull=\"{}\",kind=\"{}\"}}",
                self.spec.name,
                error.kind()
            ),
            1,
        );
        let mut status = lock(&self.status);
        status.last_error = error.to_string();
        status.last_error_unix_ms = now_unix_ms();
        status.state = state.to_string();
        if matches!(error, PullError::Peer(_)) {
            status.peer_up = false;
        }
        status.refresh(now_unix_ms());
        status.export(&self.metrics);
    }

    /// One page: fetch, artifacts, appends, confirm. Returns how many facts were replicated.
    pub async fn step(&self) -> Result<usize, PullError> {
        let started = std::time::Instant::now();
        let page = self
            .peer
            .fetch(
                &self.spec.consumer,
                self.spec.page_size,
                self.spec.idle_wait,
            )
            .await?;
        let confirmed = lock(&self.status).cursor;
        let Some(last) = page.facts.last() else {
            if page.high_watermark < confirmed {
                // The peer's stream ends before what it confirmed to us: it was recreated.
                return Err(PullError::Regressed {
                    got: page.high_watermark,
                    confirmed,
                });
            }
            let mut status = lock(&self.status);
            status.high_watermark = page.high_watermark;
            status.lag_facts = page.high_watermark.saturating_sub(status.cursor);
            if status.lag_facts == 0 {
                status.lag_seconds = 0.0;
            }
            status.succeeded(now_unix_ms());
            status.export(&self.metrics);
            return Ok(0);
        };
        let last_offset = last.offset;
        let last_appended_at = last.appended_at_unix_ms;
        let first = page.facts[0].offset;
        if confirmed > 0 && first <= confirmed {
            return Err(PullError::Regressed {
                got: first,
                confirmed,
            });
        }
        boundary::check_page(&self.spec, &page.facts)?;
        let fetched = std::time::Instant::now();
        self.busy("fetch", fetched - started);
        let artifacts = self.append_page(first, &page.facts).await?;
        let appended = std::time::Instant::now();
        self.busy("append", appended - fetched);
        if !self.confirm_delay.is_zero() {
            // The store acknowledged the appends; wait until its sync interval has put them on disk.
            tokio::time::sleep(self.confirm_delay).await;
        }
        let cursor = self.peer.confirm(&self.spec.consumer, last_offset).await?;
        self.busy("confirm", appended.elapsed());
        let mut status = lock(&self.status);
        status.cursor = cursor;
        status.high_watermark = page.high_watermark.max(last_offset);
        status.lag_facts = status.high_watermark.saturating_sub(cursor);
        status.lag_seconds = (now_unix_ms() - last_appended_at).max(0) as f64 / 1000.0;
        status.facts_replicated += page.facts.len() as u64;
        status.artifacts_replicated += artifacts;
        status.succeeded(now_unix_ms());
        status.export(&self.metrics);
        Ok(page.facts.len())
    }

    /// Where a pull's time goes, per phase of its pages (`fetch`: the FetchFacts call and the
    /// page's checks; `append`: artifacts and appends here; `confirm`: the confirm delay and the
    /// ConfirmReceipt call).
    fn busy(&self, phase: &str, spent: Duration) {
        self.metrics.add_counter(
            format!(
                "bsfg_replication_busy_microseconds_total{{pull=\"{}\",phase=\"{phase}\"}}",
                self.spec.name
            ),
            u64::try_from(spent.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// Appends the page here, in order: every fact checked, then the artifacts it references
    /// brought over (each before any fact is appended), then the facts as one page
    /// ([`Store::append_page`]). Returns how many artifacts were brought over.
    async fn append_page(&self, first: u64, page: &[StoredFact]) -> Result<u64, PullError> {
        let mut requests = Vec::with_capacity(page.len());
        for (expected, stored) in (first..).zip(page) {
            if stored.offset != expected {
                return Err(PullError::Invalid {
                    offset: stored.offset,
                    problem: format!("expected offset {expected}"),
                });
            }
            requests.push(AppendFactRequest {
                envelope: stored.envelope.clone(),
                fact: stored.fact.clone(),
                // The fact's own category (checked by `boundary::check_page`), never the pull's.
                category: stored.category,
            });
        }
        let mut facts = Vec::with_capacity(page.len());
        let mut artifacts = 0;
        for (request, stored) in requests.iter().zip(page) {
            let (category, envelope, fact) = validate_append(request, self.max_fact_bytes)
                .map_err(|e| PullError::Invalid {
                    offset: stored.offset,
                    problem: e.to_string(),
                })?;
            if !envelope.object_media_type.is_empty() {
                artifacts += self
                    .replicate_artifact(
                        stored.offset,
                        &fact.object_json,
                        &envelope.object_media_type,
                    )
                    .await?;
            }
            facts.push(NewFact {
                category,
                envelope,
                fact,
                content_hash: fact::content_hash(envelope, fact),
            });
        }
        let results = self.store.append_page(&facts).await;
        if results.len() < page.len() && results.iter().all(Result::is_ok) {
            // Never confirm what the store did not say it appended.
            return Err(StoreError::Unavailable(format!(
                "the store appended {} of the page's {} facts",
                results.len(),
                page.len()
            ))
            .into());
        }
        for (result, stored) in results.into_iter().zip(page) {
            match result {
                Ok(_) => {}
                Err(StoreError::Conflict {
                    message_id, offset, ..
                }) => {
                    return Err(PullError::Conflict(format!(
                        "peer offset {} carries message_id {message_id:?}, already stored here at offset {offset} with different content",
                        stored.offset
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(artifacts)
    }
}

/// Starts every configured pull on the runtime, and a task that once a second refreshes their
/// lag (it grows during an outage) and records their status in the store for `bsfg status`.
/// Returns the pulls' shared status, for the `STATUS=` line (`status_line`).
pub fn start_pulls<S: Store>(
    node: &Arc<crate::rpc::Node<S>>,
) -> Result<Vec<SharedPullStatus>, ClientError> {
    let config = &node.config;
    let mut statuses = Vec::new();
    for spec in &config.pulls {
        let client = crate::rpc::client::PeerClient::new(
            &spec.peer_url,
            &spec.peer_identity,
            config.tls.clone(),
            config.tls.peer_ca.clone(),
            config.replication.peer_timeout,
        )?;
        let peer = peer::RemotePeer {
            client,
            timeout: config.replication.peer_timeout,
        };
        let pull = PullLoop::new(
            spec.clone(),
            config,
            node.store.clone(),
            peer,
            node.metrics.clone(),
        );
        statuses.push(pull.status());
        tokio::spawn(pull.run());
    }
    if statuses.is_empty() {
        return Ok(statuses);
    }
    let store = node.store.clone();
    let metrics = node.metrics.clone();
    let shared = statuses.clone();
    tokio::spawn(async move {
        let mut last: Vec<PullStatus> = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now_ms = now_unix_ms();
            let now: Vec<PullStatus> = statuses
                .iter()
                .map(|s| {
                    let mut status = lock(s);
                    status.refresh(now_ms);
                    status.export(&metrics);
                    status.clone()
                })
                .collect();
            for status in now.iter().filter(|s| !last.contains(s)) {
                if let Ok(json) = serde_json::to_vec(status)
                    && let Err(e) = store.put_status(&status.pull, json).await
                {
                    tracing::debug!(error = %e, "cannot record pull status");
                }
            }
            last = now;
        }
    });
    Ok(shared)
}

/// 50–100 % of `base`, so many pulls retrying at once do not synchronize.
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    base / 2 + base.mul_f64(f64::from(byte[0]) / 510.0)
}

#[cfg(test)]
mod tests;
