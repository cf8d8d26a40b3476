//! Idle connections (`limits.idle_timeout`): a client that completes the TLS handshake and the
//! HTTP/2 preface and then sends nothing must not hold its connection forever — HTTP/2 has no
//! header timeout — while a long call in flight is never cut by the idle timer.

mod common;

use common::{PEER, Zone, ZoneOptions, clients::offsets};
use std::{
    process::Command,
    time::{Duration, Instant},
};

/// Opens a mutual-TLS connection with ALPN `h2`, sends the HTTP/2 client preface and an empty
/// SETTINGS frame, then reads until the server closes the connection (or 15 s pass) and prints
/// the seconds it stayed open.
const IDLE_H2_CLIENT: &str = r#"
import socket, ssl, sys, time
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
started = time.monotonic()
sock.settimeout(15)
try:
    while sock.recv(4096):
        pass
except socket.timeout:
    print("open", flush=True)
    sys.exit(0)
except (ConnectionResetError, ssl.SSLError):
    pass
print("closed %.2f" % (time.monotonic() - started), flush=True)
"#;

fn python() -> String {
    std::env::var("BSFG_PY").unwrap_or_else(|_| "python3".into())
}

#[test]
fn an_idle_http2_connection_is_closed_and_a_long_call_is_not() {
    let zone = Zone::start_with(ZoneOptions {
        limits_toml: "idle_timeout = \"2s\"".into(),
        ..Default::default()
    });
    let files = |ext: &str| zone.pki.dir.join(format!("{PEER}.{ext}"));
    let output = Command::new(python())
        .arg("-c")
        .arg(IDLE_H2_CLIENT)
        .arg(zone.port.to_string())
        .arg(&zone.pki.ca_path)
        .arg(files("pem"))
        .arg(files("key"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seconds: f64 = stdout
        .trim()
        .strip_prefix("closed ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the idle HTTP/2 connection stayed open: {stdout}"));
    assert!(
        (1.5..6.0).contains(&seconds),
        "closed after {seconds} s, not after the 2 s idle timeout"
    );

    // A long poll of 4 s over HTTP/2 is a call in flight: the 2 s idle timer leaves it alone.
    let started = Instant::now();
    let reply = zone.curl(PEER).with_args(&["--http2"]).post_json(
        "/bsfg.v1.BoundaryService/FetchFacts",
        &serde_json::json!({"consumerName": "to-idmz", "limit": 10, "maxWaitMs": 4000}).to_string(),
    );
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(offsets(&reply).is_empty());
    assert!(
        took >= Duration::from_millis(3_500),
        "the long poll ended after {took:?}"
    );
}
