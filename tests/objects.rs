//! Artifacts: PutObject/GetObject on the JetStream Object Store with content-addressed digests,
//! and AppendFact's check that a referenced artifact is stored as the reference says.

mod common;

use base64::Engine;
use common::{
    PEER, PRODUCER, Zone, ZoneOptions, js,
    observe::{metric, metrics},
};
use sha2::{Digest, Sha256};
use std::time::Instant;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn put(zone: &Zone, key: &str, data: &[u8]) -> common::clients::HttpReply {
    zone.curl(PRODUCER).post_json(
        "/bsfg.v1.BoundaryService/PutObject",
        &serde_json::json!({"bucket": "batch-files", "key": key, "data": b64(data), "mediaType": "application/pdf"}).to_string(),
    )
}

fn get(zone: &Zone, key: &str, offset: u64, limit: u32) -> common::clients::HttpReply {
    zone.curl(PEER).post_json(
        "/bsfg.v1.ArtifactService/GetObject",
        &serde_json::json!({"bucket": "batch-files", "key": key, "offset": offset.to_string(), "limitBytes": limit}).to_string(),
    )
}

fn artifact_fact(
    message_id: &str,
    key: &str,
    digest: &str,
    size: usize,
    media_type: &str,
) -> String {
    let object_json = format!(
        "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"file_name\":\"report.pdf\",\"key\":\"{key}\",\"media_type\":\"{media_type}\",\"size\":{size}}}"
    );
    serde_json::json!({
        "envelope": {"messageId": message_id, "fromZone": "plant-a", "toZone": "enterprise",
                     "producedAtUnixMs": "1700000000000", "objectMediaType": "application/pdf"},
        "fact": {"subject": "batch:B-7", "predicate": "report_attached", "objectJson": object_json},
    })
    .to_string()
}

#[test]
fn put_is_content_addressed_idempotent_and_immutable() {
    let zone = Zone::start();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let first = put(&zone, "B-7/report.pdf", &data);
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert_eq!(first.json()["digest"], digest);
    assert_eq!(first.json()["size"], "200000");
    assert_eq!(
        put(&zone, "B-7/report.pdf", &data).json(),
        first.json(),
        "same bytes again is idempotent"
    );
    let other = put(&zone, "B-7/report.pdf", b"other bytes");
    assert_eq!(other.code(), "already_exists");

    // Read it back in bounded chunks; the server caps a chunk at 64 KiB in the test config.
    let mut read = Vec::new();
    loop {
        let chunk = get(&zone, "B-7/report.pdf", read.len() as u64, 0);
        assert_eq!(chunk.status, 200, "{:?}", chunk.json());
        let json = chunk.json();
        assert_eq!(json["digest"], digest);
        assert_eq!(json["mediaType"], "application/pdf");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json["data"].as_str().unwrap_or(""))
            .expect("base64 data");
        assert!(
            bytes.len() <= 65536,
            "chunk of {} bytes exceeds the cap",
            bytes.len()
        );
        read.extend_from_slice(&bytes);
        if json["eof"] == true {
            break;
        }
        assert!(!bytes.is_empty(), "no progress before eof");
    }
    assert_eq!(read, data);
    let small = get(&zone, "B-7/report.pdf", 10, 5).json();
    assert_eq!(small["data"], b64(&data[10..15]));
    assert_eq!(
        get(&zone, "B-7/report.pdf", 200_001, 5).code(),
        "out_of_range"
    );
    assert_eq!(get(&zone, "B-7/missing.pdf", 0, 5).code(), "not_found");
}

