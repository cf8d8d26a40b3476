//! The operator's door (`bsfg.v1.OperatorService`, issue 9 item 7): an identity granted an
//! operation in `[[access]] operate` reads the node remotely with `bsfg status --node`; any other
//! identity is refused with permission_denied naming the operation; and every call, allowed or
//! not, is an `operator_call` audit fact in the zone.

mod common;

use common::{OPERATOR, Zone, ZoneOptions, bsfg_binary, js::stream_messages};
use std::process::Command;

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
