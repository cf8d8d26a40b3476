//! Receiver-driven replication across a three-zone chain (SPEC §6): facts and artifacts travel
//! plant-a → idmz → enterprise and back, exactly once, in order, byte for byte.

mod common;

use common::{
    PRODUCER,
    chain::start_chain,
    js::{stream_messages, wait_for_count},
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