#[test]
fn facts_may_only_reference_artifacts_stored_as_referenced() {
    let zone = Zone::start();
    let data = b"%PDF-1.7 batch report".to_vec();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let mes = zone.curl(PRODUCER);

    let missing = mes.append(&artifact_fact(
        "a-1",
        "B-7/report.pdf",
        &digest,
        data.len(),
        "application/pdf",
    ));
    assert_eq!(missing.code(), "not_found", "{:?}", missing.json());

    assert_eq!(put(&zone, "B-7/report.pdf", &data).status, 200);
    let wrong_digest = format!("sha256:{}", "0".repeat(64));
    let mismatch = mes.append(&artifact_fact(
        "a-2",
        "B-7/report.pdf",
        &wrong_digest,
        data.len(),
        "application/pdf",
    ));
    assert_eq!(mismatch.code(), "invalid_argument");
    let wrong_size = mes.append(&artifact_fact(
        "a-3",
        "B-7/report.pdf",
        &digest,
        data.len() + 1,
        "application/pdf",
    ));
    assert_eq!(wrong_size.code(), "invalid_argument");
    let wrong_type = mes.append(&artifact_fact(
        "a-4",
        "B-7/report.pdf",
        &digest,
        data.len(),
        "text/plain",
    ));
    assert_eq!(wrong_type.code(), "invalid_argument");

    let ok = mes.append(&artifact_fact(
        "a-5",
        "B-7/report.pdf",
        &digest,
        data.len(),
        "application/pdf",
    ));
    assert_eq!(ok.json()["offset"], "1", "{:?}", ok.json());
    assert_eq!(
        zone.curl(PEER).fetch("to-idmz", 10).json()["highWatermark"],
        "1"
    );
}

