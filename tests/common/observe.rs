//! What an operator reads: `/metrics`, one series of it, and `bsfg status`; and a poll that waits
//! for the node to get there.

use super::{OPERATOR, Zone};
use std::time::{Duration, Instant};

/// The operator's view of `/metrics`.
pub fn metrics(zone: &Zone) -> String {
    String::from_utf8_lossy(&zone.curl(OPERATOR).request("/metrics", &[], None).body).into_owned()
}

/// The value of one series (name with its labels, as printed) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Polls `check` every 100 ms until it holds; fails the test after `deadline`.
pub fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `bsfg status` for this zone's config: exit code and what it printed.
pub fn status(zone: &Zone) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bsfg"))
        .args(["status", "--config"])
        .arg(&zone.config_path)
        .output()
        .expect("bsfg status");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
