//! Replication benchmarks (`make bench`), each figure next to its anchor measured in the same run:
//!
//! 1. catch-up throughput of one pull (plant → idmz) over 20 000 preloaded facts, with the
//!    receiving nats-server on its default sync policy, with `sync_interval: always`, and with
//!    confirms held back one sync interval (`sync_interval: 1s`, `confirm_delay = "1s"`);
//!    anchor: a native JetStream mirror of the same number of messages between two nats-servers
//!    (leafnode, separate JetStream domains);
//! 2. steady-state lag per hop at 1 000 facts/s through plant → idmz → enterprise (JetStream's own
//!    store timestamps on each side; one machine, one clock); target: under 100 ms per hop.
//!
//! Writes the report to `bench/results/replication-<unix time>.txt`. Everything is on 127.0.0.1.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod mirror;
mod results;

use async_nats::jetstream;
use common::{
    PRODUCER, Pki, Zone, ZoneOptions, chain::start_chain, free_port, js::wait_for_count, producer,
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// Preloaded facts per catch-up (`BENCH_FACTS`, 200 000 unless set).
fn facts() -> u64 {
    std::env::var("BENCH_FACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Facts of about `FACT_BYTES` each as stored (envelope, fact, JSON object padded).
const FACT_BYTES: usize = 1024;

fn requests(n: u64, tag: &str) -> Vec<bsfg::proto::AppendFactRequest> {
    (0..n)
        .map(|i| {
            // Canonical JSON (RFC 8785): keys in order.
            let object = format!("{{\"line\":\"L2\",\"n\":{i},\"pad\":\"\",\"temp_c\":71.5}}");
            // Pad the object so the stored fact is about FACT_BYTES.
            let pad = "x".repeat(FACT_BYTES.saturating_sub(object.len() + 200));
            let object = object.replace("\"pad\":\"\"", &format!("\"pad\":\"{pad}\""));
            producer::fact(&format!("{tag}-{i}"), "plant-a", object, "")
        })
        .collect()
}

/// Messages/s at which `stream` on `url` was filled, by its own store timestamps (first to last
/// message): neither side's start-up is counted, for the pull as for the mirror.
async fn store_rate(js: &jetstream::Context, stream: &str) -> f64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    let state = s.info().await.expect("info").state.clone();
    let first = s
        .get_raw_message(state.first_sequence)
        .await
        .expect("first");
    let last = s.get_raw_message(state.last_sequence).await.expect("last");
    let seconds = (last.time - first.time).as_seconds_f64().max(1e-3);
    (state.last_sequence - state.first_sequence) as f64 / seconds
}

/// Facts/s of one pull catching up on `facts()` preloaded facts (receiver's store times).
/// Returns the rate and where the pull's time went (`fetch … s, append … s, confirm … s`).
fn catch_up(label: &str, nats_jetstream: &str, confirm_delay: &str, n: u64) -> (f64, String, f64) {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    // A production-sized consumer: pages of 500 (the default max_page), max_ack_pending 1000.
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        max_page: 500,
        // The product's default category size: 200 000 facts of 1 KiB fit.
        operational_max_bytes: 1024 * 1024 * 1024,
        extra_toml:
            "[[consumers]]\nname = \"bulk\"\ncategory = \"operational\"\nmax_ack_pending = 1000\n"
                .into(),
        peer_fetch: vec!["to-idmz".into(), "bulk".into()],
        ..Default::default()
    });
    let mes = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &pki.dir,
        &pki.ca_path,
        PRODUCER,
    );
    let started = Instant::now();
    producer::append_all(mes, requests(n, label), 32);
    eprintln!(
        "  preloaded {n} facts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pull = format!(
        "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{plant_port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"bulk\"\ncategory = \"operational\"\npage_size = 500\nidle_wait = \"1s\"\n[replication]\nconfirm_delay = \"{confirm_delay}\"\n"
    );
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: pull,
        nats_jetstream: nats_jetstream.into(),
        operational_max_bytes: 1024 * 1024 * 1024,
        ..Default::default()
    });
    let waiting = Instant::now();
    let deadline = Duration::from_secs(600);
    while common::js::last_sequence(&idmz.nats.url(), "facts_operational") < n {
        if waiting.elapsed() > deadline {
            let tail = |log: String| log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            panic!(
                "{label}: the pull did not catch up within 600 s\nidmz node (last lines, newest first):\n{}\nplant node:\n{}",
                tail(idmz.node.log()),
                tail(plant.node.log())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rate = runtime.block_on(async {
        let js = jetstream::new(
            async_nats::connect(idmz.nats.url())
                .await
                .expect("idmz nats"),
        );
        store_rate(&js, "facts_operational").await
    });
    // Where the pull's time went.
    let busy: Vec<String> = common::observe::metrics(&idmz)
        .lines()
        .filter(|l| l.starts_with("bsfg_replication_busy_microseconds_total"))
        .filter_map(|l| {
            let phase = l.split("phase=\"").nth(1)?.split('"').next()?;
            let micros: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some(format!("{phase} {:.1} s", micros / 1e6))
        })
        .collect();
    let busy = busy.join(", ");
    let rss = peak_rss_mib(idmz.node.pid());
    eprintln!("  {rate:.0} facts/s; the pull's time: {busy}; node peak RSS {rss:.1} MiB");
    (rate, busy, rss)
}

/// Peak resident set (VmHWM) of a running process, MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `pulls` pulls at once (one per category, `n / pulls` preloaded facts each, receiver default
/// sync): facts/s over all of them (first store time to last, across the categories) and the
/// receiving node's peak RSS.
fn parallel_catch_up(pulls: usize, n: u64) -> (f64, f64) {
    use bsfg::fact::Category;
    let categories = &Category::ALL[..pulls];
    let each = n / pulls as u64;
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    let consumers: String = categories
        .iter()
        .map(|c| {
            format!(
                "[[consumers]]\nname = \"bulk-{c}\"\ncategory = \"{c}\"\nmax_ack_pending = 1000\n",
                c = c.name()
            )
        })
        .collect();
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        max_page: 500,
        operational_max_bytes: 1024 * 1024 * 1024,
        extra_toml: consumers,
        peer_fetch: categories
            .iter()
            .map(|c| format!("bulk-{}", c.name()))
            .collect(),
        ..Default::default()
    });
    let mes = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &pki.dir,
        &pki.ca_path,
        PRODUCER,
    );
    let mut all = Vec::new();
    for category in categories {
        let mut batch = requests(each, &format!("par-{}", category.name()));
        for request in &mut batch {
            request.category = category.to_wire() as i32;
        }
        all.extend(batch);
    }
    producer::append_all(mes, all, 32);
    let pulls_toml: String = categories
        .iter()
        .map(|c| {
            format!(
                "[[pulls]]\nname = \"from-plant-{c}\"\npeer_url = \"https://127.0.0.1:{plant_port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"bulk-{c}\"\ncategory = \"{c}\"\npage_size = 500\nidle_wait = \"1s\"\n",
                c = c.name()
            )
        })
        .collect();
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: pulls_toml,
        operational_max_bytes: 1024 * 1024 * 1024,
        ..Default::default()
    });
    let waiting = Instant::now();
    for category in categories {
        while common::js::last_sequence(&idmz.nats.url(), &category.stream_name()) < each {
            assert!(
                waiting.elapsed() < Duration::from_secs(600),
                "{pulls} pulls did not catch up within 600 s\n{}",
                idmz.node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let rss = peak_rss_mib(idmz.node.pid());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rate = runtime.block_on(async {
        let js = jetstream::new(
            async_nats::connect(idmz.nats.url())
                .await
                .expect("idmz nats"),
        );
        let (mut first, mut last) = (i128::MAX, i128::MIN);
        for category in categories {
            let mut s = js.get_stream(category.stream_name()).await.expect("stream");
            let state = s.info().await.expect("info").state.clone();
            let at = async |seq| {
                s.get_raw_message(seq)
                    .await
                    .expect("stored")
                    .time
                    .unix_timestamp_nanos()
            };
            first = first.min(at(state.first_sequence).await);
            last = last.max(at(state.last_sequence).await);
        }
        (each * pulls as u64) as f64 / ((last - first) as f64 / 1e9).max(1e-3)
    });
    eprintln!("  {pulls} pulls: {rate:.0} facts/s; node peak RSS {rss:.1} MiB");
    (rate, rss)
}

/// Messages/s of a native JetStream mirror across domains catching up on `facts()` messages of
/// `FACT_BYTES` (the mirror's store times).
/// `receiver_jetstream`: extra lines in the receiving server's `jetstream {}` block.
fn native_mirror(receiver_jetstream: &str) -> f64 {
    let leaf = free_port();
    let domains = mirror::Domains::start(leaf, leaf, receiver_jetstream);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let source = domains.hub().await;
        mirror::create_source(&source).await;
        let payload = bytes::Bytes::from(vec![b'x'; FACT_BYTES]);
        let mut acks = Vec::new();
        let n = facts();
        for i in 0..n {
            acks.push(
                source
                    .publish(format!("facts.operational.batch.{i}"), payload.clone())
                    .await
                    .expect("publish"),
            );
            if acks.len() >= 512 {
                for ack in acks.drain(..) {
                    ack.await.expect("ack");
                }
            }
        }
        for ack in acks.drain(..) {
            ack.await.expect("ack");
        }
        let target = domains.spoke().await;
        let started = Instant::now();
        let mut mirror = mirror::create_mirror(&target).await;
        while mirror.info().await.map(|i| i.state.messages).unwrap_or(0) < n {
            assert!(
                started.elapsed() < Duration::from_secs(1200),
                "mirror did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store_rate(&target, "mirror").await
    })
}

/// Store timestamps (ms) of every message of a stream, by sequence.
fn store_times(url: &str, stream: &str) -> Vec<i128> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
        let mut s = js.get_stream(stream).await.expect("stream");
        let last = s.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = s.direct_get(seq).await.expect("get");
            out.push(m.time.unix_timestamp_nanos() / 1_000_000);
        }
        out
    })
}

