//! `bsfg firmware boot-report | health | flush-audit | agent`: the appliance's firmware steps,
//! kept in the outbox first and then appended to the zone's audit category. They run as root
//! outside the node's sandbox (systemd units of the appliance), beside the serving node, and talk
//! to the zone's nats-server on loopback only.

use super::{STATUS_KEY, boot::BootEntries};
use super::{
    agent::{self, Appliance},
    audit::{self, Outbox, Step},
    host::Paths,
    report::{self, Health},
};
use crate::{
    config::Config,
    proto::{FirmwareSlot, GetFirmwareStatusResponse},
    store::jetstream::JetStreamStore,
};
use std::{path::Path, process::ExitCode, time::Duration};

/// Exit statuses (sysexits): bad config, audit stream unreachable, local state unusable.
const EXIT_CONFIG: u8 = 78;
const EXIT_UNAVAILABLE: u8 = 69;
const EXIT_IOERR: u8 = 74;

/// How long a command waits for nats-server before leaving the records in the outbox.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the agent looks for an approved install.
const AGENT_POLL: Duration = Duration::from_secs(2);

/// How an install that the pending state named ended, for its record in `bsfg_firmware`.
struct Conclusion {
    attempt: String,
    state: &'static str,
    message: String,
}

fn conclusion_of(steps: &[Step]) -> Option<Conclusion> {
    steps.iter().find_map(|step| match step {
        Step::Interrupted {
            attempt, reason, ..
        } => Some(Conclusion {
            attempt: attempt.clone(),
            state: "failed",
            message: reason.clone(),
        }),
        Step::RolledBack { reason, .. } => Some(Conclusion {
            attempt: String::new(),
            state: "rolled_back",
            message: reason.clone(),
        }),
        _ => None,
    })
}

/// Records this boot (and what it says about an install in progress), then flushes.
pub fn boot_report(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |zone| {
        let boot = paths.boot()?;
        let pending = paths.pending()?;
        let (steps, keep) = report::at_boot(&boot, pending.as_ref());
        let conclusion = conclusion_of(&steps).map(|mut c| {
            if c.attempt.is_empty() {
                c.attempt = pending
                    .as_ref()
                    .map(|p| p.attempt.clone())
                    .unwrap_or_default();
            }
            c
        });
        push(paths, zone, steps)?;
        paths.set_pending(keep.as_ref())?;
        Ok(conclusion)
    })
}

/// Records the health check's verdict on this boot (blessed, or a bad counted boot with its
/// reason), then flushes.
pub fn health(config_path: &Path, paths: &Paths, health: &Health) -> ExitCode {
    run(config_path, paths, |zone| {
        let boot = paths.boot()?;
        let pending = paths.pending()?;
        let (steps, keep) = report::at_health(&boot, health, pending.as_ref());
        let blessed = steps.iter().any(|s| matches!(s, Step::Blessed { .. }));
        let conclusion = pending
            .filter(|p| blessed && p.slot == boot.slot)
            .map(|p| Conclusion {
                attempt: p.attempt,
                state: "blessed",
                message: format!("slot {} running {} is blessed", boot.slot, boot.version),
            });
        push(paths, zone, steps)?;
        paths.set_pending(keep.as_ref())?;
        Ok(conclusion)
    })
}

/// Appends what the outbox holds.
pub fn flush_audit(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |_| Ok(None))
}

/// What the agent reports as `status` in `bsfg_firmware` (GetFirmwareStatus): the booted slot
/// and version, and each slot's UKI on the ESP in boot order.
async fn report_status<S: crate::store::Store>(
    store: &S,
    paths: &Paths,
    esp: &Path,
) -> Result<(), String> {
    let boot = paths.boot()?;
    let slots = BootEntries::new(esp).slots().map_err(|e| e.to_string())?;
    let status = GetFirmwareStatusResponse {
        booted_slot: boot.slot.clone(),
        running_version: boot.version,
        slots: slots
            .into_iter()
            .map(|s| FirmwareSlot {
                booted: s.name == boot.slot,
                name: s.name,
                version: s.version,
                state: s.state.into(),
                primary: s.primary,
                tries_left: s.tries_left,
            })
            .collect(),
        installs: Vec::new(),
        reported_unix_ms: crate::replicate::status::now_unix_ms(),
    };
    let json = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
    store
        .put_firmware(STATUS_KEY, json)
        .await
        .map_err(|e| e.to_string())
}

