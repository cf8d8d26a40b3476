//! Bounded resources (`[limits]`): thousands of idle TLS connections plus slow-header and
//! slow-body clients do not lock out a producer or a pull (the node runs with 1 024 file
//! descriptors, as a unit without `LimitNOFILE=` would), and request bodies held by one HTTP/2
//! connection cannot take more than the node-wide body budget.

mod common;

use common::observe::metrics;

use common::{OPERATOR, PRODUCER, STRANGER, Zone, ZoneOptions, append_json, h2};
use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

const IDLE_CONNECTIONS: usize = 2000;
const RAW_TCP_CONNECTIONS: usize = 100;

fn gauge(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Raises this test process's own RLIMIT_NOFILE to its hard limit (thousands of sockets).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Slow-header and slow-body HTTP/1.1 clients over mutual TLS; prints how each one ended.
const SLOW_CLIENTS: &str = r#"
import socket, ssl, sys, threading, time
port, ca, cert, key, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
results = []
def tls():
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30))
def answered(s):
    s.settimeout(0.01)
    try:
        return s.recv(4096) is not None
    except socket.timeout:
        return False
    finally:
        s.settimeout(30)
def trickle(kind, head, chunk):
    try:
        s = tls()
    except Exception as e:
        results.append("%s no-connection %s" % (kind, e)); return
    started = time.monotonic()
    try:
        s.sendall(head)
        while time.monotonic() - started < 20:
            s.sendall(chunk)
            if answered(s):
                break
            time.sleep(0.2)
        else:
            results.append("%s open" % kind); return
    except (OSError, ssl.SSLError):
        pass
    results.append("%s cut %.1f" % (kind, time.monotonic() - started))
header = (b"POST /bsfg.v1.BoundaryService/AppendFact HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", b"a")
body = (b"POST /bsfg.v1.BoundaryService/AppendFact HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: 500000\r\n\r\n",
        b"\0" * 1024)
threads = [threading.Thread(target=trickle, args=("header",) + header) for _ in range(n)]
threads += [threading.Thread(target=trickle, args=("body",) + body) for _ in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(results), flush=True)
"#;

/// Opens `IDLE_CONNECTIONS` mutual-TLS connections (handshake done, then silence) and
/// `RAW_TCP_CONNECTIONS` bare TCP connections that never start a handshake; holds them all until
/// `stop`. Returns how many handshakes completed.
fn idle_flood(
    port: u16,
    ca: &std::path::Path,
    pki_dir: &std::path::Path,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> usize {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (ca, cert, key) = (
        ca.to_path_buf(),
        pki_dir.join(format!("{STRANGER}.pem")),
        pki_dir.join(format!("{STRANGER}.key")),
    );
    runtime.block_on(async move {
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut raw = Vec::new();
        for _ in 0..RAW_TCP_CONNECTIONS {
            if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                raw.push(s);
            }
        }
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for _ in 0..IDLE_CONNECTIONS {
            let permit = gate.clone().acquire_owned().await.expect("gate");
            let (ca, cert, key, held, opened) = (
                ca.clone(),
                cert.clone(),
                key.clone(),
                held.clone(),
                opened.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let connected = tokio::time::timeout(
                    Duration::from_secs(3),
                    h2::handshake::<http_body_util::Empty<bytes::Bytes>>(port, &ca, &cert, &key),
                )
                .await;
                if let Ok(Ok(sender)) = connected {
                    opened.fetch_add(1, Ordering::SeqCst);
                    held.lock().expect("held").push(sender);
                }
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let done = opened.load(Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(raw);
        done
    })
}

#[test]
fn idle_and_slow_clients_do_not_lock_out_producers_and_pulls() {
    raise_fd_limit();
    let plant = Zone::start_with(ZoneOptions {
        node_wrapper: vec!["prlimit".into(), "--nofile=1024:1024".into()],
        ..Default::default()
    });
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(plant.pki.clone()),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\nidle_wait = \"1s\"\n",
            plant.port
        ),
        ..Default::default()
    });
    let producer = plant.curl(PRODUCER).with_args(&["--max-time", "5"]);
    let pulled = |n: usize| {
        let series = "bsfg_replication_facts_total{pull=\"from-plant\"}";
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if gauge(&metrics(&idmz), series) as usize >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert_eq!(
        producer.append(&append_json("l-0", "plant-a", "0")).status,
        200
    );
    assert!(pulled(1), "baseline pull");

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        let target = FloodTarget::of(&plant);
        std::thread::spawn(move || target.run(stop, opened))
    };
    let slow = Command::new(std::env::var("BSFG_PY").unwrap_or_else(|_| "python3".into()))
        .arg("-c")
        .arg(SLOW_CLIENTS)
        .arg(plant.port.to_string())
        .arg(&plant.pki.ca_path)
        .arg(plant.pki.dir.join(format!("{PRODUCER}.pem")))
        .arg(plant.pki.dir.join(format!("{PRODUCER}.key")))
        .arg("10")
        .stdout(Stdio::piped())
        .spawn()
        .expect("slow clients");

    // While the flood runs (and for a while after), a producer appends every 300 ms and each
    // append must be served.
    let started = Instant::now();
    let mut appended = 1;
    let mut failures = Vec::new();
    while started.elapsed() < Duration::from_secs(12) || opened.load(Ordering::SeqCst) == 0 {
        let reply = producer.append(&append_json(&format!("l-{appended}"), "plant-a", "1"));
        if reply.status == 200 {
            appended += 1;
        } else {
            failures.push(format!(
                "after {:.1} s with {} idle connections open: status {} curl exit {} {}",
                started.elapsed().as_secs_f64(),
                opened.load(Ordering::SeqCst),
                reply.status,
                reply.curl_exit,
                reply.stderr.trim()
            ));
        }
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let during = metrics(&plant);
    assert!(
        failures.is_empty(),
        "the producer was refused {} times ({} served):\n{}",
        failures.len(),
        appended - 1,
        failures.join("\n")
    );
    assert!(
        pulled(appended),
        "the pull fell behind: {appended} appended\n{}",
        metrics(&idmz)
    );
    stop.store(true, Ordering::SeqCst);
    let handshakes = flood.join().expect("flood");
    let slow = slow.wait_with_output().expect("slow clients");
    let slow = String::from_utf8_lossy(&slow.stdout);
    for line in slow.lines() {
        let seconds: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::MAX);
        assert!(
            line.contains(" cut ") && seconds < 8.0,
            "a slow client was not cut within the header/body timeout: {line}\n{slow}"
        );
    }
    assert_eq!(slow.lines().count(), 20, "{slow}");
    assert!(
        handshakes >= IDLE_CONNECTIONS * 9 / 10,
        "{handshakes} of {IDLE_CONNECTIONS} idle connections completed their handshake: older idle ones make room"
    );
    assert!(
        gauge(&during, "bsfg_connections_evicted_total") > 0.0,
        "{during}"
    );
    assert!(gauge(&during, "bsfg_connections_open") <= 512.0, "{during}");
}

