//! Firmware over the operator's door (issue 9 items 6 and 7): a bundle already in the zone's
//! firmware bucket is asked for by one operator with a change ticket and approved by a second,
//! different one; the node checks the bundle is there with the digest named, records who asked,
//! who approved and why as audit facts, and leaves the request for the appliance's firmware
//! agent — it installs nothing itself. Arrival never installs anything.

mod common;

use common::{Zone, ZoneOptions, js::stream_messages};
use sha2::{Digest, Sha256};

const INSTALL: &str = "/bsfg.v1.OperatorService/InstallFirmware";
const APPROVE: &str = "/bsfg.v1.OperatorService/ApproveFirmwareInstall";
const STATUS: &str = "/bsfg.v1.OperatorService/GetFirmwareStatus";

fn zone() -> Zone {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: r#"
[[buckets]]
name = "firmware"
[firmware]
bucket = "firmware"
require_approval = true
[[access]]
identity = "release"
put_objects = ["firmware"]
[[access]]
identity = "alice"
operate = ["firmware_install", "firmware_approve", "firmware_status"]
[[access]]
identity = "bob"
operate = ["firmware_approve", "firmware_status"]
"#
        .into(),
        ..Default::default()
    });
    for name in ["release", "alice", "bob"] {
        zone.issue_client(name);
    }
    zone
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn install(
    zone: &Zone,
    who: &str,
    key: &str,
    digest: &str,
    ticket: &str,
) -> common::clients::HttpReply {
    zone.curl(who).post_json(
        INSTALL,
        &serde_json::json!({"bucket": "firmware", "key": key, "digest": digest, "changeTicket": ticket})
            .to_string(),
    )
}

fn audit_text(zone: &Zone) -> Vec<String> {
    stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .map(|(_, _, payload)| String::from_utf8_lossy(&payload).into_owned())
        .collect()
}

#[test]
fn an_install_is_asked_for_with_a_ticket_approved_by_another_operator_and_on_record() {
    let zone = zone();
    let bundle = b"a signed bundle, as far as this test is concerned".to_vec();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bundle)));
    let reply = zone.curl("release").post_json(
        "/bsfg.v1.BoundaryService/PutObject",
        &serde_json::json!({"bucket": "firmware", "key": "bsfg-0.2.0.raucb", "data": b64(&bundle), "mediaType": "application/vnd.rauc.bundle"}).to_string(),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let other = format!("sha256:{}", "0".repeat(64));

    // Refusals name what is wrong, and leave nothing to install.
    let reply = install(&zone, "alice", "bsfg-0.2.0.raucb", &other, "CHG-9");
    assert_eq!(reply.code(), "failed_precondition", "{:?}", reply.json());
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains(&digest)),
        "{:?}",
        reply.json()
    );
    assert_eq!(
        install(&zone, "alice", "nope.raucb", &digest, "CHG-9").code(),
        "not_found"
    );
    assert_eq!(
        install(&zone, "alice", "bsfg-0.2.0.raucb", &digest, " ").code(),
        "invalid_argument"
    );
    assert_eq!(
        install(&zone, "bob", "bsfg-0.2.0.raucb", &digest, "CHG-9").code(),
        "permission_denied"
    );

    let reply = install(&zone, "alice", "bsfg-0.2.0.raucb", &digest, "CHG-9");
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let attempt = reply.json()["attempt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(reply.json()["state"], "awaiting_approval");
    assert_eq!(attempt.len(), 32, "{attempt}");

    // Four eyes: not the one who asked.
    let approve = |who: &str| {
        zone.curl(who).post_json(
            APPROVE,
            &serde_json::json!({"attempt": attempt}).to_string(),
        )
    };
    let reply = approve("alice");
    assert_eq!(reply.code(), "failed_precondition");
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("second, different operator"))
    );
    let reply = approve("bob");
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.json()["state"], "approved");
    assert_eq!(
        approve("bob").code(),
        "failed_precondition",
        "approved once"
    );

    let status = zone.curl("bob").post_json(STATUS, "{}").json();
    let installs = status["installs"].as_array().cloned().unwrap_or_default();
    assert_eq!(installs.len(), 1, "{status}");
    assert_eq!(installs[0]["state"], "approved");
    assert_eq!(installs[0]["operator"], "alice");
    assert_eq!(installs[0]["approver"], "bob");
    assert_eq!(installs[0]["changeTicket"], "CHG-9");
    assert_eq!(installs[0]["digest"], digest.as_str());
    assert_eq!(
        status["bootedSlot"],
        serde_json::Value::Null,
        "no agent reported here"
    );

    // Who asked, with which ticket, and who approved: audit facts of this zone, before the
    // request exists; and every call as an operator_call.
    let audit = audit_text(&zone);
    let requested: Vec<&String> = audit
        .iter()
        .filter(|t| t.contains("firmware_install_requested"))
        .collect();
    assert_eq!(requested.len(), 1, "{audit:?}");
    for expected in [
        r#""operator":"alice""#,
        r#""ticket":"CHG-9""#,
        &attempt,
        &digest,
    ] {
        assert!(
            requested[0].contains(expected),
            "{expected} in {}",
            requested[0]
        );
    }
    let approved: Vec<&String> = audit
        .iter()
        .filter(|t| t.contains("firmware_install_approved"))
        .collect();
    assert_eq!(approved.len(), 1, "{audit:?}");
    assert!(approved[0].contains(r#""approver":"bob""#));
    let calls = audit.iter().filter(|t| t.contains("operator_call")).count();
    assert_eq!(calls, 9, "every call of the door is recorded: {audit:?}");
}

#[test]
fn a_node_without_firmware_refuses_installs() {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: "[[access]]\nidentity = \"alice\"\noperate = [\"firmware_install\"]\n".into(),
        ..Default::default()
    });
    zone.issue_client("alice");
    let reply = install(
        &zone,
        "alice",
        "k",
        &format!("sha256:{}", "a".repeat(64)),
        "CHG-1",
    );
    assert_eq!(reply.code(), "failed_precondition");
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("no [firmware] section"))
    );
}

