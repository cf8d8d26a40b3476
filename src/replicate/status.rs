//! The state of each pull, for `/metrics`, `bsfg status` and the log: peer, cursor, high
//! watermark, lag, last error, last success, whether the peer answered. Published to metrics on
//! every change and written to the store (KV `bsfg_pull_status`) at most once a second, so
//! `bsfg status` can read it.
//!
//! While a pull cannot exchange with its peer (state `retrying` or `stopped`), its lag in seconds
//! is not frozen: [`PullStatus::refresh`] (once a second) makes it the lag at the last success
//! plus the time since then, so the runbook's lag alert fires during an outage.

use crate::ops::metrics::Metrics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullStatus {
    pub pull: String,
    pub peer: String,
    pub consumer: String,
    /// Last offset confirmed to the peer.
    pub cursor: u64,
    /// The peer stream's last offset at the last fetch.
    pub high_watermark: u64,
    pub lag_facts: u64,
    /// Source append → local durable append, of the newest replicated fact.
    pub lag_seconds: f64,
    pub facts_replicated: u64,
    pub artifacts_replicated: u64,
    pub last_success_unix_ms: i64,
    pub last_error: String,
    pub last_error_unix_ms: i64,
    /// `running`, `retrying` or `stopped` (a conflict or corrupt data: needs an operator).
    pub state: String,
    /// The last exchange with the peer succeeded (false until the first one does).
    pub peer_up: bool,
    /// `lag_seconds` as of the last success; the base the lag grows from during an outage.
    pub lag_seconds_at_success: f64,
    /// When this pull started (the base of the lag when it never succeeded).
    pub started_unix_ms: i64,
    /// A running pull with no success for this long is stalled (a long poll plus a margin: the
    /// peer vanished without closing the connection); its lag grows as during an outage.
    #[serde(skip)]
    pub stale_after_ms: i64,
}

impl PullStatus {
    /// Records a successful exchange with the peer at `now_ms`.
    pub fn succeeded(&mut self, now_ms: i64) {
        self.last_success_unix_ms = now_ms;
        self.lag_seconds_at_success = self.lag_seconds;
        self.peer_up = true;
        self.state = "running".into();
    }

    /// While the pull is not running (or is stalled), its lag grows with the time since the last
    /// success.
    pub fn refresh(&mut self, now_ms: i64) {
        let since = if self.last_success_unix_ms > 0 {
            self.last_success_unix_ms
        } else {
            self.started_unix_ms
        };
        let stalled = self.stale_after_ms > 0 && now_ms - since > self.stale_after_ms;
        if self.state == "running" && !stalled {
            return;
        }
        if since > 0 {
            self.lag_seconds =
                self.lag_seconds_at_success + (now_ms - since).max(0) as f64 / 1000.0;
        }
    }

    pub fn export(&self, metrics: &Metrics) {
        let label = format!("{{pull=\"{}\"}}", self.pull);
        metrics.set_gauge(
            format!("bsfg_replication_lag_facts{label}"),
            self.lag_facts as f64,
        );
        metrics.set_gauge(
            format!("bsfg_replication_lag_seconds{label}"),
            self.lag_seconds,
        );
        metrics.set_gauge(
            format!("bsfg_replication_cursor{label}"),
            self.cursor as f64,
        );
        metrics.set_gauge(
            format!("bsfg_replication_high_watermark{label}"),
            self.high_watermark as f64,
        );
        metrics.set_gauge(
            format!("bsfg_replication_facts_total{label}"),
            self.facts_replicated as f64,
        );
        metrics.set_gauge(
            format!("bsfg_replication_artifacts_total{label}"),
            self.artifacts_replicated as f64,
        );
        metrics.set_gauge(
            format!("bsfg_replication_peer_up{label}"),
            if self.peer_up { 1.0 } else { 0.0 },
        );
        metrics.set_gauge(
            format!("bsfg_replication_last_success_timestamp_seconds{label}"),
            self.last_success_unix_ms.max(0) as f64 / 1000.0,
        );
        metrics.set_gauge(
            format!("bsfg_replication_stopped{label}"),
            if self.state == "stopped" { 1.0 } else { 0.0 },
        );
    }
}

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::PullStatus;

    #[test]
    fn lag_grows_from_the_last_success_while_the_pull_cannot_exchange() {
        let mut status = PullStatus {
            state: "running".into(),
            stale_after_ms: 15_000,
            started_unix_ms: 1_000,
            lag_seconds: 0.5,
            ..Default::default()
        };
        status.succeeded(10_000);
        status.refresh(20_000);
        assert_eq!(
            status.lag_seconds, 0.5,
            "a running pull keeps its measured lag"
        );
        status.refresh(30_000);
        assert_eq!(status.lag_seconds, 20.5, "stalled past its long poll");
        // The peer answers again with the lag measured at 0, then goes away.
        status.lag_seconds = 0.0;
        status.succeeded(30_000);
        status.state = "retrying".into();
        status.peer_up = false;
        status.refresh(33_500);
        assert_eq!(status.lag_seconds, 3.5);
        assert_eq!(status.last_success_unix_ms, 30_000);
    }
}