fn percentile(sorted: &[i128], p: f64) -> i128 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Per-hop lag (p50, p99, max in ms) at `rate` facts/s for `seconds`.
fn lag_at_rate(rate: u64, seconds: u64) -> [(i128, i128, i128); 2] {
    let chain = start_chain("");
    let plant = &chain.plant;
    let mes = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &plant.pki.dir,
        &plant.pki.ca_path,
        PRODUCER,
    );
    let total = rate * seconds;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mes = Arc::new(mes);
        let mut tasks = Vec::new();
        for (i, request) in requests(total, "lag").into_iter().enumerate() {
            tick.tick().await;
            let mes = mes.clone();
            tasks.push(tokio::spawn(async move {
                let reply: Result<bsfg::proto::AppendFactResponse, _> = mes
                    .unary(
                        "/bsfg.v1.BoundaryService/AppendFact",
                        &request,
                        Duration::from_secs(30),
                    )
                    .await;
                reply.unwrap_or_else(|e| panic!("append {i}: {e}"));
            }));
        }
        for t in tasks {
            t.await.expect("append task");
        }
    });
    wait_for_count(
        &chain.enterprise.nats.url(),
        "facts_operational",
        total,
        Duration::from_secs(120),
        "lag run",
    );
    let times = [
        store_times(&plant.nats.url(), "facts_operational"),
        store_times(&chain.idmz.nats.url(), "facts_operational"),
        store_times(&chain.enterprise.nats.url(), "facts_operational"),
    ];
    let hop = |from: &[i128], to: &[i128]| {
        let mut lags: Vec<i128> = from.iter().zip(to).map(|(a, b)| b - a).collect();
        lags.sort_unstable();
        (
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            *lags.last().unwrap_or(&0),
        )
    };
    [hop(&times[0], &times[1]), hop(&times[1], &times[2])]
}