/// The paths and port the flood needs, so it can run on its own thread.
struct FloodTarget {
    port: u16,
    ca: std::path::PathBuf,
    pki_dir: std::path::PathBuf,
}

impl FloodTarget {
    fn of(zone: &Zone) -> Self {
        FloodTarget {
            port: zone.port,
            ca: zone.pki.ca_path.clone(),
            pki_dir: zone.pki.dir.clone(),
        }
    }

    fn run(self, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) -> usize {
        idle_flood(self.port, &self.ca, &self.pki_dir, stop, opened)
    }
}

#[test]
fn request_bodies_held_by_one_connection_cannot_pass_the_node_budget() {
    bodies_held_past_the_budget(&[
        ("content-type", "application/proto"),
        ("connect-protocol-version", "1"),
    ]);
}

/// The same budget holds for gRPC bodies: the third is refused with grpc-status 8.
#[test]
fn grpc_request_bodies_share_the_node_budget() {
    bodies_held_past_the_budget(&[("content-type", "application/grpc"), ("te", "trailers")]);
}

/// Three bodies of 900 KB held open on one connection; the node's 2 MiB budget takes two.
fn bodies_held_past_the_budget(headers: &[(&'static str, &'static str)]) {
    let grpc = headers.contains(&("content-type", "application/grpc"));
    let zone = Zone::start_with(ZoneOptions {
        // max_request_bytes is 1 MiB in the test template: two bodies of 900 KB fit, a third not.
        limits_toml: "max_buffered_request_bytes = 2097152".into(),
        ..Default::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    type Chunks = futures::channel::mpsc::Receiver<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >;
    let outcome = runtime.block_on(async {
        let cert = zone.pki.dir.join(format!("{PRODUCER}.pem"));
        let key = zone.pki.dir.join(format!("{PRODUCER}.key"));
        let mut sender = h2::handshake::<http_body_util::StreamBody<Chunks>>(
            zone.port,
            &zone.pki.ca_path,
            &cert,
            &key,
        )
        .await
        .expect("HTTP/2");
        let mut streams = Vec::new();
        let mut held = Vec::new();
        for i in 0..3 {
            let (mut tx, rx) = futures::channel::mpsc::channel(64);
            let request = http::Request::post(format!(
                "https://127.0.0.1:{}/bsfg.v1.BoundaryService/AppendFact",
                zone.port
            ))
            .body(http_body_util::StreamBody::new(rx))
            .map(|mut r| {
                for (name, value) in headers {
                    r.headers_mut()
                        .insert(*name, http::HeaderValue::from_static(value));
                }
                r
            })
            .expect("request");
            sender.ready().await.expect("ready");
            let response = sender.send_request(request);
            streams.push(tokio::spawn(response));
            use futures::SinkExt;
            for _ in 0..(900 * 1024 / 16384) {
                if tx
                    .send(Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
                        0u8;
                        16384
                    ]))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            held.push(tx);
            if i < 2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        // The third stream must be refused at once, while the first two still hold the budget.
        let third = streams.pop().expect("third");
        let answer = tokio::time::timeout(Duration::from_millis(1500), third).await;
        let answer = match answer {
            Err(_) => Err("no answer within 1.5 s: the third body was buffered too".to_string()),
            Ok(Err(e)) => Err(format!("task: {e}")),
            Ok(Ok(Err(e))) => Err(format!("stream: {e}")),
            Ok(Ok(Ok(response))) => {
                use http_body_util::BodyExt;
                let status = response.status().as_u16();
                // gRPC refuses trailers-only: the status is in the headers.
                let grpc_status = ["grpc-status", "grpc-message"].map(|h| {
                    response
                        .headers()
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                });
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
                    .unwrap_or_default();
                Ok((status, format!("{body}{}", grpc_status.join(" "))))
            }
        };
        let during = metrics(&zone);
        let served = zone
            .curl(PRODUCER)
            .append(&append_json("b-1", "plant-a", "1"))
            .status;
        drop(held);
        (answer, during, served)
    });
    let (answer, during, served) = outcome;
    let (status, body) = answer.expect("the third body is refused");
    if grpc {
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("8 ") && body.contains("budget"), "{body}");
    } else {
        assert_eq!(status, 429, "{body}");
        assert!(
            body.contains("resource_exhausted") && body.contains("budget"),
            "{body}"
        );
    }
    assert!(
        during.contains("bsfg_requests_refused_total{reason=\"body_budget\"} 1"),
        "{during}"
    );
    assert!(
        gauge(&during, "bsfg_request_body_buffered_bytes") >= 1_800_000.0,
        "{during}"
    );
    assert_eq!(served, 200, "a small append still fits in the budget");
    // The held bodies time out (body_timeout 2 s) and give their bytes back.
    let start = Instant::now();
    while gauge(&metrics(&zone), "bsfg_request_body_buffered_bytes") > 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{}",
            metrics(&zone)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the parameters of the server's first HTTP/2 SETTINGS frame.
const SERVER_SETTINGS: &str = r#"
import socket, ssl, struct, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
data = b""
while len(data) < 9:
    data += sock.recv(4096)
length, kind = int.from_bytes(data[:3], "big"), data[3]
while len(data) < 9 + length:
    data += sock.recv(4096)
assert kind == 4, kind
names = {1: "header_table_size", 2: "enable_push", 3: "max_concurrent_streams", 4: "initial_window_size", 5: "max_frame_size", 6: "max_header_list_size"}
for i in range(9, 9 + length, 6):
    ident, value = struct.unpack(">HI", data[i:i + 6])
    print("%s=%d" % (names.get(ident, ident), value))
"#;

#[test]
fn streams_per_connection_are_advertised_and_bad_limits_are_named() {
    let zone = Zone::start_with(ZoneOptions {
        limits_toml: "max_streams_per_connection = 7".into(),
        // Too few for the default 512 connections: the node says so at start.
        node_wrapper: vec!["prlimit".into(), "--nofile=256:256".into()],
        ..Default::default()
    });
    assert!(
        zone.node.log_contains("open-files limit is below"),
        "{}",
        zone.node.log()
    );
    let output = Command::new(std::env::var("BSFG_PY").unwrap_or_else(|_| "python3".into()))
        .arg("-c")
        .arg(SERVER_SETTINGS)
        .arg(zone.port.to_string())
        .arg(&zone.pki.ca_path)
        .arg(zone.pki.dir.join(format!("{OPERATOR}.pem")))
        .arg(zone.pki.dir.join(format!("{OPERATOR}.key")))
        .output()
        .expect("python");
    let settings = String::from_utf8_lossy(&output.stdout);
    assert!(
        settings.contains("max_concurrent_streams=7"),
        "SETTINGS_MAX_CONCURRENT_STREAMS is the configured limit: {settings} {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let bad = zone.dir.path().join("bad.toml");
    let text = zone.config_text().replace(
        "max_streams_per_connection = 7",
        "max_streams_per_connection = 0\nmax_connections = 0\nmax_buffered_request_bytes = 10",
    );
    std::fs::write(&bad, text).expect("write");
    let output = Command::new(common::bsfg_binary())
        .arg("check-config")
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    for key in [
        "limits.max_streams_per_connection = 0",
        "limits.max_connections = 0",
        "limits.max_buffered_request_bytes = 10",
    ] {
        assert!(stderr.contains(key), "{key} named:\n{stderr}");
    }
}
