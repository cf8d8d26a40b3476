//! Lag tells the truth during an outage (SPEC §6, §7; issue 8 item 9). While the peer cannot be
//! reached, `bsfg_replication_peer_up{pull}` is 0, `bsfg_replication_lag_seconds{pull}` keeps
//! growing from the last successful exchange, `bsfg_replication_last_success_timestamp_seconds`
//! stays put, `bsfg status` shows the link down with its last success, and systemd's `STATUS=`
//! line is refreshed with the pulls up/down. When the peer is back, all of it recovers.

mod common;

use common::observe::{eventually, metric, metrics, status};

use common::{PRODUCER, Pki, Zone, ZoneOptions, append_json, free_port};
use std::{
    os::unix::net::UnixDatagram,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Every STATUS= line the node sent to its notify socket, collected by a thread.
fn collect_status_lines(socket: UnixDatagram) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buffer) {
                for line in String::from_utf8_lossy(&buffer[..n]).lines() {
                    if let Some(status) = line.strip_prefix("STATUS=") {
                        sink.lock()
                            .expect("lock")
                            .push((Instant::now(), status.to_string()));
                    }
                }
            }
            if Arc::strong_count(&sink) == 1 {
                return;
            }
        }
    });
    lines
}

#[test]
fn lag_grows_and_the_link_shows_down_while_the_peer_is_unreachable() {
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = free_port();
    let mut plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        ..Default::default()
    });
    let socket_path = estate.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let lines = collect_status_lines(socket);
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        node_env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{plant_port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\naccept_from_zones = [\"plant-a\"]\nidle_wait = \"1s\"\n"
        ),
        ..Default::default()
    });
    let mes = plant.curl(PRODUCER);
    assert_eq!(mes.append(&append_json("m-1", "plant-a", "1")).status, 200);
    let label = "{pull=\"from-plant\"}";
    let lag = |text: &str| metric(text, &format!("bsfg_replication_lag_seconds{label}"));
    let up = |text: &str| metric(text, &format!("bsfg_replication_peer_up{label}"));
    let success = |text: &str| {
        metric(
            text,
            &format!("bsfg_replication_last_success_timestamp_seconds{label}"),
        )
    };
    eventually("m-1 is replicated", Duration::from_secs(20), || {
        metric(&metrics(&idmz), &format!("bsfg_replication_cursor{label}")) == Some(1.0)
    });

    // The peer goes away.
    plant.node.kill();
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let text = metrics(&idmz);
    let lag_down = lag(&text).expect("lag seconds");
    assert!(
        lag_down >= 3.0,
        "lag froze during the outage: {lag_down} s after {:?} without the peer\n{text}",
        down_at.elapsed()
    );
    assert_eq!(up(&text), Some(0.0), "peer_up\n{text}");
    let last_success = success(&text).expect("last success timestamp");
    std::thread::sleep(Duration::from_secs(2));
    let text = metrics(&idmz);
    assert!(
        lag(&text).expect("lag") >= lag_down + 1.5,
        "lag keeps growing: {lag_down} then {:?}",
        lag(&text)
    );
    assert_eq!(success(&text), Some(last_success), "last success stays put");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        now - last_success >= 6.0,
        "last success {last_success} is before the outage (now {now})"
    );
    eventually(
        "bsfg status shows the link down",
        Duration::from_secs(5),
        || {
            let (code, text) = status(&idmz);
            code == 1 && text.contains("peer DOWN") && text.contains("last success")
        },
    );
    let seen = lines.lock().expect("lock").clone();
    let recent: Vec<&String> = seen
        .iter()
        .filter(|(at, _)| *at > down_at + Duration::from_secs(2))
        .map(|(_, s)| s)
        .collect();
    assert!(
        recent.iter().any(|s| s.contains("pulls 0 up, 1 down")),
        "STATUS= refreshed during the outage: {seen:?}"
    );

    // The peer is back.
    plant.node = plant.start_node();
    eventually("peer_up is 1 again", Duration::from_secs(20), || {
        let text = metrics(&idmz);
        up(&text) == Some(1.0) && lag(&text).is_some_and(|l| l < 1.0)
    });
    assert!(success(&metrics(&idmz)).expect("last success") > last_success);
    eventually("STATUS= shows the pull up", Duration::from_secs(10), || {
        lines
            .lock()
            .expect("lock")
            .last()
            .is_some_and(|(_, s)| s.contains("pulls 1 up, 0 down"))
    });
    eventually(
        "bsfg status shows the link up",
        Duration::from_secs(5),
        || {
            let (code, text) = status(&idmz);
            code == 0 && text.contains("peer up")
        },
    );
}
