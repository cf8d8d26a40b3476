//! The operator's door and the firmware agent together, on this host: an operator asks for a
//! bundle that arrived in the zone's firmware bucket, and the agent (`bsfg firmware agent --once`,
//! the real binary against the zone's real nats-server and the real `rauc` 1.8) verifies it before
//! anything is written. A bundle signed by another key is refused by the signature check; the
//! refusal, with its check and reason, is in the install's record and in the audit category, and
//! nothing was handed to rauc install. (Writing a slot and rebooting is `make upgrade-test`,
//! under QEMU.)

mod common;

use common::{
    Zone, ZoneOptions,
    bundles::{Appliance, COMPATIBLE},
    js::stream_messages,
};
use sha2::{Digest, Sha256};
use std::process::Command;

fn zone() -> Zone {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: r#"
[[buckets]]
name = "firmware"
[firmware]
bucket = "firmware"
[[access]]
identity = "release"
put_objects = ["firmware"]
[[access]]
identity = "alice"
operate = ["firmware_install", "firmware_status"]
"#
        .into(),
        ..Default::default()
    });
    zone.issue_client("release");
    zone.issue_client("alice");
    zone
}

/// Puts `bundle` into the firmware bucket and asks for it; returns the attempt id.
fn ask(zone: &Zone, key: &str, bundle: &[u8]) -> String {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(bundle);
    let reply = zone.curl("release").post_json(
        "/bsfg.v1.BoundaryService/PutObject",
        &serde_json::json!({"bucket": "firmware", "key": key, "data": data, "mediaType": "application/vnd.rauc.bundle"}).to_string(),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bundle)));
    let reply = zone.curl("alice").post_json(
        "/bsfg.v1.OperatorService/InstallFirmware",
        &serde_json::json!({"bucket": "firmware", "key": key, "digest": digest, "changeTicket": "CHG-77"}).to_string(),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    reply.json()["attempt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn agent_once(zone: &Zone, lab: &Appliance, state: &std::path::Path) -> (i32, String) {
    let output = Command::new(common::bsfg_binary())
        .args(["firmware", "agent", "--once", "--config"])
        .arg(&zone.config_path)
        .arg("--keyring")
        .arg(lab.path("ca.pem"))
        .arg("--system-conf")
        .arg(lab.path("system.conf"))
        .arg("--os-release")
        .arg(lab.path("os-release"))
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run bsfg firmware agent");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn the_agent_refuses_a_bundle_signed_by_another_key_before_anything_is_written() {
    let zone = zone();
    let lab = Appliance::new();
    let foreign = lab.bundle("foreign", COMPATIBLE, "0.3.0", "verity", "foreign-signer");
    let attempt = ask(
        &zone,
        "bsfg-0.3.0.raucb",
        &std::fs::read(&foreign).expect("bundle"),
    );
    let state = tempfile::tempdir().expect("state dir");

    let (code, stderr) = agent_once(&zone, &lab, state.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("rauc: "),
        "nothing reached rauc install: {stderr}"
    );

    let status = zone
        .curl("alice")
        .post_json("/bsfg.v1.OperatorService/GetFirmwareStatus", "{}")
        .json();
    let install = &status["installs"][0];
    assert_eq!(install["attempt"], attempt.as_str());
    assert_eq!(install["state"], "refused", "{status}");
    let message = install["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("refused (signature): "), "{message}");
    assert!(
        !state.path().join("install.json").exists(),
        "no install state: nothing was about to be written"
    );

    let audit: Vec<String> = stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .map(|(_, _, payload)| String::from_utf8_lossy(&payload).into_owned())
        .filter(|text| text.contains("bsfg.firmware/"))
        .collect();
    let steps: Vec<&str> = audit
        .iter()
        .map(|t| {
            [
                "firmware_bundle_received",
                "firmware_install_requested",
                "firmware_refused",
                "firmware_verified",
            ]
            .into_iter()
            .find(|p| t.contains(p))
            .unwrap_or("?")
        })
        .collect();
    // The agent noticed the arrival in the same pass, before carrying out the install the
    // operator had already asked for.
    assert_eq!(
        steps,
        [
            "firmware_install_requested",
            "firmware_bundle_received",
            "firmware_refused"
        ],
        "{audit:?}"
    );
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(&foreign).expect("bundle")))
    );
    for claim in [
        r#""key":"bsfg-0.3.0.raucb""#,
        &format!(r#""digest":"{digest}""#),
        r#""claimed_version":"0.3.0""#,
        r#""claimed_signer":"O=Foreign, CN=Foreign release signer""#,
        r#""claim":"unverified""#,
    ] {
        assert!(audit[1].contains(claim), "{claim} in {}", audit[1]);
    }
    assert!(audit[2].contains(r#""check":"signature""#), "{}", audit[2]);
    assert!(audit[2].contains(&attempt), "{}", audit[2]);

    // Nothing is taken or announced twice: the next pass finds no approved install and no new
    // bundle.
    let (code, stderr) = agent_once(&zone, &lab, state.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(&attempt), "{stderr}");
    assert!(!stderr.contains("arrived"), "{stderr}");
    let again = stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .filter(|(_, _, payload)| String::from_utf8_lossy(payload).contains("bsfg.firmware/"))
        .count();
    assert_eq!(again, 3);
}
