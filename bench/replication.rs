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

use async_nats::jetstream::{self, stream};
use common::{
    PRODUCER, Pki, Zone, ZoneOptions, chain::start_chain, free_port, js::wait_for_count, producer,
};
use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

const FACTS: u64 = 20_000;

fn requests(n: u64, tag: &str) -> Vec<bsfg::proto::AppendFactRequest> {
    (0..n)
        .map(|i| {
            producer::fact(
                &format!("{tag}-{i}"),
                "plant-a",
                format!("{{\"line\":\"L2\",\"n\":{i},\"temp_c\":71.5}}"),
                "",
            )
        })
        .collect()
}

/// Facts/s of one pull catching up on `FACTS` preloaded facts.
fn catch_up(label: &str, nats_jetstream: &str, confirm_delay: &str) -> f64 {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    // A production-sized consumer: pages of 500 (the default max_page), max_ack_pending 1000.
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        max_page: 500,
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
    producer::append_all(mes, requests(FACTS, label), 32);
    eprintln!(
        "  preloaded {FACTS} facts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pull = format!(
        "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{plant_port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"bulk\"\ncategory = \"operational\"\npage_size = 500\nidle_wait = \"1s\"\n[replication]\nconfirm_delay = \"{confirm_delay}\"\n"
    );
    let started = Instant::now();
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: pull,
        nats_jetstream: nats_jetstream.into(),
        ..Default::default()
    });
    wait_for_count(
        &idmz.nats.url(),
        "facts_operational",
        FACTS,
        Duration::from_secs(600),
        label,
    );
    FACTS as f64 / started.elapsed().as_secs_f64()
}

fn nats(dir: &std::path::Path, conf: String) -> std::process::Child {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).expect("conf");
    Command::new(common::nats_server_binary())
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server")
}

/// Messages/s of a native JetStream mirror across domains catching up on `FACTS` messages.
fn native_mirror() -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, leaf) = (free_port(), free_port(), free_port());
    let mut hub = nats(
        &dir.path().join("a"),
        format!(
            "listen: 127.0.0.1:{a}\njetstream {{ store_dir: \"{}\", domain: plant }}\nleafnodes {{ listen: 127.0.0.1:{leaf} }}\n",
            dir.path().join("a/js").display()
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut spoke = nats(
        &dir.path().join("b"),
        format!(
            "listen: 127.0.0.1:{b}\njetstream {{ store_dir: \"{}\", domain: idmz }}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf}\" }} ] }}\n",
            dir.path().join("b/js").display()
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rate = runtime.block_on(async {
        let source = jetstream::new(
            async_nats::connect(format!("nats://127.0.0.1:{a}"))
                .await
                .expect("a"),
        );
        source
            .create_stream(stream::Config {
                name: "facts_operational".into(),
                subjects: vec!["facts.operational.>".into()],
                ..Default::default()
            })
            .await
            .expect("source stream");
        let payload = bytes::Bytes::from(vec![b'x'; 150]);
        let mut acks = Vec::new();
        for i in 0..FACTS {
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
        let target = jetstream::new(
            async_nats::connect(format!("nats://127.0.0.1:{b}"))
                .await
                .expect("b"),
        );
        let started = Instant::now();
        let mut mirror = target
            .create_stream(stream::Config {
                name: "mirror".into(),
                mirror: Some(stream::Source {
                    name: "facts_operational".into(),
                    external: Some(stream::External {
                        api_prefix: "$JS.plant.API".into(),
                        delivery_prefix: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("mirror stream");
        while mirror.info().await.map(|i| i.state.messages).unwrap_or(0) < FACTS {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "mirror did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        FACTS as f64 / started.elapsed().as_secs_f64()
    });
    let _ = hub.kill();
    let _ = spoke.kill();
    let _ = hub.wait();
    let _ = spoke.wait();
    rate
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
    eprintln!("replication catch-up, {FACTS} facts, receiver nats-server with default sync...");
    let default_sync = catch_up("default-sync", "", "0s");
    eprintln!("... with sync_interval: always");
    let sync_always = catch_up("sync-always", "sync_interval: always", "0s");
    eprintln!("... with sync_interval: 1s and confirms held back 1 s");
    let held_back = catch_up("held-back", "sync_interval: 1s", "1s");
    eprintln!("native JetStream mirror across domains (anchor)...");
    let mirror = native_mirror();
    eprintln!("lag at 1000 facts/s for 10 s through plant -> idmz -> enterprise...");
    let [hop1, hop2] = lag_at_rate(1000, 10);
    let report = format!(
        "replication benchmarks (bench/replication.rs), {FACTS} facts, 2 cores, loopback\n\
         catch-up, one pull, receiver default sync (2 min):     {default_sync:>9.0} facts/s  ratio to mirror {:.3}\n\
         catch-up, one pull, receiver sync_interval: always:   {sync_always:>9.0} facts/s  ratio to mirror {:.3}\n\
         catch-up, one pull, sync 1s + confirm held back 1 s:  {held_back:>9.0} facts/s  ratio to mirror {:.3}\n\
         anchor: native JetStream mirror across domains:      {mirror:>9.0} msgs/s\n\
         lag per hop at 1000 facts/s (store time to store time, ms): plant->idmz p50 {} p99 {} max {}; idmz->enterprise p50 {} p99 {} max {}  (target < 100 ms)\n",
        default_sync / mirror,
        sync_always / mirror,
        held_back / mirror,
        hop1.0,
        hop1.1,
        hop1.2,
        hop2.0,
        hop2.1,
        hop2.2,
    );
    print!("{report}");
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results"));
    let _ = std::fs::create_dir_all(&dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = dir.join(format!("replication-{stamp}.txt"));
    std::fs::write(&path, &report).expect("write results");
    eprintln!("written to {}", path.display());
}