fn main() {
    // `cargo test --all-targets` runs benchmark targets too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `make bench` (cargo bench); skipped under cargo test");
        return;
    }
    let n = facts();
    eprintln!(
        "replication catch-up, {n} facts of ~{FACT_BYTES} B, receiver nats-server with default sync..."
    );
    let (default_sync, default_busy, one_pull_rss) = catch_up("default-sync", "", "0s", n);
    eprintln!("... with sync_interval: always");
    let (sync_always, always_busy, _) = catch_up("sync-always", "sync_interval: always", "0s", n);
    eprintln!("... with sync_interval: 1s and confirms held back 1 s");
    // One page a second by design: a tenth of the facts tells the same.
    let (held_back, _, _) = catch_up("held-back", "sync_interval: 1s", "1s", n / 10);
    eprintln!("... 4 pulls at once, one per category, {n} facts in all");
    let (four_pulls, four_pulls_rss) = parallel_catch_up(4, n);
    eprintln!("native JetStream mirror across domains (anchor)...");
    let mirror = native_mirror("");
    eprintln!("native JetStream mirror, receiver with sync_interval: always (anchor)...");
    let mirror_always = native_mirror("sync_interval: always");
    eprintln!("lag at 1000 facts/s for 10 s through plant -> idmz -> enterprise...");
    let [hop1, hop2] = lag_at_rate(1000, 10);
    let report = format!(
        "replication benchmarks (bench/replication.rs), {n} facts of ~{FACT_BYTES} B, rates by the receiver's store times, 2 cores, loopback\n\
         catch-up, one pull, receiver default sync (2 min):     {default_sync:>9.0} facts/s  ratio to mirror {:.3}\n\
         \x20 the pull's time: {default_busy}; receiving node's peak RSS {one_pull_rss:.1} MiB\n\
         catch-up, one pull, receiver sync_interval: always:   {sync_always:>9.0} facts/s  ratio to mirror (same sync) {:.3}\n\
         \x20 the pull's time: {always_busy}\n\
         catch-up, one pull, sync 1s + confirm held back 1 s:  {held_back:>9.0} facts/s  ratio to mirror {:.3}\n\
         catch-up, 4 pulls at once (one per category):        {four_pulls:>9.0} facts/s  ratio to mirror {:.3}; receiving node's peak RSS {four_pulls_rss:.1} MiB (goal <= 16)\n\
         anchor: native JetStream mirror across domains:      {mirror:>9.0} msgs/s\n\
         anchor: the same mirror, receiver sync_interval: always: {mirror_always:>5.0} msgs/s\n\
         lag per hop at 1000 facts/s (store time to store time, ms): plant->idmz p50 {} p99 {} max {}; idmz->enterprise p50 {} p99 {} max {}  (target < 100 ms)\n",
        default_sync / mirror,
        sync_always / mirror_always,
        held_back / mirror,
        four_pulls / mirror,
        hop1.0,
        hop1.1,
        hop1.2,
        hop2.0,
        hop2.1,
        hop2.2,
    );
    results::write("replication", &report);
}
