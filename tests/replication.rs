//! Receiver-driven replication across a three-zone chain (SPEC §6): facts and artifacts travel
//! plant-a → idmz → enterprise and back, exactly once, in order, byte for byte.

mod common;

use common::{
    PRODUCER,
    chain::start_chain,
    js::{get_object_direct, put_object_direct, stream_messages, wait_for_count},
    producer,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

#[test]
fn ten_thousand_facts_with_artifacts_cross_two_hops_exactly_once_in_order() {
    let chain = start_chain("");
    let plant = &chain.plant;
    let mes = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &plant.pki.dir,
        &plant.pki.ca_path,
        PRODUCER,
    );
    let total = 10_000u64;
    let mut requests = Vec::new();
    for i in 0..total {
        if i % 1000 == 0 {
            let data: Vec<u8> = format!("report {i} ")
                .repeat(5000 + i as usize)
                .into_bytes();
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
            let key = format!("B-{i}/report.pdf");
            let put = producer::put_object(&mes, "batch-files", &key, data.clone());
            assert_eq!(put.digest, digest);
            let reference = format!(
                "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"{key}\",\"media_type\":\"application/pdf\",\"size\":{}}}",
                data.len()
            );
            requests.push(producer::fact(
                &format!("evt-{i}"),
                "plant-a",
                reference,
                "application/pdf",
            ));
        } else {
            requests.push(producer::fact(
                &format!("evt-{i}"),
                "plant-a",
                format!("{{\"n\":{i}}}"),
                "",
            ));
        }
    }
    // Appended one at a time so the source order is the message order.
    producer::append_all(mes, requests, 1);

    wait_for_count(
        &chain.enterprise.nats.url(),
        "facts_operational",
        total,
        Duration::from_secs(120),
        "facts in enterprise",
    );
    let source = stream_messages(&plant.nats.url(), "facts_operational");
    let middle = stream_messages(&chain.idmz.nats.url(), "facts_operational");
    let destination = stream_messages(&chain.enterprise.nats.url(), "facts_operational");
    assert_eq!(source.len() as u64, total);
    for (hop, copy) in [("idmz", &middle), ("enterprise", &destination)] {
        assert_eq!(
            copy.len(),
            source.len(),
            "{hop} holds every fact exactly once"
        );
        for (a, b) in source.iter().zip(copy.iter()) {
            assert_eq!(a.0, b.0, "{hop}: same order and offsets");
            assert_eq!(a.1, b.1, "{hop}: same content hash at offset {}", a.0);
            assert_eq!(
                a.2, b.2,
                "{hop}: byte-identical envelope and fact at offset {}",
                a.0
            );
        }
    }
    // Every artifact is in enterprise's Object Store with the referenced digest.
    let peer = producer::client(
        &chain.enterprise.url(),
        "enterprise-bsfg",
        &plant.pki.dir,
        &plant.pki.ca_path,
        "idmz-bsfg",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for i in (0..total).step_by(1000) {
        let request = bsfg::proto::GetObjectRequest {
            bucket: "batch-files".into(),
            key: format!("B-{i}/report.pdf"),
            offset: 0,
            limit_bytes: 16,
        };
        let reply: bsfg::proto::GetObjectResponse = runtime
            .block_on(peer.unary(
                "/bsfg.v1.ArtifactService/GetObject",
                &request,
                Duration::from_secs(10),
            ))
            .expect("artifact in enterprise");
        let data: Vec<u8> = format!("report {i} ")
            .repeat(5000 + i as usize)
            .into_bytes();
        assert_eq!(
            reply.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
        assert_eq!(reply.size, data.len() as u64);
    }
}

#[test]
fn a_fact_travels_back_from_enterprise_to_plant_with_its_origin() {
    let chain = start_chain("");
    let enterprise = &chain.enterprise;
    let mes = producer::client(
        &enterprise.url(),
        "enterprise-bsfg",
        &enterprise.pki.dir,
        &enterprise.pki.ca_path,
        PRODUCER,
    );
    let mut order = producer::fact("order-1", "enterprise", "{\"qty\":5}".into(), "");
    order.category = bsfg::proto::Category::Documents as i32;
    if let Some(e) = order.envelope.as_mut() {
        e.to_zone = "plant-a".into();
    }
    producer::append_all(mes, vec![order], 1);
    wait_for_count(
        &chain.plant.nats.url(),
        "facts_documents",
        1,
        Duration::from_secs(30),
        "the order in plant-a",
    );
    let arrived = stream_messages(&chain.plant.nats.url(), "facts_documents");
    let stored: bsfg::proto::StoredFact =
        prost::Message::decode(arrived[0].2.as_slice()).expect("stored fact");
    let envelope = stored.envelope.expect("envelope");
    assert_eq!(
        envelope.from_zone, "enterprise",
        "the origin zone is kept across hops"
    );
    assert_eq!(envelope.message_id, "order-1");
    assert_eq!(
        stream_messages(&enterprise.nats.url(), "facts_documents")[0].2,
        arrived[0].2
    );
}

/// A resident-set figure of a process, in bytes (`VmRSS`, `VmHWM`, … from /proc/<pid>/status).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// `len` bytes that do not compress and repeat nothing (sha256 in counter mode).
fn incompressible(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut counter = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(counter.to_be_bytes()));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A 48 MiB artifact (a firmware bundle's order of size) crosses a pull byte for byte, and neither
/// node holds it: the peak resident set of the receiving node (streaming it into its store) and of
/// the serving node (answering 48 GetObject calls of 1 MiB) grows by far less than the object (the
/// appliance runs the node under MemoryMax=384M and bundles are ~120 MB). Measured: +5 MiB and
/// +4 MiB; before streaming, +51 MiB (the object in one buffer) and +34 MiB (async-nats's
/// reader, a push consumer nats-server runs up to 32 MiB ahead).
#[test]
fn a_large_artifact_is_replicated_without_holding_it_in_memory() {
    const SIZE: usize = 48 * 1024 * 1024;
    const BOUND: u64 = 16 * 1024 * 1024;
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = std::sync::Arc::new(common::Pki::new(&estate.path().join("pki"), "estate CA"));
    let plant_port = common::free_port();
    let plant = common::Zone::start_with(common::ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(plant_port),
        max_object_chunk_bytes: 1024 * 1024,
        ..Default::default()
    });
    let idmz = common::Zone::start_with(common::ZoneOptions {
        zone: "idmz".into(),
        pki: Some(pki),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"https://127.0.0.1:{plant_port}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\naccept_from_zones = [\"plant-a\"]\nidle_wait = \"1s\"\n"
        ),
        ..Default::default()
    });

    // The bundle is put into plant-a's Object Store directly (PutObject's request limit stays 1 MiB).
    let data = incompressible(SIZE);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let key = "fw/bundle-1.raucb";
    put_object_direct(
        &plant.nats.url(),
        "batch-files",
        key,
        "application/octet-stream",
        &data,
    );

    let idmz_pid = idmz.node.pid();
    let rss_before = proc_status_bytes(idmz_pid, "VmRSS");
    let plant_rss_before = proc_status_bytes(plant.node.pid(), "VmRSS");
    let mes = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &plant.pki.dir,
        &plant.pki.ca_path,
        PRODUCER,
    );
    let reference = format!(
        "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"{key}\",\"media_type\":\"application/octet-stream\",\"size\":{SIZE}}}"
    );
    producer::append_all(
        mes,
        vec![producer::fact(
            "bundle-1",
            "plant-a",
            reference,
            "application/octet-stream",
        )],
        1,
    );
    wait_for_count(
        &idmz.nats.url(),
        "facts_operational",
        1,
        Duration::from_secs(300),
        "the bundle's fact in idmz",
    );
    let peak = proc_status_bytes(idmz_pid, "VmHWM");
    let plant_peak = proc_status_bytes(plant.node.pid(), "VmHWM");
    eprintln!(
        "receiving node: VmRSS before {} KiB, VmHWM after {} KiB (+{} KiB); serving node: VmRSS before {} KiB, VmHWM after {} KiB",
        rss_before / 1024,
        peak / 1024,
        peak.saturating_sub(rss_before) / 1024,
        plant_rss_before / 1024,
        plant_peak / 1024
    );

    // Byte for byte in idmz's Object Store, under the referenced digest.
    let arrived =
        get_object_direct(&idmz.nats.url(), "batch-files", key).expect("the bundle in idmz");
    assert_eq!(arrived.len(), SIZE);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&arrived))),
        digest
    );
    assert!(arrived == data, "byte-identical");
    for (node, before, peak) in [
        ("receiving", rss_before, peak),
        ("serving", plant_rss_before, plant_peak),
    ] {
        assert!(
            peak.saturating_sub(before) < BOUND,
            "the {node} node's peak resident set grew by {} KiB (from {} KiB to {} KiB) for a {} KiB object; the bound is {} KiB",
            peak.saturating_sub(before) / 1024,
            before / 1024,
            peak / 1024,
            SIZE / 1024,
            BOUND / 1024
        );
    }
}
