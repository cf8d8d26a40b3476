//! Backpressure and retention (SPEC §3, §4): a safety-critical category refuses new facts from
//! 80 % fill and never evicts; facts evicted before they were confirmed are reported as
//! `data_loss` naming the offsets, never skipped.

mod common;

use common::{PRODUCER, Zone, ZoneOptions};
use std::time::Duration;

fn fact(id: &str, category: &str, padding: usize) -> String {
    serde_json::json!({
        "envelope": {"messageId": id, "fromZone": "plant-a", "toZone": "enterprise", "producedAtUnixMs": "1700000000000"},
        "fact": {"subject": "asset:press-4", "predicate": "reading_taken", "objectJson": format!("\"{}\"", "x".repeat(padding))},
        "category": category,
    })
    .to_string()
}

#[test]
fn safety_critical_category_refuses_appends_from_80_percent_fill() {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: "[categories.audit]\nsafety_critical = true\nmax_bytes = 20000\n".into(),
        ..Default::default()
    });
    let mes = zone.curl(PRODUCER);
    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..100 {
        let reply = mes.append(&fact(&format!("audit-{i}"), "CATEGORY_AUDIT", 400));
        if reply.status == 200 {
            accepted += 1;
        } else {
            refusal = Some(reply);
            break;
        }
    }
    let refusal = refusal.expect("the category never refused an append");
    assert_eq!(refusal.status, 429);
    assert_eq!(refusal.code(), "resource_exhausted");
    let message = refusal.json()["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("audit"), "{message}");
    // Nothing was evicted and nothing more written: the stream still starts at offset 1 and
    // holds exactly the accepted facts.
    let (first, last, bytes) = stream_bounds(&zone, "facts_audit");
    assert_eq!((first, last), (1, accepted));
    // The refusal came from the 80 % rule, not from JetStream's own limit (which would only
    // refuse near 20000 bytes): the stream crossed 16000 bytes with the last accepted fact, and
    // not by more than that one fact (~560 bytes).
    let per_fact = bytes / accepted.max(1);
    assert!(
        (16_000..16_000 + per_fact).contains(&bytes),
        "refused at {bytes} bytes ({accepted} facts of ~{per_fact} bytes)"
    );
}

/// (first sequence, last sequence, bytes) of a stream.
fn stream_bounds(zone: &Zone, stream: &str) -> (u64, u64, u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        (
            info.state.first_sequence,
            info.state.last_sequence,
            info.state.bytes,
        )
    })
}

#[test]
fn facts_evicted_before_confirmation_are_data_loss_not_skipped() {
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: r#"
[categories.telemetry]
max_age = "1s"
[[consumers]]
name = "telemetry-out"
category = "telemetry"
[[access]]
identity = "historian"
fetch = ["telemetry-out"]
"#
        .into(),
        ..Default::default()
    });
    zone.issue_client("historian");
    let mes = zone.curl(PRODUCER);
    for i in 1..=3 {
        assert_eq!(
            mes.append(&fact(&format!("t-{i}"), "CATEGORY_TELEMETRY", 10))
                .status,
            200
        );
    }
    let historian = zone.curl("historian");
    std::thread::sleep(Duration::from_millis(3000));
    let reply = historian.fetch("telemetry-out", 10);
    assert_eq!(reply.code(), "data_loss", "{:?}", reply.json());
    assert_eq!(reply.status, 500);
    let message = reply.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("1..=3"),
        "the message names the missing offsets: {message}"
    );
}
