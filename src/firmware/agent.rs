//! The firmware agent (`bsfg firmware agent`, root, outside the node's sandbox, on loopback
//! only): carries out the installs the operator's door recorded in `bsfg_firmware`, one at a
//! time, oldest first, and only once approved. For each:
//!
//! 1. the bundle is copied out of the zone's object store into a root-only directory on the data
//!    partition, and its sha256 must be the digest the operator named;
//! 2. the whole bundle is verified (signature, signer, compatible, version, payload hash) before
//!    any byte of the inactive slot is written; a refusal says which check and why;
//! 3. the install state is kept on the data partition, then RAUC writes the inactive slot;
//! 4. the appliance reboots into it; the next boot's report and health check bless it or let
//!    systemd-boot roll back.
//!
//! Every step is an audit fact appended before the step (through the outbox, so a power cut
//! between two steps loses nothing), and the request's record in `bsfg_firmware` follows along
//! for `GetFirmwareStatus`.

use super::{
    audit::{self, Outbox, Step},
    host::Paths,
    report::PendingInstall,
    request_key,
};
use crate::{proto::FirmwareInstall, replicate::status::now_unix_ms, store::Store};
use sha2::{Digest, Sha256};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};
use tokio::io::AsyncReadExt;

/// What the verifier learned about a bundle it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub version: String,
    pub signer: String,
}

/// A refusal: which check (signature, signer, compatible, version policy, payload hash,
/// structure) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub check: String,
    pub reason: String,
}

/// The appliance's side of an install: verify, write the inactive slot, reboot.
pub trait Appliance {
    fn verify(&self, bundle: &Path) -> Result<Verified, Refusal>;
    /// The slot an install writes now (the one not booted).
    fn inactive_slot(&self) -> Result<String, String>;
    fn install(&self, bundle: &Path) -> Result<(), String>;
    fn reboot(&self) -> Result<(), String>;
}

/// How big a piece of a bundle is copied from the object store to its file at a time.
const CHUNK: usize = 128 * 1024;

/// One pass: the oldest approved install, if any, carried out. Returns its attempt id.
pub async fn run_once<S: Store, A: Appliance>(
    store: &S,
    zone: &str,
    max_fact_bytes: usize,
    paths: &Paths,
    appliance: &A,
) -> Result<Option<String>, String> {
    let Some(mut install) = next_approved(store).await? else {
        return Ok(None);
    };
    let attempt = install.attempt.clone();
    match carry_out(store, zone, max_fact_bytes, paths, appliance, &mut install).await {
        Ok(()) => Ok(Some(attempt)),
        // Whatever stopped it, the request does not stay in flight: failed, and why.
        Err(e) => {
            update(store, &mut install, "failed", &e).await?;
            Err(format!("install {attempt}: {e}"))
        }
    }
}

async fn carry_out<S: Store, A: Appliance>(
    store: &S,
    zone: &str,
    max_fact_bytes: usize,
    paths: &Paths,
    appliance: &A,
    install: &mut FirmwareInstall,
) -> Result<(), String> {
    let attempt = install.attempt.clone();
    let outbox = Outbox::new(paths.outbox());
    let step =
        |step: Step| -> Result<(), String> { outbox.push(&audit::now(zone, step)).map(|_| ()) };
    let flush = || outbox.flush(store, max_fact_bytes);

    update(
        store,
        install,
        "verifying",
        "copying the bundle out of the object store",
    )
    .await?;
    let bundles = paths.state_dir.join("bundles");
    let bundle = match fetch_bundle(store, install, &bundles).await {
        Ok(path) => path,
        Err(reason) => {
            step(Step::Refused {
                attempt: attempt.clone(),
                digest: install.digest.clone(),
                check: "digest".into(),
                reason: reason.clone(),
            })?;
            flush().await?;
            update(store, install, "refused", &reason).await?;
            return Ok(());
        }
    };
    let verified = match appliance.verify(&bundle) {
        Ok(verified) => verified,
        Err(refusal) => {
            step(Step::Refused {
                attempt: attempt.clone(),
                digest: install.digest.clone(),
                check: refusal.check.clone(),
                reason: refusal.reason.clone(),
            })?;
            flush().await?;
            let _ = fs::remove_file(&bundle);
            let message = format!("refused ({}): {}", refusal.check, refusal.reason);
            update(store, install, "refused", &message).await?;
            return Ok(());
        }
    };
    step(Step::Verified {
        attempt: attempt.clone(),
        digest: install.digest.clone(),
        version: verified.version.clone(),
        signer: verified.signer.clone(),
    })?;
    flush().await?;

    let slot = appliance.inactive_slot()?;
    let mut pending = PendingInstall {
        attempt: attempt.clone(),
        slot: slot.clone(),
        version: verified.version.clone(),
        written: false,
        bad_boots: Vec::new(),
    };
    // On disk before RAUC starts: a power cut during the write is found at the next boot.
    paths.set_pending(Some(&pending))?;
    update(store, install, "writing", &format!("writing slot {slot}")).await?;
    if let Err(reason) = appliance.install(&bundle) {
        paths.set_pending(None)?;
        step(Step::Interrupted {
            attempt: attempt.clone(),
            slot: slot.clone(),
            reason: reason.clone(),
        })?;
        flush().await?;
        update(store, install, "failed", &reason).await?;
        return Ok(());
    }
    pending.written = true;
    paths.set_pending(Some(&pending))?;
    let _ = fs::remove_file(&bundle);
    step(Step::Written {
        attempt: attempt.clone(),
        slot: slot.clone(),
        version: verified.version.clone(),
    })?;
    step(Step::Reboot {
        attempt: attempt.clone(),
        slot: slot.clone(),
        version: verified.version.clone(),
    })?;
    flush().await?;
    update(
        store,
        install,
        "rebooting",
        &format!(
            "slot {slot} written with {}; rebooting into it",
            verified.version
        ),
    )
    .await?;
    appliance.reboot()?;
    Ok(())
}

