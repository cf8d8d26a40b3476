//! systemd integration through sd_notify: READY=1 once serving, STATUS= one-line summaries,
//! WATCHDOG=1 from the serving loop (so a hung loop stops the pings and systemd restarts the
//! node), STOPPING=1 on shutdown. Without `NOTIFY_SOCKET` every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn ready(text: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half of systemd's `WatchdogSec=` when it is set for this process, else `None`. As in
/// libsystemd, `WATCHDOG_PID` is optional, but when present it must be this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
