//! The state of each pull, for `/metrics`, `bsfg status` and the log: peer, cursor, high
//! watermark, lag, last error, last success. Published to metrics on every change and written to
//! the store (KV `bsfg_pull_status`) at most once a second, so `bsfg status` can read it.

use crate::ops::metrics::Metrics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
}

impl PullStatus {
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
