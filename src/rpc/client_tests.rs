//! The pull client reads responses from a "newer" peer: fields this version does not know are
//! skipped in both codecs.

use super::*;
use crate::proto::{FetchFactsResponse, StoredFact};

/// A FetchFacts response as a newer schema would encode it: field 15 (a string) at the top level
/// and field 20 (a varint) inside each fact.
fn newer_binary_response() -> Vec<u8> {
    use prost::{
        Message,
        encoding::{WireType, encode_key, encode_varint},
    };
    let fact = StoredFact {
        offset: 7,
        ..Default::default()
    };
    let mut fact_bytes = fact.encode_to_vec();
    encode_key(20, WireType::Varint, &mut fact_bytes);
    encode_varint(42, &mut fact_bytes);
    let mut out = Vec::new();
    // facts = 1 (repeated StoredFact)
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(fact_bytes.len() as u64, &mut out);
    out.extend_from_slice(&fact_bytes);
    // high_watermark = 2
    encode_key(2, WireType::Varint, &mut out);
    encode_varint(9, &mut out);
    encode_key(15, WireType::LengthDelimited, &mut out);
    encode_varint(3, &mut out);
    out.extend_from_slice(b"new");
    out
}

#[test]
fn binary_response_from_a_newer_schema_decodes() {
    let decoded: FetchFactsResponse =
        decode_response(Some("application/proto"), &newer_binary_response())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded.high_watermark, 9);
    assert_eq!(decoded.facts.len(), 1);
    assert_eq!(decoded.facts[0].offset, 7);
    // No content type: binary, as the client asked for.
    let untyped: FetchFactsResponse =
        decode_response(None, &newer_binary_response()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(untyped.high_watermark, 9);
}

#[test]
fn json_response_from_a_newer_schema_decodes() {
    let body = serde_json::json!({
        "facts": [{"offset": "7", "replayHint": {"fast": true}}],
        "highWatermark": "9",
        "serverVersion": "2.0.0",
    })
    .to_string();
    let decoded: FetchFactsResponse =
        decode_response(Some("application/json; charset=utf-8"), body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded.high_watermark, 9);
    assert_eq!(decoded.facts.len(), 1);
    assert_eq!(decoded.facts[0].offset, 7);
}

#[test]
fn garbage_is_an_internal_error() {
    let err = decode_response::<FetchFactsResponse>(Some("application/json"), b"{not json")
        .err()
        .and_then(|e| e.code().map(str::to_string));
    assert_eq!(err.as_deref(), Some("internal"));
}
