//! A link that dies silently (issue 10 item 6): a firewall between two zones starts dropping
//! every packet without a FIN or an RST, the usual way OT links die, while the pull is waiting in
//! a long poll; later it lets new connections through again, but the old flows stay dead (the
//! firewall lost their state). The pull must notice the dead connection by itself (HTTP/2 PING
//! with a timeout), keep trying to connect cheaply while the link is down (attempts that hang
//! are not waited out one after another), and move the facts appended meanwhile within seconds
//! of the heal, not after the long poll, keep-alive and backoff have run out.
//!
//! The figure for the issue's goal (resume within 2 s) is measured by `make bench`
//! (`bench/replication.rs`); this test holds the behaviour with room for a loaded machine.

mod common;
mod faults;

use common::{PRODUCER, Pki, Zone, ZoneOptions, append_json, free_port};
use faults::{STREAM, probe, proxy::Proxy, wait_for_count};
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

const TO_ENTERPRISE: &str = r#"
[[consumers]]
name = "to-enterprise"
category = "operational"
[[access]]
identity = "enterprise-bsfg"
fetch = ["to-enterprise"]
"#;

/// Generous against a loaded CI machine, far below what a pull that waits out its long poll
/// (10 s), its keep-alive and its backoff takes.
const RESUME_BOUND: Duration = Duration::from_secs(6);

#[test]
fn a_pull_resumes_within_seconds_after_a_link_that_died_silently_heals() {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let p_idmz = free_port();
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        extra_toml: TO_ENTERPRISE.into(),
        pki: Some(pki.clone()),
        port: Some(p_idmz),
        ..Default::default()
    });
    let proxy = Proxy::start(p_idmz);
    // The default long poll (10 s): the pull is inside one when the link dies.
    let enterprise = Zone::start_with(ZoneOptions {
        zone: "enterprise".into(),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-idmz\"\npeer_url = \"{}\"\npeer_identity = \"idmz-bsfg\"\nconsumer = \"to-enterprise\"\ncategory = \"operational\"\naccept_from_zones = [\"idmz\"]\n",
            proxy.url()
        ),
        pki: Some(pki.clone()),
        peer_fetch: vec![],
        ..Default::default()
    });
    let tail = |log: String| {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let diagnostics = || {
        format!(
            "enterprise node:\n{}\nidmz node:\n{}",
            tail(enterprise.node.log()),
            tail(idmz.node.log())
        )
    };
    let producer = idmz.curl(PRODUCER);
    assert_eq!(
        producer.append(&append_json("before", "idmz", "1")).status,
        200
    );
    wait_for_count(
        &enterprise.nats.url(),
        1,
        Duration::from_secs(20),
        "before the drop",
        diagnostics,
    );
    // Let the pull settle into its next long poll, then the link dies.
    std::thread::sleep(Duration::from_millis(500));
    proxy.silence();
    let silenced_at = Instant::now();
    assert_eq!(
        producer.append(&append_json("during", "idmz", "2")).status,
        200
    );
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        probe::last_sequence(&enterprise.nats.url(), STREAM),
        Some(1),
        "nothing crosses a silent link"
    );
    proxy.heal();
    let healed_at = Instant::now();
    wait_for_count(
        &enterprise.nats.url(),
        2,
        Duration::from_secs(60),
        "after the heal",
        diagnostics,
    );
    let resumed = healed_at.elapsed();
    let silenced = proxy.stats().silenced.load(Ordering::SeqCst);
    println!(
        "silent for {:?}; {silenced} connection(s) silenced (live or attempted); the fact appended meanwhile arrived {resumed:?} after the heal",
        healed_at - silenced_at
    );
    assert!(
        resumed < RESUME_BOUND,
        "the pull took {resumed:?} after the heal (bound {RESUME_BOUND:?})\n{}",
        diagnostics()
    );
    assert!(
        silenced >= 2,
        "the live connection and at least one attempt made while silent went into the void ({silenced})"
    );
}
