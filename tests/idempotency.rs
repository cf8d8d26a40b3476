//! Idempotent AppendFact for the stream's whole retention (SPEC §2): duplicates return the
//! original offset, conflicting duplicates are refused and write nothing — also after
//! JetStream's own duplicate window has passed, and under concurrency.

mod common;

use common::{PEER, PRODUCER, Zone, ZoneOptions, append_json, clients::offsets};
use std::time::Duration;

#[test]
fn same_fact_twice_is_a_duplicate_and_other_content_is_a_conflict() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let first = mes.append(&append_json("id-1", "plant-a", "{\"v\":1}"));
    assert_eq!(first.json(), serde_json::json!({"offset": "1"}));
    let again = mes.append(&append_json("id-1", "plant-a", "{\"v\":1}"));
    assert_eq!(
        again.json(),
        serde_json::json!({"offset": "1", "duplicate": true})
    );

    // produced_at is not part of the content: a retry with a new clock reading is a duplicate.
    let mut retried: serde_json::Value =
        serde_json::from_str(&append_json("id-1", "plant-a", "{\"v\":1}")).expect("json");
    retried["envelope"]["producedAtUnixMs"] = "1700000009999".into();
    assert_eq!(mes.append(&retried.to_string()).json()["duplicate"], true);

    let conflict = mes.append(&append_json("id-1", "plant-a", "{\"v\":2}"));
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.code(), "already_exists");
    assert!(
        conflict.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("id-1")
    );

    // A label is content too.
    let mut labelled = retried.clone();
    labelled["envelope"]["labels"] = serde_json::json!({"classification": "GMP"});
    assert_eq!(mes.append(&labelled.to_string()).code(), "already_exists");

    let page = zone.curl(PEER).fetch("to-idmz", 10);
    assert_eq!(
        offsets(&page),
        vec![1],
        "nothing but the first fact was written"
    );
    assert_eq!(page.json()["facts"][0]["fact"]["objectJson"], "{\"v\":1}");
}

#[test]
fn the_key_is_the_message_id_whatever_the_subject_kind() {
    // Facts are stored under `facts.<category>.<kind>.<key>`: the same message id with another
    // subject kind must still meet the first fact, not land beside it.
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    assert_eq!(
        mes.append(&append_json("id-k", "plant-a", "1")).json()["offset"],
        "1"
    );
    let mut other_kind: serde_json::Value =
        serde_json::from_str(&append_json("id-k", "plant-a", "1")).expect("json");
    other_kind["fact"]["subject"] = "lot:L-9".into();
    let conflict = mes.append(&other_kind.to_string());
    assert_eq!(
        conflict.code(),
        "already_exists",
        "{}",
        String::from_utf8_lossy(&conflict.body)
    );
    assert_eq!(
        zone.curl(PEER).fetch("to-idmz", 10).json()["highWatermark"],
        "1",
        "nothing was written for the conflicting fact"
    );
}

#[test]
fn idempotency_outlives_the_jetstream_duplicate_window() {
    let zone = Zone::start_with(ZoneOptions {
        duplicate_window: "1s".into(),
        ..Default::default()
    });
    let mes = zone.curl(PRODUCER);
    assert_eq!(
        mes.append(&append_json("late-1", "plant-a", "1")).json()["offset"],
        "1"
    );
    assert_eq!(
        mes.append(&append_json("late-2", "plant-a", "2")).json()["offset"],
        "2"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let dup = mes.append(&append_json("late-1", "plant-a", "1"));
    assert_eq!(
        dup.json(),
        serde_json::json!({"offset": "1", "duplicate": true})
    );
    let conflict = mes.append(&append_json("late-2", "plant-a", "3"));
    assert_eq!(conflict.code(), "already_exists");
    assert_eq!(
        zone.curl(PEER).fetch("to-idmz", 10).json()["highWatermark"],
        "2"
    );
}

#[test]
fn concurrent_identical_appends_get_one_offset() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let body = append_json("race-1", "plant-a", "{\"race\":true}");
    let replies: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| mes.append(&body).json()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let offsets: std::collections::BTreeSet<_> =
        replies.iter().map(|r| r["offset"].to_string()).collect();
    assert_eq!(
        offsets.len(),
        1,
        "all callers see the same offset: {replies:?}"
    );
    let originals = replies
        .iter()
        .filter(|r| r.get("duplicate").is_none())
        .count();
    assert_eq!(
        originals, 1,
        "exactly one caller wrote the fact: {replies:?}"
    );
    assert_eq!(
        zone.curl(PEER).fetch("to-idmz", 10).json()["highWatermark"],
        "1"
    );
}

