//! FetchFacts' long poll (issue 3): with `max_wait_ms`, a fetch that finds nothing after the
//! cursor is held open until a fact is appended — and answered with it at once — or until the
//! server's cap (`limits.max_wait`) ends it with an empty page. Still one bounded unary call.

mod common;

use common::{OPERATOR, PEER, PRODUCER, Zone, append_json, clients::offsets};
use std::time::{Duration, Instant};

fn long_fetch(
    zone: &Zone,
    consumer: &str,
    max_wait_ms: u64,
) -> (common::clients::HttpReply, Duration) {
    let started = Instant::now();
    let reply = zone.curl(PEER).post_json(
        "/bsfg.v1.BoundaryService/FetchFacts",
        &serde_json::json!({"consumerName": consumer, "limit": 10, "maxWaitMs": max_wait_ms})
            .to_string(),
    );
    (reply, started.elapsed())
}

#[test]
fn an_append_wakes_a_waiting_fetch_and_the_server_caps_the_wait() {
    // The test zone's `limits.max_wait` is 5 s.
    let zone = Zone::start();

    // Nothing to fetch: the call waits; an append 700 ms later answers it with that fact, long
    // before both the caller's 15 s and the server's 5 s.
    let (reply, waited) = std::thread::scope(|scope| {
        let fetch = scope.spawn(|| long_fetch(&zone, "to-idmz", 15_000));
        std::thread::sleep(Duration::from_millis(700));
        let appended = zone
            .curl(PRODUCER)
            .append(&append_json("wake-1", "plant-a", "1"));
        assert_eq!(
            appended.status,
            200,
            "{}",
            String::from_utf8_lossy(&appended.body)
        );
        fetch.join().expect("fetch thread")
    });
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        offsets(&reply),
        vec![1],
        "the page holds the fact that woke it"
    );
    assert!(
        waited >= Duration::from_millis(600),
        "the fetch answered after {waited:?}: it did not wait for the append"
    );
    assert!(
        waited < Duration::from_millis(4_500),
        "the fetch answered after {waited:?}: the append did not wake it before the 5 s cap"
    );

    // Confirmed: nothing after the cursor. A 60 s wait is cut to the server's 5 s and answered
    // with an empty page and the high watermark.
    assert_eq!(zone.curl(PEER).confirm("to-idmz", 1).status, 200);
    let (reply, waited) = long_fetch(&zone, "to-idmz", 60_000);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(offsets(&reply).is_empty(), "an empty page");
    assert_eq!(reply.json()["highWatermark"], "1");
    assert!(
        (Duration::from_millis(4_500)..Duration::from_secs(12)).contains(&waited),
        "the capped wait lasted {waited:?}, not the server's 5 s"
    );

    // Without max_wait_ms an empty page comes back at once.
    let (reply, waited) = long_fetch(&zone, "to-idmz", 0);
    assert!(offsets(&reply).is_empty());
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
}

#[test]
fn the_callers_timeout_bounds_the_call() {
    let mut zone = Zone::start();
    let fetch = serde_json::json!({"consumerName": "to-idmz", "limit": 10, "maxWaitMs": 10_000})
        .to_string();
    let (peer, mes) = (zone.curl(PEER), zone.curl(PRODUCER));
    let with_timeout = |caller: &common::clients::Curl, ms: &str, path: &str, body: &str| {
        let started = Instant::now();
        let reply = caller.request(
            path,
            &[
                "-H",
                "content-type: application/json",
                "-H",
                &format!("connect-timeout-ms: {ms}"),
            ],
            Some(body.as_bytes()),
        );
        (reply, started.elapsed())
    };

    // A long poll ends in time to answer before the caller's 1.5 s: an empty page, not an error.
    let (reply, took) = with_timeout(&peer, "1500", "/bsfg.v1.BoundaryService/FetchFacts", &fetch);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(offsets(&reply).is_empty());
    assert!(
        (Duration::from_millis(700)..Duration::from_millis(1_500)).contains(&took),
        "answered after {took:?}"
    );

    // JetStream gone: an append cannot finish; the caller gets deadline_exceeded at its 1 s
    // deadline instead of waiting for the store.
    zone.nats.process.kill();
    let (reply, took) = with_timeout(
        &mes,
        "1000",
        "/bsfg.v1.BoundaryService/AppendFact",
        &append_json("late-1", "plant-a", "1"),
    );
    assert_eq!(
        reply.status,
        504,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.code(), "deadline_exceeded");
    assert!(
        took < Duration::from_millis(3_000),
        "answered after {took:?}"
    );
}

/// Issue 8 item 2: operator reads never wait behind a long poll (SPEC §7), and neither does a
/// confirm on the same consumer.
#[test]
fn metrics_and_confirms_answer_while_a_long_poll_waits() {
    let zone = Zone::start();
    std::thread::scope(|scope| {
        // An idle consumer: the poll waits the server's whole cap (5 s here).
        let poll = scope.spawn(|| long_fetch(&zone, "to-idmz", 10_000));
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let metrics = zone.curl(OPERATOR).request("/metrics", &[], None);
        let took = started.elapsed();
        assert_eq!(metrics.status, 200, "{}", metrics.stderr);
        let text = String::from_utf8_lossy(&metrics.body).to_string();
        assert!(
            text.contains("bsfg_frontier_offset{consumer=\"to-idmz\"}"),
            "{text}"
        );
        assert!(
            took < Duration::from_millis(500),
            "GET /metrics took {took:?} behind a long poll"
        );
        let started = Instant::now();
        let confirm = zone.curl(PEER).confirm("to-idmz", 0);
        let took = started.elapsed();
        assert_eq!(confirm.status, 200, "{:?}", confirm.json());
        assert!(
            took < Duration::from_millis(500),
            "ConfirmReceipt took {took:?} behind a long poll"
        );
        let (reply, waited) = poll.join().expect("poll thread");
        assert_eq!(reply.status, 200);
        assert!(
            waited >= Duration::from_secs(4),
            "the poll really waited: {waited:?}"
        );
    });
}
