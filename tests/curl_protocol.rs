//! The Connect unary protocol as curl speaks it: binary and JSON codecs over HTTP/2 and HTTP/1.1,
//! GET for side-effect-free methods (plain and base64 messages, gzip-compressed GET messages),
//! gzip request bodies and gzip responses.

mod common;

use base64::Engine;
use bsfg::proto::{
    AppendFactRequest, AppendFactResponse, Envelope, Fact, FetchFactsRequest, FetchFactsResponse,
};
use common::{PEER, PRODUCER, Zone, append_json};
use flate2::{Compression, write::GzEncoder};
use prost::Message;
use std::io::Write;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn proto_append(id: &str) -> Vec<u8> {
    AppendFactRequest {
        envelope: Some(Envelope {
            message_id: id.into(),
            from_zone: "plant-a".into(),
            to_zone: "enterprise".into(),
            produced_at_unix_ms: 1_700_000_000_000,
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: "lot:L-9".into(),
            predicate: "lot_released".into(),
            object_json: "{\"qty\":12}".into(),
        }),
        category: 0,
    }
    .encode_to_vec()
}

#[test]
fn proto_and_json_over_http2_and_http1() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    for (i, http) in ["--http2", "--http1.1"].into_iter().enumerate() {
        let reply = mes.request(
            "/bsfg.v1.BoundaryService/AppendFact",
            &[
                http,
                "-H",
                "content-type: application/proto",
                "-H",
                "connect-protocol-version: 1",
            ],
            Some(&proto_append(&format!("p-{i}"))),
        );
        assert_eq!(
            reply.status,
            200,
            "{http}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/proto")
        );
        let decoded = AppendFactResponse::decode(reply.body.as_slice()).expect("proto response");
        assert_eq!(decoded.offset, 2 * i as u64 + 1);
        let expected_version = if http == "--http2" {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        assert!(
            reply.headers.starts_with(expected_version),
            "{}",
            reply.headers
        );

        let json = mes.request(
            "/bsfg.v1.BoundaryService/AppendFact",
            &[
                http,
                "-H",
                "content-type: application/json; charset=utf-8",
                "-H",
                "connect-timeout-ms: 5000",
            ],
            Some(append_json(&format!("j-{i}"), "plant-a", "[1,2]").as_bytes()),
        );
        assert_eq!(json.status, 200);
        assert_eq!(
            json.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(json.json()["offset"], (2 * i as u64 + 2).to_string());
    }
}

#[test]
fn get_requests_for_side_effect_free_methods() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    for i in 0..3 {
        assert_eq!(
            mes.append(&append_json(&format!("g-{i}"), "plant-a", "null"))
                .status,
            200
        );
    }
    let peer = zone.curl(PEER);
    let plain = peer.request(
        "/bsfg.v1.BoundaryService/FetchFacts?connect=v1&encoding=json&message=%7B%22consumerName%22%3A%22to-idmz%22%2C%22limit%22%3A2%7D",
        &[],
        None,
    );
    assert_eq!(plain.status, 200, "{:?}", plain.json());
    assert_eq!(plain.json()["facts"].as_array().map(Vec::len), Some(2));

    let message = FetchFactsRequest {
        consumer_name: "to-idmz".into(),
        limit: 3,
        max_wait_ms: 0,
    }
    .encode_to_vec();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&message);
    let binary = peer.request(
        &format!("/bsfg.v1.BoundaryService/FetchFacts?encoding=proto&base64=1&message={b64}"),
        &["--http1.1"],
        None,
    );
    assert_eq!(binary.status, 200);
    let page = FetchFactsResponse::decode(binary.body.as_slice()).expect("proto page");
    assert_eq!(
        page.facts.iter().map(|f| f.offset).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(page.high_watermark, 3);

    let zipped = base64::engine::general_purpose::URL_SAFE.encode(gzip(&message));
    let compressed = peer.request(
        &format!("/bsfg.v1.BoundaryService/FetchFacts?encoding=proto&base64=1&compression=gzip&message={zipped}"),
        &[],
        None,
    );
    assert_eq!(compressed.status, 200);
    assert_eq!(
        FetchFactsResponse::decode(compressed.body.as_slice()).expect("proto page"),
        page
    );

    // GET is refused for methods with side effects.
    let refused = mes.request(
        "/bsfg.v1.BoundaryService/AppendFact?encoding=json&message=%7B%7D",
        &[],
        None,
    );
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow").as_deref(), Some("POST"));
}

#[test]
fn gzip_request_bodies_and_gzip_responses() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let body = gzip(append_json("z-1", "plant-a", "{\"zipped\":true}").as_bytes());
    let reply = mes.request(
        "/bsfg.v1.BoundaryService/AppendFact",
        &[
            "-H",
            "content-type: application/json",
            "-H",
            "content-encoding: gzip",
        ],
        Some(&body),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    for i in 2..=20 {
        let padded = format!("{{\"note\":\"{}\"}}", "p".repeat(200));
        assert_eq!(
            mes.append(&append_json(&format!("z-{i}"), "plant-a", &padded))
                .status,
            200
        );
    }
    let page = zone.curl(PEER).request(
        "/bsfg.v1.BoundaryService/FetchFacts",
        &["--compressed", "-H", "content-type: application/json"],
        Some(b"{\"consumerName\":\"to-idmz\",\"limit\":20}"),
    );
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-encoding").as_deref(),
        Some("gzip"),
        "{}",
        page.headers
    );
    assert_eq!(page.json()["facts"].as_array().map(Vec::len), Some(20));
}
