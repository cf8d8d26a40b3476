//! `bsfg firmware boot-report`, `health` and `flush-audit`: the boot's and the health check's
//! audit steps, kept in the outbox first and then appended to the zone's audit category. They run
//! as root outside the node's sandbox (systemd units of the appliance), beside the serving node.

use super::{
    audit::{self, Outbox, Step},
    host::Paths,
    report::{self, Health},
};
use crate::{config::Config, store::jetstream::JetStreamStore};
use std::{path::Path, process::ExitCode, time::Duration};

/// Exit statuses (sysexits): bad config, audit stream unreachable, local state unusable.
const EXIT_CONFIG: u8 = 78;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_IOERR: u8 = 74;

/// How long a command waits for nats-server before leaving the records in the outbox.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);

/// Records this boot (and what it says about an install in progress), then flushes.
pub fn boot_report(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |zone| {
        let boot = paths.boot()?;
        let pending = paths.pending()?;
        let (steps, keep) = report::at_boot(&boot, pending.as_ref());
        push(paths, zone, steps)?;
        paths.set_pending(keep.as_ref())
    })
}

/// Records the health check's verdict on this boot (blessed, or a bad counted boot with its
/// reason), then flushes.
pub fn health(config_path: &Path, paths: &Paths, health: &Health) -> ExitCode {
    run(config_path, paths, |zone| {
        let boot = paths.boot()?;
        let pending = paths.pending()?;
        let (steps, keep) = report::at_health(&boot, health, pending.as_ref());
        push(paths, zone, steps)?;
        paths.set_pending(keep.as_ref())
    })
}

/// Appends what the outbox holds.
pub fn flush_audit(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |_| Ok(()))
}

fn push(paths: &Paths, zone: &str, steps: Vec<Step>) -> Result<(), String> {
    let outbox = Outbox::new(paths.outbox());
    for step in steps {
        let predicate = step.predicate();
        outbox.push(&audit::now(zone, step))?;
        eprintln!(
            "bsfg firmware: {predicate} kept in {}",
            paths.outbox().display()
        );
    }
    Ok(())
}

/// Loads the config, runs `local` (the decisions, kept on disk), then flushes the outbox. A
/// flush that cannot reach nats-server leaves the records for the next run: the exit status says
/// so, the records are safe.
fn run(
    config_path: &Path,
    paths: &Paths,
    local: impl FnOnce(&str) -> Result<(), String>,
) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bsfg firmware: {e}; firmware steps are not recorded");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = local(&config.zone) {
        eprintln!("bsfg firmware: {e}");
        return ExitCode::from(EXIT_IOERR);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bsfg firmware: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outbox = Outbox::new(paths.outbox());
    let flushed = runtime.block_on(async {
        tokio::time::timeout(STORE_TIMEOUT, async {
            let store = JetStreamStore::open(&config)
                .await
                .map_err(|e| e.to_string())?;
            outbox.flush(&store, config.limits.max_fact_bytes).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "nats-server did not answer within {STORE_TIMEOUT:?}"
            ))
        })
    });
    match flushed {
        Ok(n) => {
            eprintln!("bsfg firmware: {n} audit record(s) appended to the audit category");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let left = outbox.pending().map_or(0, |p| p.len());
            eprintln!(
                "bsfg firmware: {e}; {left} audit record(s) stay in {} for the next flush",
                paths.outbox().display()
            );
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
