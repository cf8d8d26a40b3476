//! Counters and histograms the node exports as Prometheus text (SPEC §7). Plain atomics and
//! small maps behind a mutex: the label sets are bounded by config (methods, codes, consumers,
//! categories, failure reasons), never by caller input.

use std::{collections::BTreeMap, fmt::Write, sync::Mutex, time::Duration};

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    total: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.total += 1;
    }

    fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.total += other.total;
    }

    /// `NAME_bucket`, `NAME_sum` and `NAME_count` lines with `labels` (`a="x",` or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.total);
        let bare = labels.trim_end_matches(',');
        let _ = writeln!(
            out,
            "{name}_sum{{{bare}}} {}\n{name}_count{{{bare}}} {}",
            self.sum, self.total
        );
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (method, code) → latency
    latency: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    tls_failures: Mutex<BTreeMap<&'static str, u64>>,
    gauges: Mutex<BTreeMap<String, f64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// One finished RPC: its method, Connect code (`ok` on success) and duration.
    pub fn record_call(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        *lock(&self.requests).entry((method, code)).or_default() += 1;
        let mut latency = lock(&self.latency);
        latency
            .entry((method, code))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_tls_failure(&self, reason: &'static str) {
        *lock(&self.tls_failures).entry(reason).or_default() += 1;
    }

    /// Adds to a counter by its full name with labels (rendered with the gauges).
    pub fn add_counter(&self, series: String, n: u64) {
        *lock(&self.gauges).entry(series).or_default() += n as f64;
    }

    /// Sets a gauge by its full name with labels, e.g. `bsfg_frontier_offset{consumer="x"}`.
    pub fn set_gauge(&self, series: String, value: f64) {
        lock(&self.gauges).insert(series, value);
    }

    pub fn tls_failures(&self, reason: &str) -> u64 {
        lock(&self.tls_failures).get(reason).copied().unwrap_or(0)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = lock(&self.requests);
        let per_method = |method: &str| -> (u64, u64) {
            requests.iter().filter(|((m, _), _)| *m == method).fold(
                (0, 0),
                |(all, failed), ((_, code), n)| {
                    (all + n, if *code == "ok" { failed } else { failed + n })
                },
            )
        };
        let (appends, append_failures) = per_method("AppendFact");
        let _ = writeln!(
            out,
            "# TYPE bsfg_append_requests_total counter\nbsfg_append_requests_total {appends}"
        );
        let _ = writeln!(
            out,
            "# TYPE bsfg_append_failures_total counter\nbsfg_append_failures_total {append_failures}"
        );
        let _ = writeln!(
            out,
            "# TYPE bsfg_fetch_requests_total counter\nbsfg_fetch_requests_total {}",
            per_method("FetchFacts").0
        );
        let _ = writeln!(
            out,
            "# TYPE bsfg_confirm_requests_total counter\nbsfg_confirm_requests_total {}",
            per_method("ConfirmReceipt").0
        );
        let _ = writeln!(out, "# TYPE bsfg_rpc_requests_total counter");
        for ((method, code), n) in requests.iter() {
            let _ = writeln!(
                out,
                "bsfg_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        drop(requests);
        let latency = lock(&self.latency);
        // Every AppendFact, whatever its code (SPEC §7's name), then per method and code.
        let mut appends = Histogram::default();
        for ((_, _), h) in latency.iter().filter(|((m, _), _)| *m == "AppendFact") {
            appends.add(h);
        }
        let _ = writeln!(out, "# TYPE bsfg_append_latency_seconds histogram");
        appends.render(&mut out, "bsfg_append_latency_seconds", "");
        let _ = writeln!(out, "# TYPE bsfg_rpc_latency_seconds histogram");
        for ((method, code), h) in latency.iter() {
            h.render(
                &mut out,
                "bsfg_rpc_latency_seconds",
                &format!("method=\"{method}\",code=\"{code}\","),
            );
        }
        drop(latency);
        let _ = writeln!(out, "# TYPE bsfg_tls_handshake_failures_total counter");
        for (reason, n) in lock(&self.tls_failures).iter() {
            let _ = writeln!(
                out,
                "bsfg_tls_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (series, value) in lock(&self.gauges).iter() {
            let _ = writeln!(out, "{series} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record_call("AppendFact", "ok", Duration::from_millis(3));
        m.record_call("AppendFact", "invalid_argument", Duration::from_millis(1));
        m.record_tls_failure("unknown_ca");
        let text = m.render();
        assert!(text.contains("bsfg_append_requests_total 2"), "{text}");
        assert!(text.contains("bsfg_append_failures_total 1"), "{text}");
        assert!(
            text.contains("bsfg_append_latency_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bsfg_tls_handshake_failures_total{reason=\"unknown_ca\"} 1"),
            "{text}"
        );
        // Per method and code: the failed call is in its own series.
        assert!(
            text.contains(
                "bsfg_rpc_latency_seconds_bucket{method=\"AppendFact\",code=\"invalid_argument\",le=\"0.001\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("bsfg_rpc_latency_seconds_count{method=\"AppendFact\",code=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bsfg_append_latency_seconds_count{} 2"),
            "{text}"
        );
    }
}
