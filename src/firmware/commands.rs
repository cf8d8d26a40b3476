//! `bsfg firmware boot-report | health | flush-audit | agent`: the appliance's firmware steps,
//! kept in the outbox first and then appended to the zone's audit category. They run as root
//! outside the node's sandbox (systemd units of the appliance), beside the serving node, and talk
//! to the zone's nats-server on loopback only.

use super::{STATUS_KEY, boot::BootEntries};
use super::{
    agent::{self, Appliance},
    audit::{self, Outbox, Step},
    conclusion::{Conclusion, Conclusions},
    host::Paths,
    report::{self, Health, PendingInstall},
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

/// How the install the pending state named ended, when these steps say it did.
fn conclusion_of(steps: &[Step], pending: Option<&PendingInstall>) -> Option<Conclusion> {
    let pending_attempt = || pending.map(|p| p.attempt.clone());
    steps.iter().find_map(|step| match step {
        Step::Interrupted {
            attempt, reason, ..
        } => Some(Conclusion {
            attempt: attempt.clone(),
            state: "failed".into(),
            message: reason.clone(),
        }),
        Step::RolledBack { reason, .. } => Some(Conclusion {
            attempt: pending_attempt()?,
            state: "rolled_back".into(),
            message: reason.clone(),
        }),
        _ => None,
    })
}

/// Records this boot (and what it says about an install in progress), then flushes.
pub fn boot_report(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |zone| record_boot(paths, zone))
}

/// This boot's steps into the outbox and the install's conclusion beside it, both before the
/// install state they settle is dropped.
pub(super) fn record_boot(paths: &Paths, zone: &str) -> Result<(), String> {
    let boot = paths.boot()?;
    let pending = paths.pending()?;
    let (steps, keep) = report::at_boot(&boot, pending.as_ref());
    let conclusion = conclusion_of(&steps, pending.as_ref());
    push(paths, zone, steps)?;
    if let Some(c) = conclusion {
        Conclusions::new(paths.conclusions()).keep(&c)?;
    }
    paths.set_pending(keep.as_ref())
}

/// Records the health check's verdict on this boot (blessed, or a bad counted boot with its
/// reason), then flushes.
pub fn health(config_path: &Path, paths: &Paths, health: &Health) -> ExitCode {
    run(config_path, paths, |zone| {
        record_health(paths, zone, health)
    })
}

pub(super) fn record_health(paths: &Paths, zone: &str, health: &Health) -> Result<(), String> {
    let boot = paths.boot()?;
    let pending = paths.pending()?;
    let (steps, keep) = report::at_health(&boot, health, pending.as_ref());
    let blessed = steps.iter().any(|s| matches!(s, Step::Blessed { .. }));
    let conclusion = pending
        .filter(|p| blessed && p.slot == boot.slot)
        .map(|p| Conclusion {
            attempt: p.attempt,
            state: "blessed".into(),
            message: format!("slot {} running {} is blessed", boot.slot, boot.version),
        });
    push(paths, zone, steps)?;
    if let Some(c) = conclusion {
        Conclusions::new(paths.conclusions()).keep(&c)?;
    }
    paths.set_pending(keep.as_ref())
}

/// Appends what the outbox holds.
pub fn flush_audit(config_path: &Path, paths: &Paths) -> ExitCode {
    run(config_path, paths, |_| Ok(()))
}

