//! What `bsfg status` shows, in one structure (`bsfg.v1.GetStatusResponse`) whether it is read
//! from the zone's nats-server on the box or over the operator's door (`OperatorService`), and
//! rendered the same way for both. `unhealthy` is decided here, once.

use crate::{
    config::Config,
    proto::{ConsumerState, CrlState, GetStatusResponse, PullState},
    rpc::crl,
    store::{StoreError, report::read_report},
};
use std::fmt::Write;

/// A pull this far behind (seconds) needs an operator.
const LAG_ALERT_SECONDS: f64 = 1.0;
/// A consumer this far behind (facts) is shown with an alert.
const BACKLOG_ALERT_FACTS: u64 = 10_000;

/// Reads the zone's status from its nats-server and the configured CRL files.
pub async fn collect(config: &Config) -> Result<GetStatusResponse, StoreError> {
    let report = read_report(config).await?;
    let consumers: Vec<ConsumerState> = report
        .consumers
        .into_iter()
        .map(|c| ConsumerState {
            name: c.name,
            category: c.category,
            cursor: c.cursor,
            high_watermark: c.high_watermark,
            backlog: c.backlog,
            gap_from: c.gap.map_or(0, |g| g.from),
            gap_to: c.gap.map_or(0, |g| g.to),
        })
        .collect();
    let pulls: Vec<PullState> = report
        .pulls
        .into_iter()
        .map(|(name, recorded)| {
            let s = recorded.unwrap_or_default();
            PullState {
                name,
                peer: s.peer,
                consumer: s.consumer,
                state: s.state,
                peer_up: s.peer_up,
                cursor: s.cursor,
                high_watermark: s.high_watermark,
                lag_facts: s.lag_facts,
                lag_seconds: s.lag_seconds,
                last_success_unix_ms: s.last_success_unix_ms,
                last_error: s.last_error,
                last_error_unix_ms: s.last_error_unix_ms,
            }
        })
        .collect();
    let now = crl::now_unix();
    let crls: Vec<CrlState> = config
        .tls
        .crls
        .iter()
        .map(|path| match crl::freshness(path) {
            Ok(freshness) => CrlState {
                path: path.display().to_string(),
                next_update_unix: freshness.next_update.unwrap_or(0),
                stale: freshness.is_stale(now),
                error: String::new(),
            },
            Err(e) => CrlState {
                path: path.display().to_string(),
                error: e.to_string(),
                ..Default::default()
            },
        })
        .collect();
    let mut status = GetStatusResponse {
        zone: config.zone.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        consumers,
        pulls,
        crls,
        unhealthy: false,
    };
    status.unhealthy = needs_operator(&status);
    Ok(status)
}

/// A gap, a stopped pull, a peer down, lag over a second, a stale or unreadable CRL.
fn needs_operator(status: &GetStatusResponse) -> bool {
    status.consumers.iter().any(|c| c.gap_to > 0)
        || status.pulls.iter().any(|p| {
            p.state == "stopped"
                || p.lag_seconds > LAG_ALERT_SECONDS
                || (!p.peer_up && !p.state.is_empty() && p.state != "running")
        })
        || status.crls.iter().any(|c| c.stale || !c.error.is_empty())
}

/// The text `bsfg status` prints.
pub fn render(status: &GetStatusResponse, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "zone {} ({source})", status.zone);
    let _ = writeln!(out, "\nconsumers (peers pull from these):");
    if status.consumers.is_empty() {
        let _ = writeln!(out, "  none configured");
    }
    for c in &status.consumers {
        let alert = if c.backlog > BACKLOG_ALERT_FACTS {
            "  ALERT backlog > 10000"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<24} category {:<12} cursor {:>10}  high watermark {:>10}  backlog {:>8}{alert}",
            c.name, c.category, c.cursor, c.high_watermark, c.backlog
        );
        if c.gap_to > 0 {
            let _ = writeln!(
                out,
                "  {:<24} DATA LOSS: offsets {} to {} ({} facts) were deleted by retention before anyone confirmed them; \
                 FetchFacts answers data_loss until an operator runs bsfg skip-gap",
                "",
                c.gap_from,
                c.gap_to,
                c.gap_to + 1 - c.gap_from
            );
        }
    }
    let _ = writeln!(out, "\npulls (this node pulls from these):");
    if status.pulls.is_empty() {
        let _ = writeln!(out, "  none configured");
    }
    for p in &status.pulls {
        render_pull(&mut out, p);
    }
    if !status.crls.is_empty() {
        let _ = writeln!(out, "\ncertificate revocation lists:");
    }
    for c in &status.crls {
        let next = if c.next_update_unix == 0 {
            "none".to_string()
        } else {
            utc_seconds(c.next_update_unix)
        };
        let line = if !c.error.is_empty() {
            format!("UNREADABLE: {}", c.error)
        } else if c.stale {
            format!("STALE: nextUpdate {next} has passed; still enforced, publish a fresh CRL")
        } else {
            format!("fresh, nextUpdate {next}")
        };
        let _ = writeln!(out, "  {}  {line}", c.path);
    }
    out
}

fn render_pull(out: &mut String, p: &PullState) {
    let name = &p.name;
    if p.state.is_empty() {
        let _ = writeln!(
            out,
            "  {name:<24} no status recorded yet (is the node running?)"
        );
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<24} {:<9} peer {} {}  consumer {}  cursor {}  high watermark {}  lag {} facts / {:.3} s  last success {}",
        p.state,
        if p.peer_up { "up" } else { "DOWN" },
        p.peer,
        p.consumer,
        p.cursor,
        p.high_watermark,
        p.lag_facts,
        p.lag_seconds,
        ago(p.last_success_unix_ms)
    );
    if !p.last_error.is_empty() {
        let _ = writeln!(
            out,
            "  {:<24} last error {}: {}",
            "",
            ago(p.last_error_unix_ms),
            p.last_error
        );
    }
    if !p.peer_up && p.state != "running" {
        let _ = writeln!(
            out,
            "  {:<24} ALERT no successful exchange with the peer since {} (last success {})",
            "",
            utc_ms(p.last_success_unix_ms),
            ago(p.last_success_unix_ms)
        );
    }
}

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let seconds = (crate::replicate::status::now_unix_ms() - unix_ms).max(0) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// `2026-12-03T07:45:12Z`, or `never`.
fn utc_ms(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_ms} ms since the epoch"))
}

fn utc_seconds(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}
