//! A neighbour cannot re-file or forge facts (SPEC §6 step 3, issue 8 item 5). A pulled fact is
//! stored in its own category, never the one the pull happens to name: a fact in a category the
//! pull does not keep stops the pull loudly. Each pull declares which origin zones its peer may
//! relay (`accept_from_zones`); a fact from any other zone stops the pull like a conflict —
//! logged, counted, shown by `bsfg status` — and nothing of its page is appended or confirmed.

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

/// plant-a, and an idmz zone pulling from it with `pulls(plant_port)` added to its config.
/// plant-a's `forger` may append operational facts claiming to come from `enterprise`: the
/// compromised neighbour of these tests.
fn pair(pulls: impl Fn(u16) -> String) -> (Zone, Zone, tempfile::TempDir) {
    let (plant, idmz, estate) = start_pair(
        &["to-idmz", "audit-to-idmz"],
        "[[access]]\nidentity = \"forger\"\nappend = [\"operational\"]\nassert_zones = [\"enterprise\"]\n",
        pulls,
    );
    plant.issue_client("forger");
    (plant, idmz, estate)
}

fn pull(name: &str, port: u16, consumer: &str, category: &str, accept: &str) -> String {
    format!(
        "[[pulls]]\nname = \"{name}\"\npeer_url = \"https://127.0.0.1:{port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"{consumer}\"\ncategory = \"{category}\"\nidle_wait = \"1s\"\n{accept}"
    )
}

fn frontier(zone: &Zone, consumer: &str) -> f64 {
    metric(
        &metrics(zone),
        &format!("bsfg_frontier_offset{{consumer=\"{consumer}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn pulled_facts_keep_their_category_and_a_mislabelled_pull_stops() {
    // "audit" reads plant-a's audit consumer but names documents: a config mistake that must not
    // move audit facts into another stream with other retention.
    let (plant, idmz, _estate) = pair(|port| {
        format!(
            "{}{}",
            pull("operational", port, "to-idmz", "operational", ""),
            pull("audit", port, "audit-to-idmz", "documents", ""),
        )
    });
    let mes = plant.curl(PRODUCER);
    assert_eq!(mes.append(&append_json("m-1", "plant-a", "1")).status, 200);
    let mut audit: serde_json::Value =
        serde_json::from_str(&append_json("a-1", "plant-a", "1")).expect("json");
    audit["category"] = "CATEGORY_AUDIT".into();
    assert_eq!(mes.append(&audit.to_string()).status, 200);

    wait_for_count(
        &idmz.nats.url(),
        "facts_operational",
        1,
        Duration::from_secs(20),
        "the operational fact in idmz",
    );
    eventually(
        "the mislabelled pull stops",
        Duration::from_secs(20),
        || {
            let text = metrics(&idmz);
            metric(&text, "bsfg_replication_stopped{pull=\"audit\"}") == Some(1.0)
                || last_sequence(&idmz.nats.url(), "facts_documents") > 0
        },
    );
    assert_eq!(
        last_sequence(&idmz.nats.url(), "facts_documents"),
        0,
        "an audit fact was re-filed into documents"
    );
    assert_eq!(last_sequence(&idmz.nats.url(), "facts_audit"), 0);
    let text = metrics(&idmz);
    assert_eq!(
        metric(
            &text,
            "bsfg_replication_errors_total{pull=\"audit\",kind=\"category\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(frontier(&plant, "audit-to-idmz"), 0.0, "nothing confirmed");
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
            code == 1 && text.contains("stopped") && text.contains("category audit")
        },
    );
    // Without accept_from_zones the pulls accept any origin, and say so at start.
    assert!(
        idmz.node
            .log_contains("accept_from_zones is not set: this pull accepts facts from any zone"),
        "{}",
        idmz.node.log()
    );
}

#[test]
fn a_forged_origin_stops_the_pull_with_nothing_confirmed_past_it() {
    let (plant, idmz, _estate) = pair(|port| {
        pull(
            "from-plant",
            port,
            "to-idmz",
            "operational",
            "accept_from_zones = [\"plant-a\"]\n",
        )
    });
    let mes = plant.curl(PRODUCER);
    for i in 1..=2 {
        assert_eq!(
            mes.append(&append_json(&format!("m-{i}"), "plant-a", "1"))
                .status,
            200
        );
    }
    eventually("m-1 and m-2 are confirmed", Duration::from_secs(20), || {
        frontier(&plant, "to-idmz") == 2.0
    });
    // The compromised plant relays a fact claiming to come from the enterprise, then a good one.
    let forger = plant.curl("forger");
    assert_eq!(
        forger
            .append(&append_json("forged-3", "enterprise", "1"))
            .status,
        200
    );
    assert_eq!(mes.append(&append_json("m-4", "plant-a", "1")).status, 200);

    eventually("the pull stops", Duration::from_secs(20), || {
        metric(
            &metrics(&idmz),
            "bsfg_replication_stopped{pull=\"from-plant\"}",
        ) == Some(1.0)
            || last_sequence(&idmz.nats.url(), "facts_operational") > 2
    });
    assert_eq!(
        last_sequence(&idmz.nats.url(), "facts_operational"),
        2,
        "only m-1 and m-2 are stored"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        frontier(&plant, "to-idmz"),
        2.0,
        "nothing confirmed past the forged fact"
    );
    let text = metrics(&idmz);
    assert_eq!(
        metric(
            &text,
            "bsfg_replication_errors_total{pull=\"from-plant\",kind=\"from_zone\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        idmz.node.log_contains("pull stopped") && idmz.node.log_contains("\"enterprise\""),
        "{}",
        idmz.node.log()
    );
    eventually(
        "status shows the stopped pull",
        Duration::from_secs(5),
        || {
            let (code, text) = status(&idmz);
            code == 1 && text.contains("stopped") && text.contains("from_zone \"enterprise\"")
        },
    );
}