/// The outbox's records into the audit category, in order, then the conclusions they lead to
/// into the install records (never before: a record says `blessed` only once the audit trail
/// does). Returns how many audit records were appended.
pub(super) async fn flush<S: crate::store::Store>(
    store: &S,
    paths: &Paths,
    max_fact_bytes: usize,
) -> Result<usize, String> {
    let n = Outbox::new(paths.outbox())
        .flush(store, max_fact_bytes)
        .await?;
    Conclusions::new(paths.conclusions()).apply(store).await?;
    Ok(n)
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
        let mut pass_number = 0u32;
        loop {
            if pass_number.is_multiple_of(REPORT_EVERY)
                && let Err(e) = report_status(&store, paths, esp).await
            {
                eprintln!("bsfg firmware agent: no firmware status report: {e}");
            }
            pass_number = pass_number.wrapping_add(1);
            // What boot-report or the health check could not append yet (nats-server was still
            // starting) goes out first, in order, and then the install records they conclude.
            if let Err(e) = flush(&store, paths, config.limits.max_fact_bytes).await {
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
/// the install's conclusion. A flush that cannot reach nats-server leaves both for the next run
/// (the firmware agent's next pass): the exit status says so, the records are safe.
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
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outbox = Outbox::new(paths.outbox());
    let flushed = runtime.block_on(async {
        tokio::time::timeout(STORE_TIMEOUT, async {
            let store = JetStreamStore::open(&config)
                .await
                .map_err(|e| e.to_string())?;
            flush(&store, paths, config.limits.max_fact_bytes).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        firmware::{host::test_host, request_key},
        proto::FirmwareInstall,
        store::{Store, memory::MemoryStore},
    };

    /// An install record in `state`, as the agent left it before the reboot or the power cut.
    async fn recorded(store: &MemoryStore, state: &str) {
        let install = FirmwareInstall {
            attempt: "att7".into(),
            state: state.into(),
            ..Default::default()
        };
        let json = serde_json::to_vec(&install).expect("json");
        store
            .put_firmware(&request_key("att7"), json)
            .await
            .expect("put");
    }

    async fn record(store: &MemoryStore) -> FirmwareInstall {
        let json = store
            .get_firmware(&request_key("att7"))
            .await
            .expect("get")
            .expect("the record");
        serde_json::from_slice(&json).expect("an install record")
    }

    fn pending(slot: &str, written: bool, bad_boots: &[&str]) -> PendingInstall {
        PendingInstall {
            attempt: "att7".into(),
            slot: slot.into(),
            version: "0.2.0".into(),
            written,
            bad_boots: bad_boots.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The boot learns the outcome while nats-server is still starting (nothing can be flushed);
    /// the agent's flush, later, writes the audit records and then concludes the record.
    async fn concluded_later(
        paths: &Paths,
        record_now: impl FnOnce(&Paths) -> Result<(), String>,
        state_before: &str,
    ) -> (FirmwareInstall, usize) {
        let store = MemoryStore::default();
        recorded(&store, state_before).await;
        record_now(paths).expect("recorded on disk");
        assert_eq!(
            paths.pending().expect("state"),
            None,
            "the install state is settled"
        );
        assert_eq!(
            record(&store).await.state,
            state_before,
            "nothing flushed yet"
        );

        let flushed = flush(&store, paths, 64 * 1024).await.expect("flush");
        let concluded = record(&store).await;
        assert!(
            Conclusions::new(paths.conclusions())
                .pending()
                .expect("conclusions")
                .is_empty(),
            "applied once, then forgotten"
        );
        // A second flush (the agent's next pass) changes nothing.
        assert_eq!(flush(&store, paths, 64 * 1024).await, Ok(0));
        assert_eq!(record(&store).await, concluded);
        (concluded, flushed)
    }

    #[tokio::test]
    async fn an_interrupted_install_is_concluded_by_a_later_flush_when_the_boot_could_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = test_host(dir.path(), "bsfg.slot=a", false);
        paths
            .set_pending(Some(&pending("b", false, &[])))
            .expect("pending");
        let (concluded, flushed) =
            concluded_later(&paths, |p| record_boot(p, "idmz"), "writing").await;
        assert_eq!(flushed, 2, "booted, interrupted");
        assert_eq!(concluded.state, "failed");
        assert!(
            concluded.message.contains("did not finish"),
            "{}",
            concluded.message
        );
    }

    #[tokio::test]
    async fn a_rollback_is_concluded_by_a_later_flush_with_the_failed_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = test_host(dir.path(), "bsfg.slot=b", false);
        paths
            .set_pending(Some(&pending("a", true, &["bsfg.service is masked"])))
            .expect("pending");
        let (concluded, flushed) =
            concluded_later(&paths, |p| record_boot(p, "idmz"), "rebooting").await;
        assert_eq!(flushed, 2, "booted, rolled back");
        assert_eq!(concluded.state, "rolled_back");
        assert!(
            concluded.message.contains("bsfg.service is masked"),
            "{}",
            concluded.message
        );
    }

    #[tokio::test]
    async fn a_blessing_is_concluded_by_a_later_flush() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = test_host(dir.path(), "bsfg.slot=b", true);
        paths
            .set_pending(Some(&pending("b", true, &[])))
            .expect("pending");
        let (concluded, flushed) = concluded_later(
            &paths,
            |p| record_health(p, "idmz", &Health::Good),
            "rebooting",
        )
        .await;
        assert_eq!(flushed, 1, "blessed");
        assert_eq!(concluded.state, "blessed");
    }

    #[tokio::test]
    async fn a_conclusion_waits_behind_the_audit_records_it_follows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let paths = test_host(dir.path(), "bsfg.slot=a", false);
        paths
            .set_pending(Some(&pending("b", false, &[])))
            .expect("pending");
        record_boot(&paths, "idmz").expect("recorded");
        // A record the audit category cannot take stops the flush before the conclusion.
        std::fs::write(paths.outbox().join("000000000001.json"), b"{broken").expect("write");
        let store = MemoryStore::default();
        recorded(&store, "writing").await;
        assert!(flush(&store, &paths, 64 * 1024).await.is_err());
        assert_eq!(record(&store).await.state, "writing");
        assert_eq!(
            Conclusions::new(paths.conclusions())
                .pending()
                .expect("conclusions")
                .len(),
            1
        );
    }
}
