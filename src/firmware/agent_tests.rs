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

#[tokio::test]
async fn the_bundle_is_copied_out_in_one_pass_not_chunk_by_chunk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    let install = requested(&store, None).await;
    let path = fetch_bundle(&store, &install, &dir.path().join("bundles"))
        .await
        .expect("fetched");
    assert_eq!(fs::read(&path).expect("copy"), b"bundle bytes");
    // One whole-object read; no read at an offset (each of which costs the JetStream store the
    // chunks before it, or did).
    assert_eq!(store.object_reads(), (0, 1));
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("bundles"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("att1.raucb")]);
}

/// DER: `tag`, definite length, `contents`.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// A verity bundle's frame as the agent reads it at arrival: a payload of whole 4 KiB blocks, a
/// CMS SignedData with the manifest inside and the signer's certificate, and the trailer. The
/// signature is not a valid one (nothing here checks it: that is the install's verification).
fn fake_bundle(version: &str, signer_cn: &str, payload_blocks: usize) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, signer_cn);
    let key = rcgen::KeyPair::generate().expect("key");
    let certificate = params.self_signed(&key).expect("certificate");
    let der = certificate.der().to_vec();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let manifest = format!(
        "[update]\ncompatible=bsfg-appliance-x86_64\nversion={version}\n\n[bundle]\nformat=verity\n"
    );
    let oid_data = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01];
    let oid_signed_data = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02];
    let encapsulated = tlv(
        0x30,
        &[
            tlv(0x06, &oid_data),
            tlv(0xA0, &tlv(0x04, manifest.as_bytes())),
        ]
        .concat(),
    );
    let sid = tlv(
        0x30,
        &[parsed.issuer().as_raw(), &tlv(0x02, parsed.raw_serial())].concat(),
    );
    let signer_info = tlv(0x30, &[tlv(0x02, &[1]), sid].concat());
    let signed_data = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x31, &[]),
            encapsulated,
            tlv(0xA0, &der),
            tlv(0x31, &signer_info),
        ]
        .concat(),
    );
    let cms = tlv(
        0x30,
        &[tlv(0x06, &oid_signed_data), tlv(0xA0, &signed_data)].concat(),
    );
    let mut bundle = vec![0x5Au8; 4096 * payload_blocks];
    bundle.extend_from_slice(&cms);
    bundle.extend_from_slice(&(cms.len() as u64).to_be_bytes());
    bundle
}

/// The audit facts' objects, in order.
async fn facts(store: &MemoryStore) -> Vec<serde_json::Value> {
    let spec = crate::config::ConsumerSpec {
        name: "all-audit-objects".into(),
        category: crate::fact::Category::Audit,
        max_ack_pending: 100,
    };
    let page = store
        .fetch(&spec, 100, 1 << 20, std::time::Duration::ZERO)
        .await
        .expect("fetch");
    page.facts
        .into_iter()
        .filter_map(|f| f.fact)
        .map(|fact| serde_json::from_str(&fact.object_json).expect("json"))
        .collect()
}

