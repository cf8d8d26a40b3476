//! systemd integration, observed the way systemd observes it: a NOTIFY_SOCKET the test created
//! receives READY=1 with a STATUS= line once the node serves, WATCHDOG=1 pings from the serving
//! loop at half of WATCHDOG_USEC, and STOPPING=1 on SIGTERM — with the sandbox on.

mod common;

use common::{Zone, ZoneOptions};
use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut zone = Zone::start_with(ZoneOptions {
        node_env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Default::default()
    });
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    let ready = messages
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {messages:?}"));
    assert!(ready.contains("STATUS=serving zone plant-a"), "{ready}");
    let pings = messages.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!(
        (10..=30).contains(&pings),
        "one ping per 200 ms over about 3-4 s expected, got {pings}: {messages:?}"
    );

    zone.node.signal("TERM");
    let start = Instant::now();
    let mut stopping = false;
    while start.elapsed() < Duration::from_secs(5) && !stopping {
        if let Ok(n) = socket.recv(&mut buffer) {
            stopping = String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = zone
        .node
        .wait_exit(Duration::from_secs(15))
        .expect("clean exit");
    assert!(status.success(), "{status:?}");
}
