//! Resume after a link that died silently (`make bench`; issue 10 item 6): a firewall between two
//! zones drops every packet without a FIN or an RST for a while, then lets new connections
//! through again (the flows it dropped stay dead: it lost their state). The figure is the time
//! from the heal until a fact appended during the outage is stored on the far side.
//!
//! One pull (plant → idmz) through a proxy the benchmark controls, default `idle_wait` (the pull
//! is inside a long poll when the link dies); anchor: a native JetStream mirror across domains
//! whose leafnode connection goes through the same kind of proxy, default nats-server settings.
//! Outages of `BENCH_OUTAGES` seconds (`20,60` unless set). Goal: under 2 s.
//!
//! Writes the report to `bench/results/resume-<unix time>.txt`. Everything is on 127.0.0.1.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod mirror;
#[path = "../tests/faults/proxy.rs"]
#[allow(dead_code)]
mod proxy;
mod results;

use common::{PRODUCER, Pki, Zone, ZoneOptions, append_json, free_port, js::last_sequence};
use proxy::Proxy;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// How long after the heal a run gives up.
const GIVE_UP: Duration = Duration::from_secs(180);

fn outages() -> Vec<u64> {
    std::env::var("BENCH_OUTAGES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![20, 60])
}

/// Waits until `read()` reaches `count`; the time it took, or `None` after [`GIVE_UP`].
fn time_until(count: u64, read: impl Fn() -> u64) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < GIVE_UP {
        if read() >= count {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One pull through a proxy that goes silent for `outage`: time from the heal to the fact.
fn bsfg_resume(outage: Duration) -> Option<Duration> {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        ..Default::default()
    });
    let link = Proxy::start(plant_port);
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"{}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\naccept_from_zones = [\"plant-a\"]\n",
            link.url()
        ),
        ..Default::default()
    });
    let producer = plant.curl(PRODUCER);
    let stored = || last_sequence(&idmz.nats.url(), "facts_operational");
    assert_eq!(
        producer
            .append(&append_json("before", "plant-a", "1"))
            .status,
        200
    );
    time_until(1, stored).expect("the first fact crosses");
    std::thread::sleep(Duration::from_millis(500));
    link.silence();
    assert_eq!(
        producer
            .append(&append_json("during", "plant-a", "2"))
            .status,
        200
    );
    std::thread::sleep(outage);
    assert_eq!(stored(), 1, "nothing crosses a silent link");
    link.heal();
    time_until(2, stored)
}

/// A native mirror across domains whose leafnode connection goes through a proxy that goes
/// silent for `outage`: time from the heal to the message.
fn mirror_resume(outage: Duration) -> Option<Duration> {
    let leaf = free_port();
    let link = Proxy::start(leaf);
    let domains = mirror::Domains::start(leaf, link.port, "");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let source = domains.hub().await;
        mirror::create_source(&source).await;
        let mut mirror = mirror::create_mirror(&domains.spoke().await).await;
        let publish = async |n: u64| {
            source
                .publish(format!("facts.operational.{n}"), "x".into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        };
        publish(1).await;
        let start = Instant::now();
        while mirror.info().await.map(|i| i.state.messages).unwrap_or(0) < 1 {
            assert!(start.elapsed() < GIVE_UP, "the mirror never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        link.silence();
        publish(2).await;
        tokio::time::sleep(outage).await;
        link.heal();
        let healed = Instant::now();
        while healed.elapsed() < GIVE_UP {
            if mirror.info().await.map(|i| i.state.messages).unwrap_or(0) >= 2 {
                return Some(healed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("> {} s", GIVE_UP.as_secs()),
        |d| format!("{:.2} s", d.as_secs_f64()),
    )
}

fn main() {
    // `cargo test --all-targets` runs benchmark targets too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `make bench` (cargo bench); skipped under cargo test");
        return;
    }
    let mut report = String::from(
        "resume after a silent drop (bench/resume.rs): time from the heal until a fact appended during the outage is stored on the far side; goal < 2 s\n",
    );
    for outage in outages() {
        let outage = Duration::from_secs(outage);
        eprintln!("silent outage of {outage:?}: one pull...");
        let pull = bsfg_resume(outage);
        eprintln!("  {}; native mirror (anchor)...", seconds(pull));
        let mirror = mirror_resume(outage);
        eprintln!("  {}", seconds(mirror));
        let ratio = match (pull, mirror) {
            (Some(p), Some(m)) => format!("{:.3}", p.as_secs_f64() / m.as_secs_f64()),
            _ => "n/a".into(),
        };
        report.push_str(&format!(
            "outage {:>3} s: pull resumed after {:>9}; native mirror after {:>9}; ratio pull/mirror {ratio}\n",
            outage.as_secs(),
            seconds(pull),
            seconds(mirror),
        ));
    }
    results::write("resume", &report);
}
