//! The boundary RPCs called by Connect clients no one here wrote: `@connectrpc/connect-node` and
//! Python `connectrpc`, over HTTP/1.1 and HTTP/2, with the binary and JSON codecs, with and
//! without gzip (the Python client gzips every request by default).

mod common;

use common::{
    PEER, PRODUCER, Zone,
    clients::{ClientCall, ConnectClient, connect_call},
};
use serde_json::{Value, json};

const BOUNDARY: &str = "bsfg.v1.BoundaryService";

struct Caller<'a> {
    zone: &'a Zone,
    client: ConnectClient,
    codec: &'static str,
    http: &'static str,
    gzip: bool,
}

impl Caller<'_> {
    fn call(&self, identity: &str, service: &str, method: &str, request: Value) -> Value {
        let pki = &self.zone.pki.dir;
        connect_call(
            self.client,
            &self.zone.url(),
            &self.zone.pki.ca_path,
            &pki.join(format!("{identity}.pem")),
            &pki.join(format!("{identity}.key")),
            &ClientCall {
                service,
                method,
                codec: self.codec,
                http: self.http,
                gzip: self.gzip,
                request: request.to_string(),
            },
        )
    }

    fn label(&self) -> String {
        format!(
            "{:?}/{}/http{}/gzip={}",
            self.client, self.codec, self.http, self.gzip
        )
    }
}

/// All five methods through one client configuration; `tag` keeps message ids and keys apart.
fn exercise(caller: &Caller, tag: &str) {
    let label = caller.label();
    let data = format!("artifact bytes for {tag}").into_bytes();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
    let put = caller.call(
        PRODUCER,
        BOUNDARY,
        "PutObject",
        json!({"bucket": "batch-files", "key": format!("{tag}/r.bin"), "data": b64, "mediaType": "application/octet-stream"}),
    );
    assert_eq!(put["ok"]["size"], data.len().to_string(), "{label}: {put}");
    let digest = put["ok"]["digest"].as_str().unwrap_or("").to_string();

    let object_json = format!(
        "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"{tag}/r.bin\",\"media_type\":\"application/octet-stream\",\"size\":{}}}",
        data.len()
    );
    let append = json!({
        "envelope": {"messageId": format!("{tag}-1"), "fromZone": "plant-a", "toZone": "enterprise",
                     "producedAtUnixMs": "1700000000000", "objectMediaType": "application/octet-stream",
                     "labels": {"classification": "GMP"}},
        "fact": {"subject": "batch:B-1", "predicate": "report_attached", "objectJson": object_json},
    });
    let first = caller.call(PRODUCER, BOUNDARY, "AppendFact", append.clone());
    let offset = first["ok"]["offset"].as_str().unwrap_or("").to_string();
    assert!(!offset.is_empty(), "{label}: {first}");
    let again = caller.call(PRODUCER, BOUNDARY, "AppendFact", append);
    assert_eq!(
        again["ok"],
        json!({"offset": offset, "duplicate": true}),
        "{label}"
    );

    let bad = caller.call(
        PRODUCER,
        BOUNDARY,
        "AppendFact",
        json!({"envelope": {"messageId": format!("{tag}-2"), "fromZone": "plant-a", "toZone": "enterprise", "producedAtUnixMs": "1"},
               "fact": {"subject": "batch:B-1", "predicate": "x", "objectJson": "{ }"}}),
    );
    assert_eq!(bad["error"]["code"], "invalid_argument", "{label}: {bad}");

    let got = caller.call(
        PEER,
        "bsfg.v1.ArtifactService",
        "GetObject",
        json!({"bucket": "batch-files", "key": format!("{tag}/r.bin")}),
    );
    assert_eq!(got["ok"]["data"], b64, "{label}: {got}");
    assert_eq!(got["ok"]["eof"], true, "{label}: {got}");

    let page = caller.call(
        PEER,
        BOUNDARY,
        "FetchFacts",
        json!({"consumerName": "to-idmz", "limit": 100}),
    );
    let facts = page["ok"]["facts"].as_array().cloned().unwrap_or_default();
    let ours = facts
        .iter()
        .find(|f| f["offset"] == offset)
        .unwrap_or_else(|| panic!("{label}: offset {offset} not in {page}"));
    assert_eq!(
        ours["envelope"]["labels"]["classification"], "GMP",
        "{label}"
    );
    assert_eq!(ours["category"], "CATEGORY_OPERATIONAL", "{label}");

    let denied = caller.call(
        PRODUCER,
        BOUNDARY,
        "FetchFacts",
        json!({"consumerName": "to-idmz", "limit": 1}),
    );
    assert_eq!(
        denied["error"]["code"], "permission_denied",
        "{label}: {denied}"
    );
}

fn matrix(client: ConnectClient, gzip_options: &[bool]) {
    let zone = Zone::start();
    let mut callers = Vec::new();
    for http in ["1.1", "2"] {
        for codec in ["proto", "json"] {
            for &gzip in gzip_options {
                callers.push(Caller {
                    zone: &zone,
                    client,
                    codec,
                    http,
                    gzip,
                });
            }
        }
    }
    std::thread::scope(|s| {
        for (i, caller) in callers.iter().enumerate() {
            s.spawn(move || exercise(caller, &format!("c{i}")));
        }
    });
    // Every client's fact is confirmed through the same consumer at the end.
    let (_, high) = {
        let page = zone.curl(PEER).fetch("to-idmz", 100).json();
        (
            page.clone(),
            page["highWatermark"]
                .as_str()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0),
        )
    };
    assert_eq!(high, callers.len() as u64);
    let confirmer = Caller {
        zone: &zone,
        client,
        codec: "json",
        http: "2",
        gzip: false,
    };
    let confirmed = confirmer.call(
        PEER,
        BOUNDARY,
        "ConfirmReceipt",
        json!({"consumerName": "to-idmz", "offset": high.to_string()}),
    );
    assert_eq!(
        confirmed["ok"]["cursorAdvancedTo"],
        high.to_string(),
        "{confirmed}"
    );
}

#[test]
fn connect_node_client_over_http1_and_http2_proto_and_json_with_and_without_gzip() {
    matrix(ConnectClient::Node, &[false, true]);
}

#[test]
fn python_connectrpc_client_over_http1_and_http2_proto_and_json_with_and_without_gzip() {
    matrix(ConnectClient::Python, &[false, true]);
}