/// After a boot: the install the pending state names ends as `blessed`, `rolled_back` or
/// `failed` in its record, with `message`.
pub async fn conclude<S: Store>(
    store: &S,
    attempt: &str,
    state: &str,
    message: &str,
) -> Result<(), String> {
    let Some(json) = store
        .get_firmware(&request_key(attempt))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let mut install: FirmwareInstall =
        serde_json::from_slice(&json).map_err(|e| format!("install record {attempt}: {e}"))?;
    update(store, &mut install, state, message).await
}

async fn next_approved<S: Store>(store: &S) -> Result<Option<FirmwareInstall>, String> {
    let mut approved = Vec::new();
    for key in store.firmware_keys().await.map_err(|e| e.to_string())? {
        if !key.starts_with("request.") {
            continue;
        }
        let Some(json) = store.get_firmware(&key).await.map_err(|e| e.to_string())? else {
            continue;
        };
        match serde_json::from_slice::<FirmwareInstall>(&json) {
            Ok(install) if install.state == "approved" => approved.push(install),
            Ok(_) => {}
            Err(e) => {
                eprintln!("bsfg firmware agent: {key}: unreadable install record skipped ({e})")
            }
        }
    }
    approved.sort_by_key(|install| install.requested_unix_ms);
    Ok(approved.into_iter().next())
}

async fn update<S: Store>(
    store: &S,
    install: &mut FirmwareInstall,
    state: &str,
    message: &str,
) -> Result<(), String> {
    install.state = state.into();
    install.message = message.into();
    install.updated_unix_ms = now_unix_ms();
    eprintln!(
        "bsfg firmware agent: install {}: {state}: {message}",
        install.attempt
    );
    let json = serde_json::to_vec(install).map_err(|e| e.to_string())?;
    store
        .put_firmware(&request_key(&install.attempt), json)
        .await
        .map_err(|e| e.to_string())
}

/// Copies the bundle out of the object store into `dir` (created 0700), checking its sha256
/// against the digest the operator named; the file is `<attempt>.raucb`, mode 0600.
pub async fn fetch_bundle<S: Store>(
    store: &S,
    install: &FirmwareInstall,
    dir: &Path,
) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.raucb", install.attempt));
    let temp = dir.join(format!(".{}.raucb.tmp", install.attempt));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| format!("creating {}: {e}", temp.display()))?;
    // Read as a stream (one piece in memory, each byte read once), not GetObject's chunks.
    let reading =
        |e: &dyn std::fmt::Display| format!("reading {}/{}: {e}", install.bucket, install.key);
    let (_, mut object) = store
        .read_object(&install.bucket, &install.key)
        .await
        .map_err(|e| reading(&e))?;
    let mut hasher = Sha256::new();
    let mut piece = vec![0u8; CHUNK];
    loop {
        let n = object.read(&mut piece).await.map_err(|e| reading(&e))?;
        if n == 0 {
            break;
        }
        hasher.update(&piece[..n]);
        file.write_all(&piece[..n])
            .map_err(|e| format!("writing {}: {e}", temp.display()))?;
    }
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", temp.display()))?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if digest != install.digest {
        let _ = fs::remove_file(&temp);
        return Err(format!(
            "{}/{} has digest {digest}, not {} as the operator named",
            install.bucket, install.key, install.digest
        ));
    }
    fs::rename(&temp, &path).map_err(|e| format!("renaming {}: {e}", temp.display()))?;
    Ok(path)
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
