//! The operator's door (`bsfg.v1.OperatorService`, issue 9 item 7): an identity granted an
//! operation in `[[access]] operate` reads the node remotely with `bsfg status --node`; any other
//! identity is refused with permission_denied naming the operation; and every call, allowed or
//! not, is an `operator_call` audit fact in the zone. `SkipGap` over the door records the caller
//! as the operator of the `gap_skipped` fact.

mod common;

use common::{OPERATOR, PRODUCER, Zone, ZoneOptions, bsfg_binary, js::stream_messages};
use std::{process::Command, time::Duration};

const FIELD_OPERATOR: &str = "field-op";

fn zone() -> Zone {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: format!(
            "[[access]]\nidentity = \"{FIELD_OPERATOR}\"\noperate = [\"status\"]\n"
        ),
        ..Default::default()
    });
    zone.issue_client(FIELD_OPERATOR);
    zone
}

fn remote_status(zone: &Zone, identity: &str) -> (i32, String, String) {
    let output = Command::new(bsfg_binary())
        .arg("status")
        .args(["--node", &zone.url(), "--node-identity", "plant-a-bsfg"])
        .arg("--identity")
        .arg(zone.pki.dir.join(format!("{identity}.pem")))
        .arg("--ca")
        .arg(&zone.pki.ca_path)
        .output()
        .expect("run bsfg status");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `operator_call` audit facts of the zone, as the text of their payloads.
fn operator_calls(zone: &Zone) -> Vec<String> {
    stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .map(|(_, _, payload)| String::from_utf8_lossy(&payload).into_owned())
        .filter(|text| text.contains("operator_call"))
        .collect()
}

#[test]
fn an_operator_reads_a_node_remotely_and_the_call_is_on_record() {
    let zone = zone();
    let (code, stdout, stderr) = remote_status(&zone, FIELD_OPERATOR);
    assert_eq!(code, 0, "bsfg status --node failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("zone plant-a (node {} bsfg ", zone.url())),
        "{stdout}"
    );
    assert!(
        stdout.contains("to-idmz"),
        "the consumers are shown:\n{stdout}"
    );
    assert!(stdout.contains("audit-to-idmz"), "{stdout}");

    let calls = operator_calls(&zone);
    assert_eq!(calls.len(), 1, "one operator_call fact: {calls:?}");
    for expected in [
        r#""identity":"field-op""#,
        r#""operation":"status""#,
        r#""outcome":"ok""#,
    ] {
        assert!(calls[0].contains(expected), "{expected} in {}", calls[0]);
    }
}

#[test]
fn an_identity_without_the_operation_is_refused_and_the_refusal_is_on_record() {
    let zone = zone();
    // `ops` may read /metrics but has no operation of the door.
    let (code, stdout, stderr) = remote_status(&zone, OPERATOR);
    assert_eq!(code, 69, "refused:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("permission_denied")
            && stderr.contains(r#"may not use the operation "status""#),
        "{stderr}"
    );

    // The same refusal for a Connect client no one here wrote (curl, JSON).
    let reply = zone
        .curl(OPERATOR)
        .post_json("/bsfg.v1.OperatorService/GetStatus", "{}");
    assert_eq!(
        reply.status,
        403,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.code(), "permission_denied");

    let calls = operator_calls(&zone);
    assert_eq!(calls.len(), 2, "both refusals are recorded: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.contains(r#""identity":"ops""#)
                && c.contains(r#""outcome":"permission_denied""#)),
        "{calls:?}"
    );
}

/// A zone whose telemetry is evicted after a second, with three facts gone before the consumer
/// `telemetry-out` confirmed them; `field-op` may read status and skip gaps, `viewer` only read.
fn zone_with_a_gap() -> Zone {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: r#"
[categories.telemetry]
max_age = "1s"
[[consumers]]
name = "telemetry-out"
category = "telemetry"
[[access]]
identity = "field-op"
operate = ["status", "skip_gap"]
[[access]]
identity = "viewer"
operate = ["status"]
"#
        .into(),
        ..Default::default()
    });
    zone.issue_client(FIELD_OPERATOR);
    zone.issue_client("viewer");
    let mes = zone.curl(PRODUCER);
    for i in 1..=3 {
        let fact = serde_json::json!({
            "envelope": {"messageId": format!("t-{i}"), "fromZone": "plant-a", "toZone": "enterprise", "producedAtUnixMs": "1700000000000"},
            "fact": {"subject": "asset:press-4", "predicate": "reading_taken", "objectJson": "1"},
            "category": "CATEGORY_TELEMETRY",
        });
        assert_eq!(mes.append(&fact.to_string()).status, 200);
    }
    std::thread::sleep(Duration::from_millis(3000));
    zone
}

const SKIP: &str = "/bsfg.v1.OperatorService/SkipGap";

#[test]
fn skip_gap_over_the_door_records_the_caller_as_the_operator() {
    let zone = zone_with_a_gap();
    let request =
        r#"{"consumerName": "telemetry-out", "reason": "retention cut during the outage, CHG-7"}"#;

    // Only an identity granted skip_gap; a blank reason is invalid.
    let reply = zone.curl("viewer").post_json(SKIP, request);
    assert_eq!(reply.code(), "permission_denied");
    let reply = zone
        .curl(FIELD_OPERATOR)
        .post_json(SKIP, r#"{"consumerName": "telemetry-out", "reason": " "}"#);
    assert_eq!(reply.code(), "invalid_argument");

    let reply = zone.curl(FIELD_OPERATOR).post_json(SKIP, request);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = reply.json();
    assert_eq!(answer["skipped"], true, "{answer}");
    assert_eq!(
        (answer["fromOffset"].as_str(), answer["toOffset"].as_str()),
        (Some("1"), Some("3"))
    );
    assert!(
        answer["auditMessageId"]
            .as_str()
            .is_some_and(|id| id.starts_with("bsfg.skip-gap/plant-a/telemetry-out/")),
        "{answer}"
    );

    let audit: Vec<String> = stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .map(|(_, _, payload)| String::from_utf8_lossy(&payload).into_owned())
        .collect();
    let skipped: Vec<&String> = audit.iter().filter(|t| t.contains("gap_skipped")).collect();
    assert_eq!(skipped.len(), 1, "{audit:?}");
    assert!(
        skipped[0].contains(r#""operator":"field-op""#),
        "{}",
        skipped[0]
    );
    // Three calls, three records: refused, invalid, done — in that order.
    let outcomes: Vec<&str> = operator_calls(&zone)
        .iter()
        .map(|c| {
            ["permission_denied", "invalid_argument", "\"ok\""]
                .into_iter()
                .find(|o| c.contains(o))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        outcomes,
        ["permission_denied", "invalid_argument", "\"ok\""]
    );

    // The consumer serves again: no data_loss, nothing more to skip.
    let reply = zone.curl(FIELD_OPERATOR).post_json(SKIP, request);
    assert_eq!(
        reply.json()["gapFound"],
        serde_json::Value::Null,
        "no gap now"
    );
}
