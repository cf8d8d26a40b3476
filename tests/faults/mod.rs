//! Helpers for the fault-injection tests: a seeded schedule ([`prng`]), a producer that retries
//! through outages ([`feed`]), a cutting TCP proxy ([`proxy`]), fallible JetStream reads
//! ([`probe`]), and the exactly-once / in-order / byte-identical checks below.
//!
//! Shared by several test crates (and the benchmarks), each using a part.
#![allow(dead_code)]

pub mod feed;
pub mod prng;
pub mod probe;
pub mod proxy;

use crate::common::{Zone, js::stream_messages, producer};
use bsfg::proto::{GetObjectRequest, GetObjectResponse, StoredFact};
use sha2::{Digest, Sha256};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

pub const STREAM: &str = "facts_operational";

/// A zone's node log across restarts (a restart replaces the [`crate::common::Process`]).
#[derive(Default)]
pub struct NodeLogs {
    earlier: BTreeMap<String, Vec<String>>,
}

impl NodeLogs {
    /// kill -9 the zone's node, keeping its log.
    pub fn kill_node(&mut self, name: &str, zone: &mut Zone) {
        zone.node.kill();
        self.earlier
            .entry(name.to_string())
            .or_default()
            .push(zone.node.log());
    }

    /// Every line the zone's nodes logged so far, oldest run first.
    pub fn all(&self, name: &str, zone: &Zone) -> String {
        let mut runs = self.earlier.get(name).cloned().unwrap_or_default();
        runs.push(zone.node.log());
        runs.join("\n--- node restarted ---\n")
    }

    /// The lines about pulls (warnings, errors, stops), at most `max` of the newest.
    pub fn pull_lines(&self, name: &str, zone: &Zone, max: usize) -> String {
        let all = self.all(name, zone);
        let lines: Vec<&str> = all
            .lines()
            .filter(|l| l.contains("pull") && !l.contains("INFO"))
            .collect();
        lines[lines.len().saturating_sub(max)..].join("\n")
    }
}

/// `bsfg status --config <zone>` output, for failure messages.
pub fn status(zone: &Zone) -> String {
    match std::process::Command::new(crate::common::bsfg_binary())
        .arg("status")
        .arg("--config")
        .arg(&zone.config_path)
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("bsfg status: {e}"),
    }
}

/// Waits until `stream` in `url` holds `count` facts; on timeout panics with `diagnostics()`.
pub fn wait_for_count(
    url: &str,
    count: u64,
    deadline: Duration,
    what: &str,
    diagnostics: impl Fn() -> String,
) {
    let start = Instant::now();
    loop {
        let last = probe::last_sequence(url, STREAM).unwrap_or(0);
        if last >= count {
            return;
        }
        if start.elapsed() > deadline {
            panic!(
                "{what}: only {last} of {count} facts after {deadline:?} (a stuck pull?)\n{}",
                diagnostics()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn message_id(payload: &[u8]) -> String {
    let stored: StoredFact = prost::Message::decode(payload).expect("a stored fact");
    stored.envelope.map(|e| e.message_id).unwrap_or_default()
}

/// Message ids that appear more than once, and expected ones that do not appear.
fn census(ids: &[String], expected: &[String]) -> (Vec<(String, usize)>, Vec<String>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.to_string(), *n))
        .collect();
    let missing = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .cloned()
        .collect();
    (duplicates, missing)
}

fn first(items: &[impl std::fmt::Debug], n: usize) -> String {
    format!(
        "{:?}{}",
        &items[..items.len().min(n)],
        if items.len() > n { " …" } else { "" }
    )
}

/// The source holds `expected` (message ids) exactly once each, in that order; every copy holds
/// the source's facts exactly once, in source order, at the same offsets, byte for byte.
pub fn assert_exactly_once_in_order(
    source: (&str, &str),
    copies: &[(&str, &str)],
    expected: &[String],
) {
    let (source_name, source_url) = source;
    let original = stream_messages(source_url, STREAM);
    let ids: Vec<String> = original.iter().map(|m| message_id(&m.2)).collect();
    if ids != expected {
        let (duplicates, missing) = census(&ids, expected);
        let diverge = ids.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{source_name} (the source) should hold the {} produced facts once each, in production order: it holds {} facts; duplicated {}; missing {}; first out-of-order position {diverge:?}",
            expected.len(),
            ids.len(),
            first(&duplicates, 10),
            first(&missing, 10),
        );
    }
    for (name, url) in copies {
        let copy = stream_messages(url, STREAM);
        let copy_ids: Vec<String> = copy.iter().map(|m| message_id(&m.2)).collect();
        let (duplicates, missing) = census(&copy_ids, expected);
        assert!(
            duplicates.is_empty() && missing.is_empty() && copy.len() == original.len(),
            "{name} should hold each of the {} source facts exactly once: it holds {}; duplicated (id, copies) {}; missing {}",
            original.len(),
            copy.len(),
            first(&duplicates, 10),
            first(&missing, 10),
        );
        for (a, b) in original.iter().zip(&copy) {
            assert_eq!(
                (a.0, message_id(&a.2)),
                (b.0, message_id(&b.2)),
                "{name}: same order and offsets as {source_name}"
            );
            assert_eq!(a.1, b.1, "{name}: same content hash at offset {}", a.0);
            assert!(
                a.2 == b.2,
                "{name}: byte-identical envelope and fact at offset {}",
                a.0
            );
        }
    }
}

/// Reads a whole artifact from `zone` through GetObject (as identity `who`) and checks its bytes
/// against `expected`.
pub fn assert_artifact(zone: &Zone, node_identity: &str, who: &str, key: &str, expected: &[u8]) {
    let client = producer::client(
        &zone.url(),
        node_identity,
        &zone.pki.dir,
        &zone.pki.ca_path,
        who,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut data = Vec::new();
    let digest = loop {
        let request = GetObjectRequest {
            bucket: "batch-files".into(),
            key: key.into(),
            offset: data.len() as u64,
            limit_bytes: 0,
        };
        let chunk: GetObjectResponse = runtime
            .block_on(client.unary(
                "/bsfg.v1.ArtifactService/GetObject",
                &request,
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| panic!("artifact {key} in {node_identity}: {e}"));
        data.extend_from_slice(&chunk.data);
        if chunk.eof || chunk.data.is_empty() {
            assert_eq!(chunk.size, expected.len() as u64, "size of {key}");
            break chunk.digest;
        }
    };
    let want = format!("sha256:{}", hex::encode(Sha256::digest(expected)));
    assert_eq!(digest, want, "{node_identity}: digest of {key}");
    assert!(
        data == expected,
        "{node_identity}: the bytes of {key} ({} bytes read, {} expected)",
        data.len(),
        expected.len()
    );
}
