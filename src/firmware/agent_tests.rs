//! The agent's sequence against an in-memory store and a scripted appliance: what is written in
//! which order, what a refusal leaves, and what a failed write leaves.

use super::*;
use crate::store::memory::MemoryStore;
use bytes::Bytes;
use std::cell::RefCell;

/// An appliance that records what it was asked to do.
struct Scripted {
    verdict: Result<Verified, Refusal>,
    install: Result<(), String>,
    calls: RefCell<Vec<String>>,
    /// The install state on disk when `install` was called.
    pending_at_install: RefCell<Option<PendingInstall>>,
    paths: Paths,
}

impl Appliance for Scripted {
    fn verify(&self, bundle: &Path) -> Result<Verified, Refusal> {
        self.calls
            .borrow_mut()
            .push(format!("verify {}", bundle.exists()));
        self.verdict.clone()
    }
    fn inactive_slot(&self) -> Result<String, String> {
        Ok("b".into())
    }
    fn install(&self, _bundle: &Path) -> Result<(), String> {
        self.calls.borrow_mut().push("install".into());
        *self.pending_at_install.borrow_mut() = self.paths.pending().ok().flatten();
        self.install.clone()
    }
    fn reboot(&self) -> Result<(), String> {
        self.calls.borrow_mut().push("reboot".into());
        Ok(())
    }
}

fn paths(dir: &Path) -> Paths {
    Paths {
        cmdline: dir.join("cmdline"),
        os_release: dir.join("os-release"),
        boot_id: dir.join("boot_id"),
        efivars: dir.join("efivars"),
        state_dir: dir.join("state"),
    }
}

async fn requested(store: &MemoryStore, digest: Option<&str>) -> FirmwareInstall {
    let bundle = Bytes::from_static(b"bundle bytes");
    let info = store
        .put_object(
            "firmware",
            "bsfg-0.2.0.raucb",
            "application/octet-stream",
            bundle,
        )
        .await
        .expect("put");
    let install = FirmwareInstall {
        attempt: "att1".into(),
        bucket: "firmware".into(),
        key: "bsfg-0.2.0.raucb".into(),
        digest: digest.map_or(info.digest, str::to_string),
        operator: "alice".into(),
        change_ticket: "CHG-9".into(),
        state: "approved".into(),
        requested_unix_ms: 1,
        ..Default::default()
    };
    let json = serde_json::to_vec(&install).expect("json");
    store
        .put_firmware(&request_key("att1"), json)
        .await
        .expect("put");
    install
}

async fn state_of(store: &MemoryStore) -> FirmwareInstall {
    let json = store
        .get_firmware(&request_key("att1"))
        .await
        .expect("get")
        .expect("record");
    serde_json::from_slice(&json).expect("install")
}

/// The predicates the audit category holds, in order.
async fn steps(store: &MemoryStore) -> Vec<String> {
    let spec = crate::config::ConsumerSpec {
        name: "all-audit".into(),
        category: crate::fact::Category::Audit,
        max_ack_pending: 100,
    };
    let page = store
        .fetch(&spec, 100, 1 << 20, std::time::Duration::ZERO)
        .await
        .expect("fetch");
    page.facts
        .into_iter()
        .filter_map(|f| f.fact.map(|fact| fact.predicate))
        .collect()
}

fn scripted(
    dir: &Path,
    verdict: Result<Verified, Refusal>,
    install: Result<(), String>,
) -> Scripted {
    Scripted {
        verdict,
        install,
        calls: RefCell::new(Vec::new()),
        pending_at_install: RefCell::new(None),
        paths: paths(dir),
    }
}

fn good() -> Result<Verified, Refusal> {
    Ok(Verified {
        version: "0.2.0".into(),
        signer: "CN=bsfg development update signer".into(),
    })
}

#[tokio::test]
async fn an_approved_install_is_verified_written_and_rebooted_into_with_every_step_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    requested(&store, None).await;
    let appliance = scripted(dir.path(), good(), Ok(()));

    let done = run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance).await;
    assert_eq!(done, Ok(Some("att1".into())));
    assert_eq!(
        *appliance.calls.borrow(),
        ["verify true", "install", "reboot"]
    );
    // The install state was on disk, not yet written, when RAUC started; written afterwards.
    let before = appliance
        .pending_at_install
        .borrow()
        .clone()
        .expect("pending before install");
    assert!(!before.written && before.slot == "b" && before.version == "0.2.0");
    let after = paths(dir.path()).pending().expect("read").expect("pending");
    assert!(after.written);
    assert_eq!(
        steps(&store).await,
        ["firmware_verified", "firmware_written", "firmware_reboot"]
    );
    assert_eq!(state_of(&store).await.state, "rebooting");
    // Nothing is taken twice.
    assert_eq!(
        run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance).await,
        Ok(None)
    );
}

#[tokio::test]
async fn a_refused_bundle_writes_nothing_and_says_which_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    requested(&store, None).await;
    let refusal = Refusal {
        check: "signature".into(),
        reason: "signed by CN=someone else, not in the keyring".into(),
    };
    let appliance = scripted(dir.path(), Err(refusal), Ok(()));
    run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance)
        .await
        .expect("run");
    assert_eq!(*appliance.calls.borrow(), ["verify true"]);
    assert_eq!(paths(dir.path()).pending(), Ok(None));
    assert_eq!(steps(&store).await, ["firmware_refused"]);
    let install = state_of(&store).await;
    assert_eq!(install.state, "refused");
    assert!(
        install
            .message
            .contains("(signature): signed by CN=someone else"),
        "{}",
        install.message
    );
}

#[tokio::test]
async fn a_bundle_with_another_digest_than_named_is_never_verified_or_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    requested(&store, Some(&format!("sha256:{}", "0".repeat(64)))).await;
    let appliance = scripted(dir.path(), good(), Ok(()));
    run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance)
        .await
        .expect("run");
    assert!(appliance.calls.borrow().is_empty());
    assert_eq!(steps(&store).await, ["firmware_refused"]);
    assert!(state_of(&store).await.message.contains("not sha256:0000"));
    let leftovers = fs::read_dir(paths(dir.path()).state_dir.join("bundles"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "the copy is removed");
}

#[tokio::test]
async fn a_failed_write_is_recorded_as_interrupted_and_leaves_no_pending_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    requested(&store, None).await;
    let appliance = scripted(
        dir.path(),
        good(),
        Err("rauc: writing root-b failed".into()),
    );
    run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance)
        .await
        .expect("run");
    assert_eq!(*appliance.calls.borrow(), ["verify true", "install"]);
    assert_eq!(paths(dir.path()).pending(), Ok(None));
    assert_eq!(
        steps(&store).await,
        ["firmware_verified", "firmware_interrupted"]
    );
    assert_eq!(state_of(&store).await.state, "failed");
}
