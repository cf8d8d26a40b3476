//! Every step of a firmware change is an audit fact (issue 9, SPEC §2 audit category): written to
//! a local outbox on the data partition *before* the step it announces, then appended to the
//! zone's `audit` category in order, whenever nats-server is reachable. A step the box does not
//! survive (a power cut in the middle of an install, a new slot that never comes up) is on disk
//! already and reaches the audit stream at the next boot; ordinary replication carries it to the
//! enterprise zone.
//!
//! Each record's `message_id` is derived from what it records (the install attempt, the boot id),
//! so flushing the outbox again after an interruption never records a step twice.

use crate::{
    fact::{Category, jcs},
    proto::{AppendFactRequest, Envelope, Fact},
    store::{
        Store,
        audit::{AuditRecorded, record_audit},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{
    fs,
    path::{Path, PathBuf},
};

/// One step of a firmware change, with what an auditor needs to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A bundle arrived in the zone's firmware bucket (it is not installed by arriving). The
    /// version and signer are what the bundle *claims*, read from its manifest and signature
    /// without checking either (`claim` is `unverified`, or `unreadable: <why>` with both
    /// empty); only the verification before an install proves them.
    BundleReceived {
        bucket: String,
        key: String,
        digest: String,
        size: u64,
        claimed_version: String,
        claimed_signer: String,
        claim: String,
    },
    /// An operator asked for an install. `attempt` names this install through its later steps.
    InstallRequested {
        attempt: String,
        digest: String,
        operator: String,
        ticket: String,
        approver: Option<String>,
    },
    /// A second, different operator approved the install.
    InstallApproved { attempt: String, approver: String },
    /// The whole bundle verified (signature, signer, compatible, version, payload hash).
    Verified {
        attempt: String,
        digest: String,
        version: String,
        signer: String,
    },
    /// The bundle was refused before anything was written: which check, and why.
    Refused {
        attempt: String,
        digest: String,
        check: String,
        reason: String,
    },
    /// RAUC wrote the bundle into the inactive slot (the outcome of the install).
    Written {
        attempt: String,
        slot: String,
        version: String,
    },
    /// The install did not finish (RAUC failed, or the box lost power during it).
    Interrupted {
        attempt: String,
        slot: String,
        reason: String,
    },
    /// The appliance reboots into `slot` to try `version`.
    Reboot {
        attempt: String,
        slot: String,
        version: String,
    },
    /// The appliance booted `slot` running `version`; `counted` is a trial boot of a new slot.
    Booted {
        boot_id: String,
        slot: String,
        version: String,
        counted: bool,
    },
    /// The health check passed on a counted boot: the slot is kept.
    Blessed {
        boot_id: String,
        slot: String,
        version: String,
    },
    /// A counted boot failed its health check (the box reboots; systemd-boot counts it).
    BadBoot {
        boot_id: String,
        slot: String,
        version: String,
        reason: String,
    },
    /// The new slot used up its tries and the previous one booted again by itself.
    RolledBack {
        boot_id: String,
        from_slot: String,
        to_slot: String,
        to_version: String,
        reason: String,
    },
}

impl Step {
    /// The fact's predicate, e.g. `firmware_blessed`.
    pub fn predicate(&self) -> &'static str {
        match self {
            Self::BundleReceived { .. } => "firmware_bundle_received",
            Self::InstallRequested { .. } => "firmware_install_requested",
            Self::InstallApproved { .. } => "firmware_install_approved",
            Self::Verified { .. } => "firmware_verified",
            Self::Refused { .. } => "firmware_refused",
            Self::Written { .. } => "firmware_written",
            Self::Interrupted { .. } => "firmware_interrupted",
            Self::Reboot { .. } => "firmware_reboot",
            Self::Booted { .. } => "firmware_booted",
            Self::Blessed { .. } => "firmware_blessed",
            Self::BadBoot { .. } => "firmware_bad_boot",
            Self::RolledBack { .. } => "firmware_rolled_back",
        }
    }

    /// What makes this step unique: the same key is the same step.
    fn key(&self) -> String {
        let step = self.predicate().trim_start_matches("firmware_");
        match self {
            Self::BundleReceived {
                bucket,
                key,
                digest,
                ..
            } => format!("bundle/{}/{step}", arrival_id(bucket, key, digest)),
            Self::InstallRequested { attempt, .. }
            | Self::InstallApproved { attempt, .. }
            | Self::Verified { attempt, .. }
            | Self::Refused { attempt, .. }
            | Self::Written { attempt, .. }
            | Self::Interrupted { attempt, .. }
            | Self::Reboot { attempt, .. } => format!("install/{attempt}/{step}"),
            Self::Booted { boot_id, .. }
            | Self::Blessed { boot_id, .. }
            | Self::BadBoot { boot_id, .. }
            | Self::RolledBack { boot_id, .. } => format!("boot/{boot_id}/{step}"),
        }
    }
}

/// Names one arrival: the bucket, key and digest of a bundle, hashed (keys may hold any
/// character and be long; a message id and a KV key may not).
pub fn arrival_id(bucket: &str, key: &str, digest: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [bucket, key, digest] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// A step as the outbox keeps it: the step and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub zone: String,
    pub at_unix_ms: i64,
    #[serde(flatten)]
    pub step: Step,
}