/// Issue 9 item 6: a bundle travels like any artifact. The release team puts it into the
/// enterprise zone's firmware bucket and appends a release fact referencing it; the IDMZ pulls the
/// fact, brings the bundle over with its digest checked, and keeps it in its own firmware bucket.
/// Arrival installs nothing; an operator's InstallFirmware on the IDMZ then finds it.
#[test]
fn a_bundle_arrives_by_replication_and_is_installed_only_when_an_operator_asks() {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = std::sync::Arc::new(common::Pki::new(&estate.path().join("pki"), "estate CA"));
    let enterprise_port = common::free_port();
    let enterprise = Zone::start_with(ZoneOptions {
        zone: "enterprise".into(),
        pki: Some(pki.clone()),
        port: Some(enterprise_port),
        peer_fetch: vec!["releases-to-idmz".into()],
        peer_get_objects: vec!["firmware".into()],
        extra_toml: r#"
[[buckets]]
name = "firmware"
[[consumers]]
name = "releases-to-idmz"
category = "documents"
[[access]]
identity = "release"
append = ["documents"]
assert_zones = ["enterprise"]
put_objects = ["firmware"]
"#
        .into(),
        ..Default::default()
    });
    enterprise.issue_client("release");
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: format!(
            r#"
[[buckets]]
name = "firmware"
[firmware]
bucket = "firmware"
[[pulls]]
name = "releases"
peer_url = "https://127.0.0.1:{enterprise_port}"
peer_identity = "enterprise-bsfg"
consumer = "releases-to-idmz"
category = "documents"
accept_from_zones = ["enterprise"]
idle_wait = "1s"
[[access]]
identity = "alice"
operate = ["firmware_install", "firmware_status"]
"#
        ),
        ..Default::default()
    });
    idmz.issue_client("alice");

    let bundle: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bundle)));
    let key = "bsfg-appliance-0.2.0-x86_64.raucb";
    let media = "application/vnd.rauc.bundle";
    let reply = enterprise.curl("release").post_json(
        "/bsfg.v1.BoundaryService/PutObject",
        &serde_json::json!({"bucket": "firmware", "key": key, "data": b64(&bundle), "mediaType": media}).to_string(),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    // Not there yet on the IDMZ: nothing to install.
    assert_eq!(
        install(&idmz, "alice", key, &digest, "CHG-11").code(),
        "not_found"
    );

    let object_json = serde_json::json!({
        "bucket": "firmware", "key": key, "digest": digest, "size": bundle.len(), "media_type": media,
    })
    .to_string();
    let release = serde_json::json!({
        "envelope": {"messageId": "release/bsfg-appliance/0.2.0", "fromZone": "enterprise", "toZone": "idmz",
                     "producedAtUnixMs": "1700000000000", "objectMediaType": media},
        "fact": {"subject": "release:bsfg-appliance/0.2.0", "predicate": "firmware_released", "objectJson": object_json},
        "category": "CATEGORY_DOCUMENTS",
    });
    let reply = enterprise.curl("release").append(&release.to_string());
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    common::js::wait_for_count(
        &idmz.nats.url(),
        "facts_documents",
        1,
        std::time::Duration::from_secs(20),
        "the release fact reaches the IDMZ",
    );

    // Arrived, installed nothing.
    let status = idmz.curl("alice").post_json(STATUS, "{}").json();
    assert_eq!(status["installs"], serde_json::Value::Null, "{status}");
    // Asked for by an operator with the digest it was released with.
    let reply = install(&idmz, "alice", key, &digest, "CHG-11");
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(reply.json()["state"], "approved");
}