#[tokio::test]
async fn an_arrival_is_recorded_once_with_its_unverified_claim_and_installs_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    let bundle = fake_bundle("0.3.0", "bsfg development update signer", 64);
    let size = bundle.len() as u64;
    let info = store
        .put_object(
            "firmware",
            "bsfg-0.3.0.raucb",
            "application/vnd.rauc.bundle",
            Bytes::from(bundle),
        )
        .await
        .expect("put");
    // Not a bundle at all: its arrival is recorded too, with the claim unreadable.
    store
        .put_object(
            "firmware",
            "notes.txt",
            "text/plain",
            Bytes::from_static(b"hello"),
        )
        .await
        .expect("put");
    // Another bucket is not watched.
    store
        .put_object(
            "batch-files",
            "r.pdf",
            "application/pdf",
            Bytes::from_static(b"%PDF"),
        )
        .await
        .expect("put");

    let announced =
        announce_arrivals(&store, "idmz", "firmware", 64 * 1024, &paths(dir.path())).await;
    assert_eq!(announced, Ok(2));
    assert_eq!(
        steps(&store).await,
        ["firmware_bundle_received", "firmware_bundle_received"]
    );
    let received = facts(&store).await;
    assert_eq!(
        received[0],
        serde_json::json!({
            "step": "bundle_received",
            "bucket": "firmware",
            "key": "bsfg-0.3.0.raucb",
            "digest": info.digest,
            "size": size,
            "claimed_version": "0.3.0",
            "claimed_signer": "CN=bsfg development update signer",
            "claim": "unverified",
        })
    );
    assert_eq!(received[1]["key"], "notes.txt");
    assert_eq!(received[1]["claimed_version"], "");
    let claim = received[1]["claim"].as_str().unwrap_or_default();
    assert!(claim.starts_with("unreadable: "), "{claim}");
    // Only the end of the bundle was read for the claim, and no copy was made.
    let (chunk_bytes, whole_reads) = store.object_reads();
    assert!(chunk_bytes <= 64 * 1024 + 8 + 5, "{chunk_bytes} bytes read");
    assert_eq!(whole_reads, 0);
    assert!(!paths(dir.path()).state_dir.join("bundles").exists());

    // The next pass, and a restarted agent with a fresh state directory, announce nothing.
    assert_eq!(
        announce_arrivals(&store, "idmz", "firmware", 64 * 1024, &paths(dir.path())).await,
        Ok(0)
    );
    let other = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        announce_arrivals(&store, "idmz", "firmware", 64 * 1024, &paths(other.path())).await,
        Ok(0)
    );
    assert_eq!(steps(&store).await.len(), 2);

    // Arrival installs nothing: there is no install request to carry out.
    let appliance = scripted(dir.path(), good(), Ok(()));
    assert_eq!(
        run_once(&store, "idmz", 64 * 1024, &paths(dir.path()), &appliance).await,
        Ok(None)
    );
    assert!(appliance.calls.borrow().is_empty());
}

#[tokio::test]
async fn an_arrival_announced_again_after_a_lost_mark_is_the_same_fact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::default();
    let bundle = fake_bundle("0.3.0", "bsfg development update signer", 1);
    store
        .put_object(
            "firmware",
            "b.raucb",
            "application/vnd.rauc.bundle",
            Bytes::from(bundle),
        )
        .await
        .expect("put");
    let record = audit::now(
        "idmz",
        Step::BundleReceived {
            bucket: "firmware".into(),
            key: "b.raucb".into(),
            digest: String::new(),
            size: 0,
            claimed_version: String::new(),
            claimed_signer: String::new(),
            claim: String::new(),
        },
    );
    // The message id names the bucket, key and digest: another digest is another arrival.
    let id = |r: &audit::Record| {
        r.to_fact()
            .envelope
            .map(|e| e.message_id)
            .unwrap_or_default()
    };
    let mut other = record.clone();
    if let Step::BundleReceived { digest, .. } = &mut other.step {
        *digest = "sha256:00".into();
    }
    assert_ne!(id(&record), id(&other));
    assert!(id(&record).starts_with("bsfg.firmware/idmz/bundle/"));

    announce_arrivals(&store, "idmz", "firmware", 64 * 1024, &paths(dir.path()))
        .await
        .expect("announced");
    // The agent died between the fact and its mark in bsfg_firmware, and announces the arrival
    // again later (other time, same bucket, key and digest): the audit stream holds it once.
    let info = store
        .object_info("firmware", "b.raucb")
        .await
        .expect("info")
        .expect("stored");
    let mut again = record;
    again.at_unix_ms += 60_000;
    if let Step::BundleReceived { digest, size, .. } = &mut again.step {
        *digest = info.digest.clone();
        *size = info.size;
    }
    let outbox = Outbox::new(paths(dir.path()).outbox());
    outbox.push(&again).expect("push");
    assert_eq!(outbox.flush(&store, 64 * 1024).await, Ok(1));
    assert_eq!(steps(&store).await, ["firmware_bundle_received"]);
}
