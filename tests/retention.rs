//! Backpressure and retention (SPEC §3, §4): a safety-critical category refuses new facts from
//! 80 % fill and never evicts; facts evicted before they were confirmed are reported as
//! `data_loss` naming the offsets, never skipped — until an operator's `bsfg skip-gap` records an
//! audit fact and moves the cursor past them.

mod common;

use bsfg::proto::StoredFact;
use common::{PRODUCER, Zone, ZoneOptions, clients::offsets, js::stream_messages};
use prost::Message;
use std::{process::Command, time::Duration};

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

#[test]
fn a_retry_of_a_stored_fact_is_a_duplicate_even_when_the_category_is_full() {
    // SPEC §2: the duplicate check comes before backpressure, so a pull retrying into a full
    // safety-critical category does not wedge.
    let zone = Zone::start_with(ZoneOptions {
        extra_toml: "[categories.audit]\nsafety_critical = true\nmax_bytes = 20000\n".into(),
        ..Default::default()
    });
    let mes = zone.curl(PRODUCER);
    let mut accepted = 0;
    loop {
        let reply = mes.append(&fact(&format!("audit-{accepted}"), "CATEGORY_AUDIT", 400));
        if reply.status != 200 {
            assert_eq!(reply.code(), "resource_exhausted");
            break;
        }
        accepted += 1;
        assert!(accepted < 100, "the category never filled");
    }
    for (i, id) in ["audit-0", &format!("audit-{}", accepted - 1)]
        .iter()
        .enumerate()
    {
        let retry = mes.append(&fact(id, "CATEGORY_AUDIT", 400));
        assert_eq!(retry.status, 200, "retry of {id}: {:?}", retry.json());
        assert_eq!(retry.json()["duplicate"], true);
        let expected = if i == 0 { 1 } else { accepted };
        assert_eq!(retry.json()["offset"], expected.to_string());
    }
    // A conflicting duplicate is still a conflict, not backpressure.
    assert_eq!(
        mes.append(&fact("audit-0", "CATEGORY_AUDIT", 401)).code(),
        "already_exists"
    );
    // A new fact is still refused.
    assert_eq!(
        mes.append(&fact("audit-new", "CATEGORY_AUDIT", 400)).code(),
        "resource_exhausted"
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

/// A zone whose telemetry facts are evicted after one second, with a consumer `telemetry-out`
/// for the identity `historian`.
fn evicting_zone() -> Zone {
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
    zone
}

/// Appends telemetry facts `t-<i>` and waits until retention evicted them.
fn append_and_let_evict(zone: &Zone, ids: std::ops::RangeInclusive<u32>) {
    let mes = zone.curl(PRODUCER);
    for i in ids {
        assert_eq!(
            mes.append(&fact(&format!("t-{i}"), "CATEGORY_TELEMETRY", 10))
                .status,
            200
        );
    }
    std::thread::sleep(Duration::from_millis(3000));
}

#[test]
fn facts_evicted_before_confirmation_are_data_loss_not_skipped() {
    let zone = evicting_zone();
    append_and_let_evict(&zone, 1..=3);
    let historian = zone.curl("historian");
    let reply = historian.fetch("telemetry-out", 10);
    assert_eq!(reply.code(), "data_loss", "{:?}", reply.json());
    assert_eq!(reply.status, 500);
    let message = reply.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("offsets 1 to 3"),
        "the message names the missing offsets: {message}"
    );
}

/// `bsfg <args> --config <zone's config>`: (exit code, stdout, stderr).
fn bsfg(zone: &Zone, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_bsfg"))
        .args(args)
        .arg("--config")
        .arg(&zone.config_path)
        .output()
        .expect("run bsfg");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The facts of the zone's audit category, decoded.
fn audit_facts(zone: &Zone) -> Vec<StoredFact> {
    stream_messages(&zone.nats.url(), "facts_audit")
        .into_iter()
        .map(|(_, _, payload)| StoredFact::decode(payload.as_slice()).expect("a stored fact"))
        .collect()
}

/// `bsfg skip-gap` on `consumer` by operator alice for `reason`, with `extra` arguments.
fn skip_gap(zone: &Zone, consumer: &str, reason: &str, extra: &[&str]) -> (i32, String, String) {
    let args = [
        &[
            "skip-gap",
            "--consumer",
            consumer,
            "--operator",
            "alice",
            "--reason",
            reason,
        ][..],
        extra,
    ]
    .concat();
    bsfg(zone, &args)
}

#[test]
fn only_an_operator_moves_a_cursor_past_a_gap_and_it_is_audited() {
    let zone = evicting_zone();
    append_and_let_evict(&zone, 1..=3);
    let historian = zone.curl("historian");
    assert_eq!(historian.fetch("telemetry-out", 10).code(), "data_loss");

    // The operator sees the gap first: in bsfg status (exit 1), and in a dry run that changes
    // nothing.
    let (code, out, _) = bsfg(&zone, &["status"]);
    assert_eq!(code, 1, "a gap makes the zone unhealthy: {out}");
    assert!(out.contains("DATA LOSS: offsets 1 to 3 (3 facts)"), "{out}");
    let reason = "telemetry retention shortened during the outage, CHG-1042";
    let (code, out, err) = skip_gap(&zone, "telemetry-out", reason, &["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("offsets 1 to 3 (3 facts)"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(audit_facts(&zone).is_empty(), "a dry run records nothing");
    assert_eq!(historian.fetch("telemetry-out", 10).code(), "data_loss");

    // Refused with a blank reason, or for a consumer that is not declared.
    let (code, _, err) = skip_gap(&zone, "telemetry-out", " ", &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--reason is required"), "{err}");
    let (code, _, err) = skip_gap(&zone, "nope", reason, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("no consumer named \"nope\"") && err.contains("telemetry-out"),
        "{err}"
    );
    assert_eq!(historian.fetch("telemetry-out", 10).code(), "data_loss");

    // The skip itself, while the node serves: an audit fact first, then the cursor.
    let (code, out, err) = skip_gap(&zone, "telemetry-out", reason, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recorded audit fact bsfg.skip-gap/"), "{out}");
    assert!(out.contains("moved from 0 to 3"), "{out}");
    let audit = audit_facts(&zone);
    assert_eq!(audit.len(), 1);
    let envelope = audit[0].envelope.clone().unwrap_or_default();
    let recorded = audit[0].fact.clone().unwrap_or_default();
    assert_eq!(envelope.from_zone, zone.options.zone);
    assert_eq!(recorded.predicate, "gap_skipped");
    assert_eq!(
        recorded.subject,
        format!("consumer:{}/telemetry-out", zone.options.zone)
    );
    let object: serde_json::Value = serde_json::from_str(&recorded.object_json).expect("json");
    assert_eq!(object["from_offset"], 1);
    assert_eq!(object["to_offset"], 3);
    assert_eq!(object["missing_facts"], 3);
    assert_eq!(object["operator"], "alice");
    assert_eq!(object["reason"], reason);

    // The running node now serves from after the gap: an empty page, then a new fact, which is
    // confirmed as usual.
    let reply = historian.fetch("telemetry-out", 10);
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    assert_eq!(offsets(&reply), Vec::<u64>::new());
    let mes = zone.curl(PRODUCER);
    assert_eq!(
        mes.append(&fact("t-4", "CATEGORY_TELEMETRY", 10)).status,
        200
    );
    let reply = historian.fetch("telemetry-out", 10);
    assert_eq!(offsets(&reply), vec![4], "{:?}", reply.json());
    assert_eq!(historian.confirm("telemetry-out", 4).status, 200);

    // Nothing left to skip: a second run changes nothing and records nothing.
    let (code, out, err) = skip_gap(&zone, "telemetry-out", reason, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no gap"), "{out}");
    assert_eq!(audit_facts(&zone).len(), 1);
    let (code, out, _) = bsfg(&zone, &["status"]);
    assert!(!out.contains("DATA LOSS"), "{out}");
    assert_eq!(code, 0, "{out}");
}

/// `bsfg_evicted_unconfirmed_facts_total{consumer="<consumer>"}` as `GET /metrics` shows it.
fn evicted_counter(zone: &Zone, consumer: &str) -> Option<f64> {
    let reply = zone.curl(common::OPERATOR).request("/metrics", &[], None);
    let text = String::from_utf8_lossy(&reply.body).to_string();
    let series = format!("bsfg_evicted_unconfirmed_facts_total{{consumer=\"{consumer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn eviction_past_a_cursor_is_logged_and_counted_without_any_fetch() {
    // SPEC §3: retention never passes a consumer's cursor without a logged, counted warning —
    // noticed by the node's own periodic check, not at the next fetch (nobody fetches here).
    let zone = evicting_zone();
    let mes = zone.curl(PRODUCER);
    for i in 1..=3 {
        let reply = mes.append(&fact(&format!("t-{i}"), "CATEGORY_TELEMETRY", 10));
        assert_eq!(reply.status, 200);
    }
    let started = std::time::Instant::now();
    let mut counted = None;
    while started.elapsed() < Duration::from_secs(12) {
        counted = evicted_counter(&zone, "telemetry-out");
        if counted == Some(3.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        counted,
        Some(3.0),
        "3 unconfirmed facts evicted, counted within 12 s (after {:?})",
        started.elapsed()
    );
    let warning = "retention evicted facts a consumer had not confirmed";
    assert!(
        zone.node.wait_for_log(warning, Duration::from_secs(2)),
        "{}",
        zone.node.log()
    );
    // Once per event: later checks see the same gap and neither log nor count it again.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(evicted_counter(&zone, "telemetry-out"), Some(3.0));
    let logged = zone.node.log().matches(warning).count();
    assert_eq!(logged, 1, "{}", zone.node.log());
    // Consumers that lost nothing are reported at 0.
    assert_eq!(evicted_counter(&zone, "to-idmz"), Some(0.0));
}

/// Deletes messages of a stream by sequence (what `nats stream rmm` does).
fn delete_messages(zone: &Zone, stream: &str, sequences: &[u64]) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.expect("stream");
        for seq in sequences {
            stream.delete_message(*seq).await.expect("delete message");
        }
    })
}

#[test]
fn a_hole_in_the_middle_of_a_stream_is_data_loss_for_exactly_that_range() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    for i in 1..=8 {
        let reply = mes.append(&common::append_json(
            &format!("h-{i}"),
            "plant-a",
            &i.to_string(),
        ));
        assert_eq!(reply.status, 200);
    }
    delete_messages(&zone, "facts_operational", &[5, 6]);
    let peer = zone.curl(common::PEER);

    // The page ends before the hole.
    let page = peer.fetch("to-idmz", 10);
    assert_eq!(page.status, 200, "{:?}", page.json());
    assert_eq!(offsets(&page), vec![1, 2, 3, 4]);
    assert_eq!(peer.confirm("to-idmz", 5).code(), "failed_precondition");
    assert_eq!(peer.confirm("to-idmz", 4).json()["cursorAdvancedTo"], "4");

    // Right after the cursor: data_loss naming exactly the hole, every time.
    for _ in 0..2 {
        let reply = peer.fetch("to-idmz", 10);
        assert_eq!(reply.code(), "data_loss", "{:?}", reply.json());
        let message = reply.json()["message"].as_str().unwrap_or("").to_string();
        assert!(message.contains("offsets 5 to 6"), "{message}");
    }
    let (code, out, _) = bsfg(&zone, &["status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DATA LOSS: offsets 5 to 6 (2 facts)"), "{out}");

    // The operator's skip moves the cursor past the hole, and the rest is delivered.
    let (code, out, err) = skip_gap(&zone, "to-idmz", "messages 5-6 deleted by hand, CHG-7", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved from 4 to 6"), "{out}");
    let rest = peer.fetch("to-idmz", 10);
    assert_eq!(offsets(&rest), vec![7, 8], "{:?}", rest.json());
    assert_eq!(peer.confirm("to-idmz", 8).json()["cursorAdvancedTo"], "8");
    let (code, out, _) = bsfg(&zone, &["status"]);
    assert_eq!(code, 0, "{out}");
}