/// Puts `data` straight into the zone's `batch-files` bucket as the node would (PutObject takes
/// at most `max_request_bytes`, 1 MiB in the test config).
fn put_big(zone: &Zone, key: &str, data: &[u8]) {
    use async_nats::jetstream::object_store::ObjectMetadata;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let bucket = js.get_object_store("batch-files").await.expect("bucket");
        let meta = ObjectMetadata {
            name: key.to_string(),
            metadata: [(
                "bsfg-media-type".to_string(),
                "application/octet-stream".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let mut reader = data;
        bucket.put(meta, &mut reader).await.expect("put");
    });
}

/// What GetObject read from nats-server so far: (bytes read, bytes skipped, indexes built).
fn object_reads(zone: &Zone) -> (f64, f64, f64) {
    let text = metrics(zone);
    let value = |series| metric(&text, series).unwrap_or(f64::NAN);
    (
        value("bsfg_object_bytes_read_total"),
        value("bsfg_object_bytes_skipped_total"),
        value("bsfg_object_index_builds_total"),
    )
}

/// A replication pull reads a big artifact chunk by chunk; each chunk must cost the node about
/// its own size (it cost everything before its offset: 64 MiB in 1 MiB chunks read ~2 GiB).
#[test]
fn a_big_object_read_chunk_by_chunk_costs_its_size_not_its_size_squared() {
    const MIB: usize = 1 << 20;
    let zone = Zone::start_with(ZoneOptions {
        max_object_chunk_bytes: MIB as u32,
        ..Default::default()
    });
    let size = 64 * MIB;
    let data: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    put_big(&zone, "big.bin", &data);
    let before = object_reads(&zone);

    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut offset = 0usize;
    let mut calls = 0;
    loop {
        let chunk = get(&zone, "big.bin", offset as u64, 0);
        assert_eq!(chunk.status, 200, "{:?}", chunk.json());
        let json = chunk.json();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json["data"].as_str().unwrap_or(""))
            .expect("base64 data");
        assert_eq!(bytes.len(), MIB.min(size - offset));
        assert_eq!(bytes, data[offset..offset + bytes.len()], "at {offset}");
        hasher.update(&bytes);
        offset += bytes.len();
        calls += 1;
        if json["eof"] == true {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(offset, size);
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);
    let after = object_reads(&zone);
    let (read, skipped, builds) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    eprintln!(
        "GetObject of {size} bytes in {calls} calls of 1 MiB: {elapsed:?}; {read} bytes read from \
         nats-server, {skipped} of them not returned, {builds} index built"
    );
    // Chunks are 128 KiB and a 1 MiB answer starts and ends on chunk boundaries: nothing is
    // read twice. Any alignment would still read at most one chunk too many at each end.
    assert_eq!(read, size as f64, "bytes read for {calls} calls");
    assert_eq!(skipped, 0.0);
    assert_eq!(builds, 1.0, "one index, kept between the calls");
    // (No bound on the time: the 64 calls' cost is mostly curl and the JSON codec of this debug
    // build; the bytes read are the deterministic measure.)

    // Anywhere in the object costs about what is returned: the tail, a piece across chunks.
    let started = Instant::now();
    let tail = get(&zone, "big.bin", (size - 100) as u64, 100).json();
    eprintln!("GetObject of the last 100 bytes: {:?}", started.elapsed());
    assert_eq!(tail["data"], b64(&data[size - 100..]));
    assert_eq!(tail["eof"], true);
    let across = get(&zone, "big.bin", (5 * 131_072 - 10) as u64, 20).json();
    assert_eq!(
        across["data"],
        b64(&data[5 * 131_072 - 10..5 * 131_072 + 10])
    );
    let end = object_reads(&zone);
    assert_eq!(
        end.0 - after.0,
        3.0 * 131_072.0,
        "one chunk for the tail, two across"
    );
    assert_eq!(end.1 - after.1, 3.0 * 131_072.0 - 120.0);
    assert_eq!(end.2, after.2, "the index is kept");
}

/// The chunks of a put the node never finished (killed or powered off while an artifact was
/// coming in: chunks published, no metadata) are purged when it starts again; stored objects keep
/// theirs.
#[test]
fn chunks_of_a_put_the_node_never_finished_are_purged_when_it_starts() {
    let mut zone = Zone::start();
    let url = zone.nats.url();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    js::put_object_direct(&url, "batch-files", "whole.bin", "text/plain", &data);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.expect("connect to nats");
        let context = async_nats::jetstream::new(client);
        for _ in 0..2 {
            context
                .publish("$O.batch-files.C.UNFINISHEDPUT", vec![1u8; 1000].into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    });
    let chunks = js::object_chunks(&url, "batch-files", "whole.bin");
    assert_eq!(js::object_stream_messages(&url, "batch-files"), chunks + 3);

    zone.restart_node();
    assert_eq!(
        js::object_stream_messages(&url, "batch-files"),
        chunks + 1,
        "only the stored object's chunks and metadata are left"
    );
    assert!(
        zone.node
            .log_contains("purged the chunks of an object that was never completed")
    );
    assert_eq!(
        js::get_object_direct(&url, "batch-files", "whole.bin").as_deref(),
        Some(data.as_slice())
    );
}

/// GetObject at any offset, across chunk boundaries (the node stores 128 KiB chunks), and two
/// walks through one object interleaved (each goes on where its previous call stopped): the
/// bytes asked for, every time.
#[test]
fn get_returns_the_bytes_at_any_offset_and_interleaved_walks_do_not_mix() {
    let zone = Zone::start();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(put(&zone, "B-8/big.bin", &data).status, 200);
    let read = |offset: u64, limit: u32| {
        let reply = get(&zone, "B-8/big.bin", offset, limit);
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        let json = reply.json();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json["data"].as_str().unwrap_or(""))
            .expect("base64 data");
        (bytes, json["eof"] == true)
    };
    for (offset, limit) in [
        (0u64, 100u32),
        (131_000, 200),
        (131_072, 65_536),
        (262_143, 2),
        (299_999, 100),
        (300_000, 100),
    ] {
        let (bytes, eof) = read(offset, limit);
        let end = (offset as usize + limit as usize).min(data.len());
        assert!(bytes == data[offset as usize..end], "bytes at {offset}");
        assert_eq!(eof, end == data.len(), "eof at {offset}");
    }
    // PutObject keeps its request limit (1 MiB in the test config): streaming is the pull's. (Over
    // HTTP/2 curl cannot read the early refusal; tests/bad_input.rs checks its code.)
    let too_big = put(&zone, "B-8/too-big.bin", &vec![1u8; 1024 * 1024 + 1]);
    assert_ne!(too_big.status, 200, "{:?}", too_big.json());
    assert_eq!(get(&zone, "B-8/too-big.bin", 0, 10).code(), "not_found");

    let (mut a, mut b) = (Vec::new(), data[..7].to_vec());
    loop {
        let (bytes, a_done) = read(a.len() as u64, 50_000);
        a.extend_from_slice(&bytes);
        let (bytes, b_done) = read(b.len() as u64, 40_000);
        b.extend_from_slice(&bytes);
        if a_done && b_done {
            break;
        }
    }
    assert!(a == data && b == data, "both walks read the object whole");
}
