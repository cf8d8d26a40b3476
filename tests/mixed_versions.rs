//! Mixed versions interoperate (SPEC §4): a request from a newer client carries fields this node
//! does not know. Both codecs accept and ignore them, as binary protobuf and connect-go's JSON
//! codec do, so zones running different versions keep exchanging facts during a staged upgrade.

mod common;

use bsfg::proto::{AppendFactRequest, AppendFactResponse, Envelope, Fact};
use common::{PEER, PRODUCER, Zone, append_json};
use prost::Message;

/// Appends a protobuf field the node does not know: `field` as a length-delimited string.
fn with_unknown_field(mut encoded: Vec<u8>, field: u32, value: &[u8]) -> Vec<u8> {
    prost::encoding::encode_key(
        field,
        prost::encoding::WireType::LengthDelimited,
        &mut encoded,
    );
    prost::encoding::encode_varint(value.len() as u64, &mut encoded);
    encoded.extend_from_slice(value);
    encoded
}

#[test]
fn json_request_with_unknown_fields_is_accepted() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    let mut request: serde_json::Value =
        serde_json::from_str(&append_json("newer-json-1", "plant-a", "{\"qty\":1}")).expect("json");
    // Fields a newer schema might add, at the top level and inside nested messages.
    request["traceParent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    request["envelope"]["priority"] = serde_json::json!({"level": 3, "tags": ["a"]});
    request["fact"]["confidence"] = serde_json::json!(0.9);
    let reply = mes.append(&request.to_string());
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["offset"], "1");

    // The same fact again (unknown fields are not part of its content): a duplicate.
    request["traceParent"] = "something-else".into();
    let again = mes.append(&request.to_string());
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["duplicate"], true);

    // Fetch with an unknown field too, and the fact comes out as stored.
    let fetched = zone.curl(PEER).post_json(
        "/bsfg.v1.BoundaryService/FetchFacts",
        r#"{"consumerName":"to-idmz","limit":10,"clientHint":"v2"}"#,
    );
    assert_eq!(
        fetched.status,
        200,
        "{}",
        String::from_utf8_lossy(&fetched.body)
    );
    assert_eq!(fetched.json()["facts"][0]["offset"], "1");
}

#[test]
fn json_unknown_enum_value_is_still_refused() {
    // An unknown *value* is not an unknown *field*: a category this node does not keep must not
    // silently become the default (operational) one.
    let zone = Zone::start();
    let mut request: serde_json::Value =
        serde_json::from_str(&append_json("newer-enum-1", "plant-a", "{}")).expect("json");
    request["category"] = "CATEGORY_SAFETY".into();
    let reply = zone.curl(PRODUCER).append(&request.to_string());
    assert_eq!(
        reply.status,
        400,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.code(), "invalid_argument");
}

#[test]
fn binary_request_with_unknown_field_numbers_is_accepted() {
    let zone = Zone::start();
    let request = AppendFactRequest {
        envelope: Some(Envelope {
            message_id: "newer-proto-1".into(),
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
    };
    let body = with_unknown_field(request.encode_to_vec(), 99, b"traceparent-value");
    let reply = zone.curl(PRODUCER).request(
        "/bsfg.v1.BoundaryService/AppendFact",
        &["-H", "content-type: application/proto"],
        Some(&body),
    );
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let decoded = AppendFactResponse::decode(reply.body.as_slice()).expect("proto response");
    assert_eq!(decoded.offset, 1);
}
