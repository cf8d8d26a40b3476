//! `bsfg status --config FILE`: the first thing an operator runs. One line per consumer this node
//! serves and per pull it runs, with the figures the runbook's alerts are about.

use crate::{config::Config, replicate::status::now_unix_ms, store::report::read_report};
use std::{path::Path, process::ExitCode};

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let seconds = (now_unix_ms() - unix_ms).max(0) / 1000;
    match seconds {
        0..=119 => format!("{seconds}s ago"),
        120..=7199 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// `2026-12-03T07:45:12Z`, or `never`.
fn utc(unix_ms: i64) -> String {
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

pub fn print_status(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(78);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bsfg status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(read_report(&config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bsfg status: {e}");
            return ExitCode::from(69);
        }
    };
    println!("zone {} (nats {})", config.zone, config.nats.url);
    println!("\nconsumers (peers pull from these):");
    if report.consumers.is_empty() {
        println!("  none configured");
    }
    for c in &report.consumers {
        println!(
            "  {:<24} category {:<12} cursor {:>10}  high watermark {:>10}  backlog {:>8}{}",
            c.name,
            c.category,
            c.cursor,
            c.high_watermark,
            c.backlog,
            if c.backlog > 10_000 {
                "  ALERT backlog > 10000"
            } else {
                ""
            }
        );
        if let Some(gap) = c.gap {
            println!(
                "  {:<24} DATA LOSS: offsets {} to {} ({} facts) were deleted by retention before anyone confirmed them; \
                 FetchFacts answers data_loss until an operator runs bsfg skip-gap",
                "",
                gap.from,
                gap.to,
                gap.missing()
            );
        }
    }
    println!("\npulls (this node pulls from these):");
    if report.pulls.is_empty() {
        println!("  none configured");
    }
    let mut unhealthy = report.consumers.iter().any(|c| c.gap.is_some());
    for (name, status) in &report.pulls {
        match status {
            None => println!("  {name:<24} no status recorded yet (is the node running?)"),
            Some(s) => {
                println!(
                    "  {name:<24} {:<9} peer {} {}  consumer {}  cursor {}  high watermark {}  lag {} facts / {:.3} s  last success {}",
                    s.state,
                    if s.peer_up { "up" } else { "DOWN" },
                    s.peer,
                    s.consumer,
                    s.cursor,
                    s.high_watermark,
                    s.lag_facts,
                    s.lag_seconds,
                    ago(s.last_success_unix_ms)
                );
                if !s.last_error.is_empty() {
                    println!(
                        "  {:<24} last error {}: {}",
                        "",
                        ago(s.last_error_unix_ms),
                        s.last_error
                    );
                }
                if !s.peer_up && s.state != "running" {
                    println!(
                        "  {:<24} ALERT no successful exchange with the peer since {} (last success {})",
                        "",
                        utc(s.last_success_unix_ms),
                        ago(s.last_success_unix_ms)
                    );
                }
                unhealthy |= s.state == "stopped"
                    || s.lag_seconds > 1.0
                    || (!s.peer_up && s.state != "running");
            }
        }
    }
    unhealthy |= print_crls(&config);
    if unhealthy {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One line per configured CRL; true when one is stale or unreadable (see `rpc::crl`).
fn print_crls(config: &Config) -> bool {
    if config.tls.crls.is_empty() {
        return false;
    }
    println!("\ncertificate revocation lists:");
    let now = crate::rpc::crl::now_unix();
    let mut unhealthy = false;
    for path in &config.tls.crls {
        match crate::rpc::crl::freshness(path) {
            Err(e) => {
                unhealthy = true;
                println!("  {}  UNREADABLE: {e}", path.display());
            }
            Ok(crl) => {
                let next = crl.next_update.map_or("none".to_string(), |n| {
                    time::OffsetDateTime::from_unix_timestamp(n)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| n.to_string())
                });
                if crl.is_stale(now) {
                    unhealthy = true;
                    println!(
                        "  {}  STALE: nextUpdate {next} has passed; still enforced, publish a fresh CRL",
                        path.display()
                    );
                } else {
                    println!("  {}  fresh, nextUpdate {next}", path.display());
                }
            }
        }
    }
    unhealthy
}