#[test]
fn idempotency_survives_restarts() {
    let mut zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    assert_eq!(
        mes.append(&append_json("r-1", "plant-a", "true")).json()["offset"],
        "1"
    );
    zone.nats.restart();
    zone.restart_node();
    assert_eq!(
        mes.append(&append_json("r-1", "plant-a", "true")).json()["duplicate"],
        true
    );
    assert_eq!(
        mes.append(&append_json("r-1", "plant-a", "false")).code(),
        "already_exists"
    );
}

/// `append_json` with a category (`CATEGORY_AUDIT`, ...).
fn in_category(message_id: &str, object_json: &str, category: &str) -> String {
    let mut body: serde_json::Value =
        serde_json::from_str(&append_json(message_id, "plant-a", object_json)).expect("json");
    body["category"] = category.into();
    body.to_string()
}

/// Facts stored in each category stream, operational then audit.
fn stored(zone: &Zone) -> (u64, u64) {
    let url = zone.nats.url();
    (
        common::js::last_sequence(&url, "facts_operational"),
        common::js::last_sequence(&url, "facts_audit"),
    )
}

#[test]
fn the_key_is_the_nodes_across_categories() {
    // SPEC §2: the same message id appended to another category is the same fact (same content:
    // the original offset and category, as a duplicate) or a conflict (other content).
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let first = mes.append(&in_category("x-1", "{\"v\":1}", "CATEGORY_OPERATIONAL"));
    assert_eq!(first.json(), serde_json::json!({"offset": "1"}));

    let same = mes.append(&in_category("x-1", "{\"v\":1}", "CATEGORY_AUDIT"));
    assert_eq!(
        same.json(),
        serde_json::json!({"offset": "1", "duplicate": true, "category": "CATEGORY_OPERATIONAL"}),
        "the original offset and category"
    );
    let other = mes.append(&in_category("x-1", "{\"v\":2}", "CATEGORY_AUDIT"));
    assert_eq!(other.status, 409, "{:?}", other.json());
    assert_eq!(other.code(), "already_exists");
    let message = other.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("x-1") && message.contains("operational"),
        "{message}"
    );
    assert_eq!(stored(&zone), (1, 0), "nothing was written into audit");
}

#[test]
fn concurrent_appends_of_one_id_with_different_content_store_one() {
    // 16 callers, each with its own content, half of them into another category: exactly one is
    // stored, every other one is refused as a conflicting duplicate.
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let bodies: Vec<String> = (0..16)
        .map(|i| {
            let category = if i % 2 == 0 {
                "CATEGORY_OPERATIONAL"
            } else {
                "CATEGORY_AUDIT"
            };
            in_category("race-x", &format!("{{\"caller\":{i}}}"), category)
        })
        .collect();
    let replies: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let mes = &mes;
                s.spawn(move || {
                    let reply = mes.append(body);
                    (reply.status, reply.code())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let written = replies.iter().filter(|(status, _)| *status == 200).count();
    let conflicts = replies
        .iter()
        .filter(|(_, code)| code == "already_exists")
        .count();
    assert_eq!((written, conflicts), (1, 15), "{replies:?}");
    let (operational, audit) = stored(&zone);
    assert_eq!(
        operational + audit,
        1,
        "exactly one fact stored: {replies:?}"
    );
}