/// Passes between two status reports (about 30 s).
const REPORT_EVERY: u32 = 15;

/// Carries out approved installs, one at a time, until stopped (or one pass with `once`).
pub fn agent<A: Appliance>(
    config_path: &Path,
    paths: &Paths,
    esp: &Path,
    appliance: &A,
    once: bool,
) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bsfg firmware agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let store = loop {
            match JetStreamStore::open(&config).await {
                Ok(store) => break store,
                Err(e) if once => {
                    eprintln!("bsfg firmware agent: {e}");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
                Err(e) => {
                    eprintln!("bsfg firmware agent: {e}; retrying");
                    tokio::time::sleep(AGENT_POLL).await;
                }
            }
        };
        eprintln!(
            "bsfg firmware agent: watching the install requests of zone {}",
            config.zone
        );
        let outbox = Outbox::new(paths.outbox());
        let mut pass_number = 0u32;
        loop {
            if pass_number.is_multiple_of(REPORT_EVERY)
                && let Err(e) = report_status(&store, paths, esp).await
            {
                eprintln!("bsfg firmware agent: no firmware status report: {e}");
            }
            pass_number = pass_number.wrapping_add(1);
            // What boot-report or the health check could not append yet (nats-server was still
            // starting) goes out first, in order.
            if let Err(e) = outbox.flush(&store, config.limits.max_fact_bytes).await {
                eprintln!("bsfg firmware agent: {e}");
            }
            // Each bundle that arrived in the firmware bucket is announced once (installs
            // nothing).
            if let Some(firmware) = &config.firmware
                && let Err(e) = agent::announce_arrivals(
                    &store,
                    &config.zone,
                    &firmware.bucket,
                    config.limits.max_fact_bytes,
                    paths,
                )
                .await
            {
                eprintln!("bsfg firmware agent: announcing arrivals: {e}");
            }
            let pass = agent::run_once(
                &store,
                &config.zone,
                config.limits.max_fact_bytes,
                paths,
                appliance,
            )
            .await;
            if let Err(e) = &pass {
                eprintln!("bsfg firmware agent: {e}");
            }
            if once {
                return if pass.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_UNAVAILABLE)
                };
            }
            tokio::time::sleep(AGENT_POLL).await;
        }
    })
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

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("bsfg firmware: {e}"))
        .ok()
}

/// Loads the config, runs `local` (the decisions, kept on disk), then flushes the outbox and
/// concludes the install record. A flush that cannot reach nats-server leaves the records for the
/// next run: the exit status says so, the records are safe.
fn run(
    config_path: &Path,
    paths: &Paths,
    local: impl FnOnce(&str) -> Result<Option<Conclusion>, String>,
) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bsfg firmware: {e}; firmware steps are not recorded");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let conclusion = match local(&config.zone) {
        Ok(conclusion) => conclusion,
        Err(e) => {
            eprintln!("bsfg firmware: {e}");
            return ExitCode::from(EXIT_IOERR);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outbox = Outbox::new(paths.outbox());
    let flushed = runtime.block_on(async {
        tokio::time::timeout(STORE_TIMEOUT, async {
            let store = JetStreamStore::open(&config)
                .await
                .map_err(|e| e.to_string())?;
            let n = outbox.flush(&store, config.limits.max_fact_bytes).await?;
            if let Some(c) = &conclusion {
                agent::conclude(&store, &c.attempt, c.state, &c.message).await?;
            }
            Ok::<_, String>(n)
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
