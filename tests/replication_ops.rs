//! Replication as an operator sees it: refused peers and consumers are reported, a conflicting
//! duplicate stops only its own pull, `/metrics` and `bsfg status` match the state.

mod common;

use common::{
    chain::start_pair,
    observe::{eventually, metric, metrics, status},
};

use common::{
    PRODUCER, Zone, append_json,
    js::{last_sequence, wait_for_count},
};
use std::time::Duration;

/// A plant zone and an idmz zone pulling from it with `pulls` (TOML) added to idmz's config.
fn pair(peer_fetch: &[&str], pulls: impl Fn(u16) -> String) -> (Zone, Zone, tempfile::TempDir) {
    start_pair(peer_fetch, "", pulls)
}

fn pull(name: &str, port: u16, identity: &str, consumer: &str, category: &str) -> String {
    format!(
        "[[pulls]]\nname = \"{name}\"\npeer_url = \"https://127.0.0.1:{port}\"\npeer_identity = \"{identity}\"\nconsumer = \"{consumer}\"\ncategory = \"{category}\"\nidle_wait = \"1s\"\n"
    )
}

#[test]
fn metrics_and_status_match_the_state_after_catch_up() {
    let (plant, idmz, _estate) = pair(&["to-idmz"], |port| {
        pull("from-plant", port, "plant-a-bsfg", "to-idmz", "operational")
    });
    let mes = plant.curl(PRODUCER);
    for i in 1..=25 {
        assert_eq!(
            mes.append(&append_json(&format!("m-{i}"), "plant-a", &i.to_string()))
                .status,
            200
        );
    }
    wait_for_count(
        &idmz.nats.url(),
        "facts_operational",
        25,
        Duration::from_secs(30),
        "replication",
    );
    let label = "{pull=\"from-plant\"}";
    eventually(
        "lag reaches 0 and the cursor 25",
        Duration::from_secs(10),
        || {
            let text = metrics(&idmz);
            metric(&text, &format!("bsfg_replication_lag_facts{label}")) == Some(0.0)
                && metric(&text, &format!("bsfg_replication_cursor{label}")) == Some(25.0)
        },
    );
    let text = metrics(&idmz);
    assert_eq!(
        metric(&text, &format!("bsfg_replication_facts_total{label}")),
        Some(25.0),
        "{text}"
    );
    let lag_seconds =
        metric(&text, &format!("bsfg_replication_lag_seconds{label}")).expect("lag seconds");
    assert!((0.0..5.0).contains(&lag_seconds), "{lag_seconds}");
    // The source's frontier is the offset the idmz pull confirmed.
    let source = metrics(&plant);
    assert_eq!(
        metric(&source, "bsfg_frontier_offset{consumer=\"to-idmz\"}"),
        Some(25.0),
        "{source}"
    );
    assert_eq!(
        metric(&source, "bsfg_consumer_backlog_facts{consumer=\"to-idmz\"}"),
        Some(0.0)
    );
    assert!(
        metric(
            &source,
            "bsfg_store_buffer_fill_percent{category=\"operational\"}"
        )
        .is_some()
    );

    eventually("bsfg status shows the pull", Duration::from_secs(5), || {
        status(&idmz).1.contains("cursor 25")
    });
    let (code, text) = status(&idmz);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("from-plant") && text.contains("running") && text.contains("lag 0 facts"),
        "{text}"
    );
    let (code, text) = status(&plant);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("to-idmz")
            && text.contains("cursor         25")
            && text.contains("backlog        0"),
        "{text}"
    );
}