impl Record {
    /// The audit fact: subject `appliance:<zone>`, the step's predicate, the step as canonical
    /// JSON, `from_zone` = `to_zone` = this zone.
    pub fn to_fact(&self) -> AppendFactRequest {
        let object = serde_json::to_value(&self.step).unwrap_or(Value::Null);
        let object_json = canonical(&object);
        AppendFactRequest {
            category: Category::Audit.to_wire() as i32,
            envelope: Some(Envelope {
                message_id: format!("bsfg.firmware/{}/{}", self.zone, self.step.key()),
                from_zone: self.zone.clone(),
                to_zone: self.zone.clone(),
                produced_at_unix_ms: self.at_unix_ms,
                object_schema: format!("urn:bsfg:schema:{}:v1", self.step.predicate()),
                ..Default::default()
            }),
            fact: Some(Fact {
                subject: format!("appliance:{}", self.zone),
                predicate: self.step.predicate().into(),
                object_json,
            }),
        }
    }
}

fn canonical(value: &Value) -> String {
    let text = value.to_string();
    jcs::canonicalize(text.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or(text)
}

/// The outbox: one file per step, named by a sequence number, written and synced before the
/// step it announces happens, removed once the audit stream holds the fact.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Keeps `record` durably (file and directory synced); the step may happen after this.
    pub fn push(&self, record: &Record) -> Result<PathBuf, String> {
        let next = self.pending()?.last().map_or(1, |(seq, _)| seq + 1);
        let path = self.dir.join(format!("{next:012}.json"));
        let temp = self.dir.join(format!(".{next:012}.json.tmp"));
        let body =
            serde_json::to_vec_pretty(record).map_err(|e| format!("encoding audit record: {e}"))?;
        super::host::write_durably(&path, &temp, &body)?;
        Ok(path)
    }

    /// The records not yet in the audit stream, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, PathBuf)>, String> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "reading the audit outbox {}: {e}",
                    self.dir.display()
                ));
            }
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((seq, entry.path()));
        }
        found.sort();
        Ok(found)
    }

    /// Appends every pending record to the audit category, in order, removing each once it is
    /// there. Stops at the first that cannot be recorded (the rest wait for the next flush).
    /// Returns how many were flushed.
    pub async fn flush<S: Store>(&self, store: &S, max_fact_bytes: usize) -> Result<usize, String> {
        let mut flushed = 0;
        for (_, path) in self.pending()? {
            let record = read_record(&path)?;
            let recorded = record_audit(store, &record.to_fact(), max_fact_bytes).await?;
            if let AuditRecorded::New { offset } = recorded {
                eprintln!(
                    "bsfg firmware: recorded {} at audit offset {offset}",
                    record.step.predicate()
                );
            }
            fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
            flushed += 1;
        }
        Ok(flushed)
    }
}

fn read_record(path: &Path) -> Result<Record, String> {
    let body = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{} is not an audit record ({e}); move it aside to let the others through",
            path.display()
        )
    })
}

/// A record of `step` for `zone`, now.
pub fn now(zone: &str, step: Step) -> Record {
    Record {
        zone: zone.to_string(),
        at_unix_ms: crate::replicate::status::now_unix_ms(),
        step,
    }
}

/// The object of a fact as JSON (for tests and `bsfg status`).
pub fn object_of(request: &AppendFactRequest) -> Value {
    request
        .fact
        .as_ref()
        .and_then(|fact| serde_json::from_str(&fact.object_json).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use serde_json::json;

    fn booted(boot_id: &str) -> Record {
        Record {
            zone: "idmz".into(),
            at_unix_ms: 1_790_000_000_000,
            step: Step::Booted {
                boot_id: boot_id.into(),
                slot: "b".into(),
                version: "0.2.0".into(),
                counted: true,
            },
        }
    }

    #[test]
    fn a_step_is_a_valid_audit_fact_of_this_zone() {
        let request = booted("1f2e").to_fact();
        let (category, envelope, fact) =
            crate::fact::validate_append(&request, 64 * 1024).expect("a valid fact");
        assert_eq!(category, Category::Audit);
        assert_eq!(envelope.message_id, "bsfg.firmware/idmz/boot/1f2e/booted");
        assert_eq!(
            (envelope.from_zone.as_str(), envelope.to_zone.as_str()),
            ("idmz", "idmz")
        );
        assert_eq!(fact.subject, "appliance:idmz");
        assert_eq!(fact.predicate, "firmware_booted");
        assert_eq!(
            object_of(&request),
            json!({"step": "booted", "boot_id": "1f2e", "slot": "b", "version": "0.2.0", "counted": true})
        );
    }

    #[tokio::test]
    async fn the_outbox_flushes_in_order_once_and_survives_a_second_flush() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::new(dir.path().join("outbox"));
        let store = MemoryStore::default();
        outbox.push(&booted("one")).expect("push");
        outbox.push(&booted("two")).expect("push");
        assert_eq!(outbox.pending().expect("pending").len(), 2);

        assert_eq!(outbox.flush(&store, 64 * 1024).await, Ok(2));
        assert!(outbox.pending().expect("pending").is_empty());

        // A record pushed again (a step re-run after a reboot) is the same fact: not recorded
        // twice, and the outbox still empties.
        outbox.push(&booted("one")).expect("push");
        assert_eq!(outbox.flush(&store, 64 * 1024).await, Ok(1));
        let again = record_audit(&store, &booted("two").to_fact(), 64 * 1024).await;
        assert_eq!(again, Ok(AuditRecorded::Earlier { offset: 2 }));
    }

    #[tokio::test]
    async fn a_broken_record_stops_the_flush_and_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::new(dir.path());
        outbox.push(&booted("one")).expect("push");
        fs::write(dir.path().join("000000000002.json"), b"{not json").expect("write");
        outbox.push(&booted("three")).expect("push");
        let store = MemoryStore::default();
        let error = outbox.flush(&store, 64 * 1024).await.expect_err("stops");
        assert!(
            error.contains("000000000002.json is not an audit record"),
            "{error}"
        );
        // The first went through; the broken one and the one after it wait.
        assert_eq!(outbox.pending().expect("pending").len(), 2);
    }
}
