//! Which connections the node keeps (`limits.max_connections`). Every accepted socket takes a
//! slot before its TLS handshake; at the limit, the connection idle the longest (no call in
//! flight; a handshake not yet finished counts as idle since accept) is closed to make room, so
//! idle or slow clients can never lock out producers and pulls, whose connections are busy or
//! were busy last. Only when every connection has a call in flight is the new one refused.
//!
//! Counted: `bsfg_connections_open`, `bsfg_connections_evicted_total`,
//! `bsfg_connections_refused_total`. Limits: an evicted connection's calls are not in flight by
//! definition, so nothing is cut; a client that keeps reconnecting only evicts other idle
//! connections (its own among them).

use crate::ops::metrics::Metrics;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;

/// Calls in flight on one connection, and since when none is: what the idle timeout and the
/// eviction watch.
pub struct ConnectionActivity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// One call in flight; its end (or its future being dropped) makes the connection idle again.
pub struct CallInFlight(Arc<ConnectionActivity>);

impl Drop for CallInFlight {
    fn drop(&mut self) {
        *self.0.lock_idle_since() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnectionActivity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    fn lock_idle_since(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn call(self: &Arc<Self>) -> CallInFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        CallInFlight(self.clone())
    }

    /// Since when the connection has had no call in flight; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.lock_idle_since();
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(since)
    }

    /// Resolves once no call has been in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let quiet = *self.lock_idle_since();
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                match idle.checked_sub(quiet.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

struct Entry {
    activity: Arc<ConnectionActivity>,
    evict: Arc<Notify>,
}

/// The node's open connections.
pub struct ConnectionTable {
    max: usize,
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

/// A connection's slot; dropping it frees the slot.
pub struct Admitted {
    id: u64,
    table: Arc<ConnectionTable>,
    pub activity: Arc<ConnectionActivity>,
    evict: Arc<Notify>,
}

impl Admitted {
    /// Resolves when the table closes this connection to make room for a new one.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let open = {
            let mut entries = self.table.lock();
            entries.remove(&self.id);
            entries.len()
        };
        self.table.publish(open);
    }
}

impl ConnectionTable {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let table = Arc::new(ConnectionTable {
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            metrics,
        });
        table.publish(0);
        table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, open: usize) {
        self.metrics
            .set_gauge("bsfg_connections_open".into(), open as f64);
    }

    /// A slot for a new connection, evicting the longest-idle one at the limit; `None` (refused,
    /// counted) when every connection has a call in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let activity = ConnectionActivity::new();
        let evict = Arc::new(Notify::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let open = {
            let mut entries = self.lock();
            if entries.len() >= self.max {
                let victim = entries
                    .iter()
                    .filter_map(|(id, e)| e.activity.idle_since().map(|since| (since, *id)))
                    .min()
                    .map(|(_, id)| id);
                let Some(victim) = victim.and_then(|id| entries.remove(&id)) else {
                    drop(entries);
                    self.metrics
                        .add_counter("bsfg_connections_refused_total".into(), 1);
                    return None;
                };
                victim.evict.notify_one();
                self.metrics
                    .add_counter("bsfg_connections_evicted_total".into(), 1);
            }
            entries.insert(
                id,
                Entry {
                    activity: activity.clone(),
                    evict: evict.clone(),
                },
            );
            entries.len()
        };
        self.publish(open);
        Some(Admitted {
            id,
            table: self.clone(),
            activity,
            evict,
        })
    }
}

/// The soft `Max open files` limit of this process, read from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Warns when the process may not open `max_connections` connections plus what the node needs
/// besides (pulls, nats-server, files: 128 kept aside); call before the sandbox hides `/proc`.
pub fn warn_if_fd_limit_too_low(max_connections: usize) {
    let needed = max_connections as u64 + 128;
    if let Some(limit) = open_files_limit()
        && limit < needed
    {
        tracing::warn!(
            limit,
            needed,
            max_connections,
            "the open-files limit is below limits.max_connections + 128: raise LimitNOFILE= or lower max_connections, or connections will fail with EMFILE before the connection limit applies"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let metrics = Arc::new(Metrics::default());
        let table = ConnectionTable::new(2, metrics.clone());
        let oldest = table.admit().expect("first");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = table.admit().expect("second");
        let _call = busy.activity.call();
        let third = table.admit().expect("evicts the idle one");
        tokio::time::timeout(Duration::from_secs(1), oldest.evicted())
            .await
            .expect("the oldest idle connection is told to close");
        let _third_call = third.activity.call();
        assert!(table.admit().is_none(), "every connection is busy: refused");
        let text = metrics.render();
        assert!(text.contains("bsfg_connections_evicted_total 1"), "{text}");
        assert!(text.contains("bsfg_connections_refused_total 1"), "{text}");
        assert!(text.contains("bsfg_connections_open 2"), "{text}");
        assert!(open_files_limit().is_some_and(|n| n > 0));
        drop(oldest);
        assert!(
            metrics.render().contains("bsfg_connections_open 2"),
            "an evicted connection's slot was already freed"
        );
    }
}