#[test]
fn a_peer_with_the_wrong_identity_and_a_forbidden_consumer_are_reported() {
    let (plant, idmz, _estate) = pair(&["to-idmz"], |port| {
        format!(
            "{}{}{}",
            pull(
                "impostor",
                port,
                "enterprise-bsfg",
                "to-idmz",
                "operational"
            ),
            pull("forbidden", port, "plant-a-bsfg", "audit-to-idmz", "audit"),
            pull("good", port, "plant-a-bsfg", "to-idmz", "operational"),
        )
    });
    assert_eq!(
        plant
            .curl(PRODUCER)
            .append(&append_json("x-1", "plant-a", "1"))
            .status,
        200
    );
    eventually(
        "the good pull replicates while the others fail",
        Duration::from_secs(20),
        || {
            let text = metrics(&idmz);
            last_sequence(&idmz.nats.url(), "facts_operational") == 1
                && metric(
                    &text,
                    "bsfg_replication_errors_total{pull=\"impostor\",kind=\"wrong_peer\"}",
                )
                .unwrap_or(0.0)
                    >= 1.0
                && metric(
                    &text,
                    "bsfg_replication_errors_total{pull=\"forbidden\",kind=\"permission_denied\"}",
                )
                .unwrap_or(0.0)
                    >= 1.0
        },
    );
    assert!(
        idmz.node
            .log_contains("presented identity \"plant-a-bsfg\", expected \"enterprise-bsfg\""),
        "{}",
        idmz.node.log()
    );
    eventually("status reports both", Duration::from_secs(5), || {
        let text = status(&idmz).1;
        text.contains("expected \"enterprise-bsfg\"") && text.contains("permission_denied")
    });
}

#[test]
fn a_conflicting_duplicate_stops_its_pull_and_others_continue() {
    let (plant, idmz, _estate) = pair(&["to-idmz", "audit-to-idmz"], |port| {
        format!(
            "{}{}",
            pull(
                "operational",
                port,
                "plant-a-bsfg",
                "to-idmz",
                "operational"
            ),
            pull("audit", port, "plant-a-bsfg", "audit-to-idmz", "audit"),
        )
    });
    // idmz already holds a fact under message_id m-2 with other content (written by idmz's own
    // producer, who may assert only from_zone idmz).
    let local = idmz.curl(PRODUCER);
    let mut clash: serde_json::Value =
        serde_json::from_str(&append_json("m-2", "idmz", "\"local\"")).expect("json");
    clash["envelope"]["fromZone"] = "idmz".into();
    assert_eq!(local.append(&clash.to_string()).status, 200);
    let mes = plant.curl(PRODUCER);
    for i in 1..=3 {
        let mut fact: serde_json::Value =
            serde_json::from_str(&append_json(&format!("m-{i}"), "plant-a", "1")).expect("json");
        fact["envelope"]["fromZone"] = "plant-a".into();
        assert_eq!(mes.append(&fact.to_string()).status, 200);
    }
    let mut audit: serde_json::Value =
        serde_json::from_str(&append_json("a-1", "plant-a", "1")).expect("json");
    audit["category"] = "CATEGORY_AUDIT".into();
    assert_eq!(mes.append(&audit.to_string()).status, 200);

    eventually(
        "the operational pull stops on the conflict",
        Duration::from_secs(20),
        || {
            metric(
                &metrics(&idmz),
                "bsfg_replication_stopped{pull=\"operational\"}",
            ) == Some(1.0)
        },
    );
    let text = metrics(&idmz);
    assert_eq!(
        metric(
            &text,
            "bsfg_replication_errors_total{pull=\"operational\",kind=\"conflict\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // m-1 arrived, m-2 conflicted, nothing after it was appended, and the peer's cursor stayed
    // before the conflict (offset 2): the conflicting page was not confirmed.
    assert_eq!(
        last_sequence(&idmz.nats.url(), "facts_operational"),
        2,
        "local m-2 plus m-1"
    );
    let frontier = metric(
        &metrics(&plant),
        "bsfg_frontier_offset{consumer=\"to-idmz\"}",
    )
    .expect("frontier");
    assert!(
        frontier < 2.0,
        "the conflicting fact was confirmed: frontier {frontier}"
    );
    // The audit pull goes on.
    wait_for_count(
        &idmz.nats.url(),
        "facts_audit",
        1,
        Duration::from_secs(20),
        "the audit pull",
    );
    assert!(
        idmz.node.log_contains("pull stopped"),
        "{}",
        idmz.node.log()
    );
    eventually(
        "status shows the stopped pull",
        Duration::from_secs(5),
        || {
            let (code, text) = status(&idmz);
            code == 1 && text.contains("stopped") && text.contains("conflicting duplicate")
        },
    );
}
