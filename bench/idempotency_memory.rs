//! Measures what the node's idempotency mechanism costs nats-server: one subject per fact
//! (`facts.<category>.<kind>.<key>` published with `Nats-Expected-Last-Subject-Sequence: 0`)
//! against the same facts on one subject without the header (the anchor: a plain direct JetStream
//! publish). Reports ingest rate and nats-server resident memory after a restart, per million
//! facts, and writes them to `bench/results/`.
//!
//! Run with `make bench` (or `cargo bench --bench idempotency_memory`); `BENCH_FACTS` sets the
//! number of facts (default 1 000 000). Talks only to a nats-server it starts on 127.0.0.1.

mod results;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use sha2::{Digest, Sha256};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const WINDOW: usize = 1024;

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server() -> PathBuf {
    std::env::var_os("BSFG_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.tools/bin/nats-server"
            ))
        })
}

fn start(dir: &Path, port: u16) -> Server {
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        ),
    )
    .expect("write nats.conf");
    let child = Command::new(nats_server())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (run make setup)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Server { child }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// Publishes `n` facts; returns facts per second.
async fn publish(url: &str, n: u64, per_fact_subject: bool) -> f64 {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "facts_operational".into(),
        subjects: vec!["facts.operational.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .expect("stream");
    let payload = Bytes::from(vec![b'x'; 200]);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        let (subject, message) = if per_fact_subject {
            let key = hex::encode(&Sha256::digest(format!("message-{i}").as_bytes())[..16]);
            let m = PublishMessage::build()
                .payload(payload.clone())
                .header("Bsfg-Content-Hash", "0")
                .expected_last_subject_sequence(0);
            (format!("facts.operational.batch.{key}"), m)
        } else {
            (
                "facts.operational.batch".to_string(),
                PublishMessage::build().payload(payload.clone()),
            )
        };
        in_flight.push(std::future::IntoFuture::into_future(
            js.send_publish(subject, message).await.expect("publish"),
        ));
        if in_flight.len() >= WINDOW {
            in_flight.next().await.expect("ack").expect("stored");
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack.expect("stored");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

struct Run {
    rate: f64,
    rss_after_restart: u64,
}

fn measure(n: u64, per_fact_subject: bool) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("nats://127.0.0.1:{port}");
    let server = start(dir.path(), port);
    let rate = runtime.block_on(publish(&url, n, per_fact_subject));
    drop(server);
    // Restarted, nats-server rebuilds its per-subject index from disk: the steady-state cost.
    let server = start(dir.path(), port);
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect");
        let mut s = jetstream::new(client)
            .get_stream("facts_operational")
            .await
            .expect("stream");
        assert_eq!(
            s.info().await.expect("info").state.messages,
            n,
            "every fact recovered"
        );
    });
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_bytes(server.child.id());
    Run {
        rate,
        rss_after_restart: rss,
    }
}

fn main() {
    // `cargo test --all-targets` runs benchmark targets too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `make bench` (cargo bench); skipped under cargo test");
        return;
    }
    let n: u64 = std::env::var("BENCH_FACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    eprintln!("publishing {n} facts twice (per-fact subjects, then one subject)...");
    let ours = measure(n, true);
    let anchor = measure(n, false);
    let per_million =
        (ours.rss_after_restart as f64 - anchor.rss_after_restart as f64) * 1_000_000.0 / n as f64;
    let report = format!(
        "idempotency mechanism, {n} facts of 200 B on nats-server (bench/idempotency_memory.rs)\n\
         ingest, per-fact subject + expected-last-subject-seq 0: {:>10.0} facts/s\n\
         ingest, anchor: direct JetStream publish, one subject:  {:>10.0} facts/s\n\
         ratio (ours / anchor):                                  {:>10.2}\n\
         nats-server RSS after restart, per-fact subjects:       {:>10.1} MiB\n\
         nats-server RSS after restart, anchor:                  {:>10.1} MiB\n\
         extra memory per million retained facts:                {:>10.1} MiB ({:.0} B per fact)\n",
        ours.rate,
        anchor.rate,
        ours.rate / anchor.rate,
        ours.rss_after_restart as f64 / 1048576.0,
        anchor.rss_after_restart as f64 / 1048576.0,
        per_million / 1048576.0,
        per_million / 1_000_000.0,
    );
    results::write("idempotency_memory", &report);
}
