//! Malformed input never hurts the node (SPEC §4: "no panic, no hang, no partial write on any
//! input"). A table of bad requests, each sent with curl over HTTP/2 and over HTTP/1.1, must get
//! the Connect status and code the protocol assigns; afterwards the stream holds exactly the facts
//! the valid calls appended and the node is still running. A second test holds connections open
//! in every slow way (TLS handshake, headers, body) and checks the node cuts them in time while it
//! keeps answering others.

mod common;

use base64::Engine;
use bsfg::proto::{AppendFactRequest, Envelope, Fact, FetchFactsRequest};
use common::{
    OPERATOR, PEER, PRODUCER, Zone, append_json,
    clients::{HttpReply, offsets},
};
use flate2::{Compression, write::GzEncoder};
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

const APPEND: &str = "/bsfg.v1.BoundaryService/AppendFact";
const FETCH: &str = "/bsfg.v1.BoundaryService/FetchFacts";
const CONFIRM: &str = "/bsfg.v1.BoundaryService/ConfirmReceipt";
const PUT: &str = "/bsfg.v1.BoundaryService/PutObject";
const GET_OBJECT: &str = "/bsfg.v1.ArtifactService/GetObject";

const JSON: &str = "content-type: application/json";
const PROTO: &str = "content-type: application/proto";

/// `max_request_bytes` of the test config.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The artifact stored before the table runs, so references and GetObject have a target.
const OBJECT_KEY: &str = "b-7/report.txt";
const OBJECT_DATA: &[u8] = b"hello";

/// Which HTTP version a pass of the table uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Http {
    H2,
    H1,
}

/// An extra check of a reply; Err says what is wrong.
type Check = fn(&HttpReply) -> Result<(), String>;

/// One malformed (or, for a few controls, valid) request and what the node must answer.
struct Case {
    name: &'static str,
    identity: &'static str,
    path: String,
    args: Vec<String>,
    body: Option<Vec<u8>>,
    status: u16,
    /// The Connect error code; "" for a success.
    code: &'static str,
    /// A substring the error message must contain (the field or byte position it names).
    message_has: Option<&'static str>,
    /// A response header the refusal must carry.
    header: Option<(&'static str, &'static str)>,
    /// Rows that only make sense on one HTTP version.
    only: Option<Http>,
    /// Extra check on the reply (for the success controls).
    check: Option<Check>,
}

impl Case {
    /// A request to `path` by the identity allowed to call it, with `args` and `body`.
    fn new(
        name: &'static str,
        path: impl Into<String>,
        args: &[&str],
        body: Option<Vec<u8>>,
    ) -> Case {
        let path = path.into();
        let identity =
            if path.starts_with(FETCH) || path.starts_with(CONFIRM) || path.starts_with(GET_OBJECT)
            {
                PEER
            } else if path.starts_with("/metrics") {
                OPERATOR
            } else {
                PRODUCER
            };
        Case {
            name,
            identity,
            path,
            args: args.iter().map(|a| a.to_string()).collect(),
            body,
            status: 0,
            code: "",
            message_has: None,
            header: None,
            only: None,
            check: None,
        }
    }

    /// POST with `content-type: application/json`.
    fn json(name: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
        Case::new(name, path, &["-H", JSON], Some(body.into()))
    }

    /// POST with `content-type: application/proto`.
    fn proto(name: &'static str, path: &str, body: Vec<u8>) -> Case {
        Case::new(name, path, &["-H", PROTO], Some(body))
    }

    /// AppendFact (JSON) of the valid request after `mutate` changed it.
    fn append(name: &'static str, mutate: impl FnOnce(&mut Value)) -> Case {
        Case::json(name, APPEND, append_with(mutate))
    }

    /// GET `path?query`.
    fn get(name: &'static str, path: &str, query: &str) -> Case {
        let full = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        Case::new(name, full, &[], None)
    }

    fn args(mut self, args: &[&str]) -> Case {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    fn expect(mut self, status: u16, code: &'static str) -> Case {
        self.status = status;
        self.code = code;
        self
    }

    fn message(mut self, needle: &'static str) -> Case {
        self.message_has = Some(needle);
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.header = Some((name, value));
        self
    }

    fn only(mut self, http: Http) -> Case {
        self.only = Some(http);
        self
    }

    fn check(mut self, check: Check) -> Case {
        self.check = Some(check);
        self
    }

    /// Sends the row; returns a description of every way the reply differs from the expectation.
    fn run(&self, zone: &Zone, http: Http) -> Result<(), String> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if http == Http::H1 {
            args.push("--http1.1");
        }
        let curl = zone.curl(self.identity);
        let mut reply = curl.request(&self.path, &args, self.body.as_deref());
        // curl 7.88 loses a complete HTTP/2 response when the server answers before the upload
        // ends and then resets the stream with NO_ERROR, as RFC 9113 §8.1 allows (curl issue
        // #22984): exit 92, no status. The node now reads a refused request's small body before
        // answering, which avoids it (0 resends in 3 runs); this guard stays for slow machines
        // and fails only if the loss persists.
        for _ in 0..10 {
            if !(http == Http::H2 && reply.status == 0 && reply.curl_exit == 92) {
                break;
            }
            eprintln!(
                "[{http:?}] {}: curl lost an early HTTP/2 reply; resending",
                self.name
            );
            reply = curl.request(&self.path, &args, self.body.as_deref());
        }
        let mut problems = Vec::new();
        let version = if http == Http::H1 {
            "HTTP/1.1 "
        } else {
            "HTTP/2 "
        };
        if !reply.headers.starts_with(version) {
            problems.push(format!("expected an {} reply", version.trim()));
        }
        if reply.status != self.status {
            problems.push(format!(
                "status {} instead of {}",
                reply.status, self.status
            ));
        }
        if reply.code() != self.code {
            problems.push(format!(
                "code {:?} instead of {:?}",
                reply.code(),
                self.code
            ));
        }
        if !self.code.is_empty() {
            let message = reply.json()["message"].as_str().unwrap_or("").to_string();
            if message.is_empty() {
                problems.push("the error has no message".into());
            }
            if let Some(needle) = self.message_has
                && !message.contains(needle)
            {
                problems.push(format!("the message does not name {needle:?}"));
            }
            if reply.header("content-type").as_deref() != Some("application/json") {
                problems.push("the error body is not application/json".into());
            }
        }
        if let Some((name, value)) = self.header
            && reply.header(name).as_deref() != Some(value)
        {
            problems.push(format!(
                "header {name} is {:?}, not {value:?}",
                reply.header(name)
            ));
        }
        if let Some(check) = self.check
            && let Err(e) = check(&reply)
        {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "[{http:?}] {}: {}\n    reply: status {} curl exit {} body {}\n    headers: {}\n    stderr: {}",
                self.name,
                problems.join("; "),
                reply.status,
                reply.curl_exit,
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(400)
                    .collect::<String>(),
                reply.headers.trim().replace("\r\n", " | "),
                reply.stderr.trim(),
            ))
        }
    }
}

/// The valid AppendFact request in proto3 JSON, changed by `mutate`.
fn append_with(mutate: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut request: Value =
        serde_json::from_str(&append_json("bad-input-x", "plant-a", "{\"n\":0}"))
            .expect("valid JSON");
    mutate(&mut request);
    request.to_string().into_bytes()
}

/// The valid AppendFact request in binary proto, changed by `mutate`.
fn append_proto(mutate: impl FnOnce(&mut AppendFactRequest)) -> Vec<u8> {
    let mut request = AppendFactRequest {
        envelope: Some(Envelope {
            message_id: "bad-input-p".into(),
            from_zone: "plant-a".into(),
            to_zone: "enterprise".into(),
            produced_at_unix_ms: 1_700_000_000_000,
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: "batch:line-1/B-7".into(),
            predicate: "step_completed".into(),
            object_json: "{\"n\":0}".into(),
        }),
        category: 0,
    };
    mutate(&mut request);
    request.encode_to_vec()
}

/// An AppendFact that references an artifact: `object_media_type` set and `reference` (already
/// canonical) as object_json.
fn artifact_ref(name: &'static str, reference: String) -> Case {
    Case::append(name, move |r| {
        r["envelope"]["objectMediaType"] = json!("text/plain");
        r["fact"]["objectJson"] = json!(reference);
    })
}

/// A canonical artifact reference with the given fields.
fn reference(bucket: &str, key: &str, digest: &str, size: u64) -> String {
    format!(
        "{{\"bucket\":\"{bucket}\",\"digest\":\"{digest}\",\"key\":\"{key}\",\"media_type\":\"text/plain\",\"size\":{size}}}"
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

fn percent(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn fetch_json(consumer: &str, limit: u64) -> String {
    json!({"consumerName": consumer, "limit": limit}).to_string()
}

/// A FetchFacts page of the 3 facts appended before the table.
fn three_facts(reply: &HttpReply) -> Result<(), String> {
    if offsets(reply) == vec![1, 2, 3] && reply.json()["highWatermark"] == "3" {
        Ok(())
    } else {
        Err(format!(
            "expected offsets 1..=3 and highWatermark 3, got {:?}",
            reply.json()
        ))
    }
}

/// The table. Each row states what it proves.
fn cases() -> Vec<Case> {
    let digest = sha256(OBJECT_DATA);
    // A gzip bomb: about 2 KiB on the wire, 2 MiB once inflated (limit 1 MiB).
    let bomb = gzip(&vec![b' '; 2 * MAX_REQUEST_BYTES]);
    assert!(bomb.len() < 16 * 1024, "the bomb must be small on the wire");
    // 1 MiB + 1 byte, over the limit as sent.
    let oversize = {
        let mut body = append_with(|_| {});
        body.resize(MAX_REQUEST_BYTES + 1, b' ');
        body
    };
    let valid_fetch = fetch_json("to-idmz", 100);
    vec![
        // ---- Routing: unknown paths are Connect `unimplemented` with HTTP 404.
        Case::json("unknown method of a known service", "/bsfg.v1.BoundaryService/DeleteFact", "{}")
            .expect(404, "unimplemented"),
        Case::json("unknown service", "/bsfg.v1.NopeService/AppendFact", "{}").expect(404, "unimplemented"),
        Case::get("GET on the root path", "/", "").expect(404, "unimplemented"),
        Case::json("method name in the wrong case", "/bsfg.v1.BoundaryService/appendfact", "{}")
            .expect(404, "unimplemented"),
        // ---- HTTP methods: 405 with code unknown and an Allow header.
        Case::json("PUT on AppendFact", APPEND, append_with(|_| {}))
            .args(&["-X", "PUT"])
            .expect(405, "unknown")
            .header("allow", "POST"),
        Case::json("DELETE on FetchFacts", FETCH, valid_fetch.clone())
            .args(&["-X", "DELETE"])
            .expect(405, "unknown")
            .header("allow", "GET, POST"),
        Case::get(
            "GET on AppendFact (has side effects)",
            APPEND,
            &format!("encoding=json&message={}", percent(&String::from_utf8_lossy(&append_with(|_| {})))),
        )
        .expect(405, "unknown")
        .header("allow", "POST"),
        Case::get("GET on ConfirmReceipt (not side-effect free)", CONFIRM, "encoding=json&message=%7B%7D")
            .expect(405, "unknown")
            .header("allow", "POST"),
        Case::new("POST on /metrics", "/metrics", &[], Some(b"x".to_vec()))
            .expect(405, "unknown")
            .header("allow", "GET"),
        // ---- Content types: 415 with code unknown.
        Case::new("text/plain body", APPEND, &["-H", "content-type: text/plain"], Some(append_with(|_| {})))
            .expect(415, "unknown"),
        Case::new("no content type at all", APPEND, &["-H", "content-type:"], Some(append_with(|_| {})))
            .expect(415, "unknown"),
        Case::new(
            "JSON in a charset other than UTF-8",
            APPEND,
            &["-H", "content-type: application/json; charset=latin1"],
            Some(append_with(|_| {})),
        )
        .expect(415, "unknown"),
        // (application/grpc… is gRPC or gRPC-Web now: tests/grpc_clients.rs.)
        Case::new("protobuf under another media type", APPEND, &["-H", "content-type: application/x-protobuf"], Some(append_proto(|_| {})))
            .expect(415, "unknown"),
        // ---- Content encodings: unknown is 501 unimplemented with Accept-Encoding; bad gzip is
        // invalid_argument; a body over 1 MiB, as sent or inflated, is resource_exhausted.
        Case::json("brotli body", APPEND, append_with(|_| {}))
            .args(&["-H", "content-encoding: br"])
            .expect(501, "unimplemented")
            .header("accept-encoding", "gzip, identity"),
        Case::json("body claiming gzip that is not gzip", APPEND, b"{\"not\":\"gzip\"}".to_vec())
            .args(&["-H", "content-encoding: gzip"])
            .expect(400, "invalid_argument"),
        Case::json("truncated gzip", APPEND, gzip(&append_with(|_| {}))[..20].to_vec())
            .args(&["-H", "content-encoding: gzip"])
            .expect(400, "invalid_argument"),
        Case::json("gzip bomb: small on the wire, 2 MiB inflated", APPEND, bomb.clone())
            .args(&["-H", "content-encoding: gzip"])
            .expect(429, "resource_exhausted"),
        Case::proto("gzip bomb as proto on FetchFacts", FETCH, bomb)
            .args(&["-H", "content-encoding: gzip"])
            .expect(429, "resource_exhausted"),
        // Over HTTP/2 curl 7.88 cannot read this early answer (see `Case::run`);
        // `oversize_body_over_http2` checks it with Node's HTTP/2 client.
        Case::json("body of 1 MiB + 1 byte", APPEND, oversize.clone())
            .only(Http::H1)
            .expect(429, "resource_exhausted"),
        Case::json("chunked body of 1 MiB + 1 byte (no Content-Length)", APPEND, oversize)
            .args(&["-H", "transfer-encoding: chunked"])
            .only(Http::H1)
            .expect(429, "resource_exhausted"),
        // Control: a gzipped valid request works, so the refusals above are about the bodies.
        Case::json("control: gzipped FetchFacts", FETCH, gzip(valid_fetch.as_bytes()))
            .args(&["-H", "content-encoding: gzip"])
            .expect(200, "")
            .check(three_facts),
        // ---- Connect headers.
        Case::json("Connect-Protocol-Version 2", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-protocol-version: 2"])
            .expect(400, "invalid_argument")
            .message("Connect-Protocol-Version"),
        Case::json("Connect-Protocol-Version empty", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-protocol-version;"])
            .expect(400, "invalid_argument"),
        Case::json("Connect-Timeout-Ms not digits", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-timeout-ms: soon"])
            .expect(400, "invalid_argument")
            .message("Connect-Timeout-Ms"),
        Case::json("Connect-Timeout-Ms zero", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-timeout-ms: 0"])
            .expect(400, "invalid_argument"),
        Case::json("Connect-Timeout-Ms of 11 digits", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-timeout-ms: 12345678901"])
            .expect(400, "invalid_argument"),
        Case::json("Connect-Timeout-Ms negative", FETCH, valid_fetch.clone())
            .args(&["-H", "connect-timeout-ms: -5"])
            .expect(400, "invalid_argument"),
        Case::json("Connect-Timeout-Ms fractional", APPEND, append_with(|_| {}))
            .args(&["-H", "connect-timeout-ms: 1.5"])
            .expect(400, "invalid_argument"),
        // ---- GET (FetchFacts and GetObject only): every query parameter checked.
        Case::get("GET without a query", FETCH, "").expect(400, "invalid_argument"),
        Case::get("GET without message", FETCH, "encoding=json&connect=v1").expect(400, "invalid_argument"),
        Case::get("GET without encoding", FETCH, &format!("message={}", percent(&valid_fetch)))
            .expect(400, "invalid_argument"),
        Case::get("GET with encoding=xml", FETCH, &format!("encoding=xml&message={}", percent(&valid_fetch)))
            .expect(400, "invalid_argument"),
        Case::get("GET with connect=v2", FETCH, &format!("connect=v2&encoding=json&message={}", percent(&valid_fetch)))
            .expect(400, "invalid_argument"),
        Case::get("GET with invalid base64", FETCH, "encoding=json&base64=1&message=%25%25%25")
            .expect(400, "invalid_argument"),
        Case::get(
            "GET with compression=br",
            FETCH,
            &format!("encoding=json&compression=br&message={}", percent(&valid_fetch)),
        )
        .expect(501, "unimplemented"),
        Case::get(
            "GET with compression=gzip on plain bytes",
            FETCH,
            &format!("encoding=json&compression=gzip&message={}", percent(&valid_fetch)),
        )
        .expect(400, "invalid_argument"),
        Case::get("GET with a message of the wrong JSON type", FETCH, "encoding=json&message=%5B1%2C2%5D")
            .expect(400, "invalid_argument"),
        Case::get("GET with a proto message that is garbage", FETCH, "encoding=proto&base64=1&message=_____w")
            .expect(400, "invalid_argument"),
        // Controls: GET works with JSON and with base64 proto.
        Case::get("control: GET FetchFacts, JSON", FETCH, &format!("connect=v1&encoding=json&message={}", percent(&valid_fetch)))
            .expect(200, "")
            .check(three_facts),
        Case::get(
            "control: GET FetchFacts, base64 proto",
            FETCH,
            &format!(
                "encoding=proto&base64=1&message={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                    FetchFactsRequest { consumer_name: "to-idmz".into(), limit: 100, max_wait_ms: 0 }.encode_to_vec()
                )
            ),
        )
        .args(&["-H", "accept: application/proto"])
        .expect(200, ""),
        // ---- Messages that do not decode: invalid_argument.
        Case::proto("proto with a truncated length-delimited field", APPEND, b"\x0a\x05ab".to_vec())
            .expect(400, "invalid_argument"),
        Case::proto("proto of 0xff bytes", FETCH, vec![0xff; 16]).expect(400, "invalid_argument"),
        Case::proto("proto with a wrong wire type for a string", FETCH, b"\x08\x01".to_vec())
            .expect(400, "invalid_argument"),
        Case::json("truncated JSON", APPEND, b"{\"envelope\":".to_vec()).expect(400, "invalid_argument"),
        Case::json("JSON array instead of an object", APPEND, b"[1,2,3]".to_vec()).expect(400, "invalid_argument"),
        Case::json("empty JSON body", APPEND, Vec::new()).expect(400, "invalid_argument"),
        Case::append("envelope is a string", |r| r["envelope"] = json!("plant-a")).expect(400, "invalid_argument"),
        Case::append("producedAtUnixMs is a boolean", |r| r["envelope"]["producedAtUnixMs"] = json!(true))
            .expect(400, "invalid_argument"),
        Case::append("labels is a list", |r| r["envelope"]["labels"] = json!(["a"])).expect(400, "invalid_argument"),
        Case::json("FetchFacts limit is a word", FETCH, b"{\"consumerName\":\"to-idmz\",\"limit\":\"many\"}".to_vec())
            .expect(400, "invalid_argument"),
        Case::json("FetchFacts limit negative", FETCH, b"{\"consumerName\":\"to-idmz\",\"limit\":-1}".to_vec())
            .expect(400, "invalid_argument"),
        Case::json("consumerName is a number", FETCH, b"{\"consumerName\":5,\"limit\":1}".to_vec())
            .expect(400, "invalid_argument"),
        // (Unknown JSON fields are accepted and ignored, for mixed versions: tests/mixed_versions.rs.)
        Case::append("unknown category name", |r| r["category"] = json!("CATEGORY_GOSSIP")).expect(400, "invalid_argument"),
        // ---- Field rules: invalid_argument naming the field.
        Case::proto("empty proto body (no envelope)", APPEND, Vec::new())
            .expect(400, "invalid_argument")
            .message("envelope"),
        Case::append("missing envelope", |r| {
            r.as_object_mut().map(|o| o.remove("envelope"));
        })
        .expect(400, "invalid_argument")
        .message("envelope"),
        Case::append("missing fact", |r| {
            r.as_object_mut().map(|o| o.remove("fact"));
        })
        .expect(400, "invalid_argument")
        .message("fact"),
        Case::proto("category 99 (binary proto)", APPEND, append_proto(|r| r.category = 99))
            .expect(400, "invalid_argument")
            .message("category"),
        Case::append("empty message_id", |r| r["envelope"]["messageId"] = json!(""))
            .expect(400, "invalid_argument")
            .message("envelope.message_id"),
        Case::append("message_id with a control character", |r| r["envelope"]["messageId"] = json!("m\u{7}1"))
            .expect(400, "invalid_argument")
            .message("envelope.message_id"),
        Case::append("message_id of 257 bytes", |r| r["envelope"]["messageId"] = json!("m".repeat(257)))
            .expect(400, "invalid_argument")
            .message("envelope.message_id"),
        Case::append("from_zone with a capital and a space", |r| r["envelope"]["fromZone"] = json!("Plant A"))
            .expect(400, "invalid_argument")
            .message("envelope.from_zone"),
        Case::append("empty to_zone", |r| r["envelope"]["toZone"] = json!(""))
            .expect(400, "invalid_argument")
            .message("envelope.to_zone"),
        Case::append("produced_at zero", |r| r["envelope"]["producedAtUnixMs"] = json!("0"))
            .expect(400, "invalid_argument")
            .message("envelope.produced_at_unix_ms"),
        Case::append("label key with a space", |r| r["envelope"]["labels"] = json!({"bad key": "v"}))
            .expect(400, "invalid_argument")
            .message("envelope.labels"),
        Case::append("object_media_type not a media type", |r| r["envelope"]["objectMediaType"] = json!("pdf"))
            .expect(400, "invalid_argument")
            .message("envelope.object_media_type"),
        Case::append("subject kind with a capital", |r| r["fact"]["subject"] = json!("Batch:B-7"))
            .expect(400, "invalid_argument")
            .message("fact.subject"),
        Case::append("subject without a kind", |r| r["fact"]["subject"] = json!("B-7"))
            .expect(400, "invalid_argument")
            .message("fact.subject"),
        Case::append("subject id with a space", |r| r["fact"]["subject"] = json!("batch:B 7"))
            .expect(400, "invalid_argument")
            .message("fact.subject"),
        Case::append("predicate in CamelCase", |r| r["fact"]["predicate"] = json!("StepCompleted"))
            .expect(400, "invalid_argument")
            .message("fact.predicate"),
        Case::append("predicate with a double underscore", |r| r["fact"]["predicate"] = json!("step__done"))
            .expect(400, "invalid_argument")
            .message("fact.predicate"),
        // ---- object_json must be canonical JSON; the message names the byte position.
        Case::append("object_json with whitespace", |r| r["fact"]["objectJson"] = json!("{ \"n\":1}"))
            .expect(400, "invalid_argument")
            .message("at byte 1"),
        Case::append("object_json with unsorted keys", |r| r["fact"]["objectJson"] = json!("{\"b\":1,\"a\":2}"))
            .expect(400, "invalid_argument")
            .message("at byte 2"),
        Case::append("object_json 1.0", |r| r["fact"]["objectJson"] = json!("1.0"))
            .expect(400, "invalid_argument")
            .message("at byte 1"),
        Case::append("object_json with an unneeded escape", |r| r["fact"]["objectJson"] = json!("\"\\u0041\""))
            .expect(400, "invalid_argument")
            .message("at byte 1"),
        Case::append("object_json with a duplicate key", |r| r["fact"]["objectJson"] = json!("{\"a\":1,\"a\":1}"))
            .expect(400, "invalid_argument")
            .message("fact.object_json"),
        Case::append("object_json not JSON", |r| r["fact"]["objectJson"] = json!("{\"n\":"))
            .expect(400, "invalid_argument")
            .message("fact.object_json"),
        Case::append("object_json empty", |r| r["fact"]["objectJson"] = json!(""))
            .expect(400, "invalid_argument")
            .message("fact.object_json"),
        Case::append("object_json over max_fact_bytes (64 KiB)", |r| {
            r["fact"]["objectJson"] = json!(format!("\"{}\"", "x".repeat(70_000)))
        })
        .expect(400, "invalid_argument")
        .message("fact.object_json"),
        // ---- Artifact references: checked against the Object Store before anything is written.
        artifact_ref("reference to a missing object", reference("batch-files", "b-7/missing.txt", &digest, 5))
            .expect(404, "not_found"),
        artifact_ref("reference with the wrong digest", reference("batch-files", OBJECT_KEY, &sha256(b"other"), 5))
            .expect(400, "invalid_argument"),
        artifact_ref("reference with the wrong size", reference("batch-files", OBJECT_KEY, &digest, 6))
            .expect(400, "invalid_argument"),
        artifact_ref("reference to an undeclared bucket", reference("nope-files", OBJECT_KEY, &digest, 5))
            .expect(404, "not_found"),
        artifact_ref("reference with a malformed digest", reference("batch-files", OBJECT_KEY, "md5:00", 5))
            .expect(400, "invalid_argument")
            .message("digest"),
        artifact_ref("reference missing its keys", "{\"bucket\":\"batch-files\"}".to_string())
            .expect(400, "invalid_argument")
            .message("fact.object_json"),
        // ---- Idempotency: same message_id, other content: already_exists, nothing written.
        Case::json("conflicting duplicate of fact 1", APPEND, append_json("bad-input-1", "plant-a", "{\"n\":99}"))
            .expect(409, "already_exists"),
        // ---- FetchFacts / ConfirmReceipt.
        Case::json("FetchFacts limit 0", FETCH, fetch_json("to-idmz", 0)).expect(400, "invalid_argument"),
        Case::json("FetchFacts limit u32::MAX is capped", FETCH, fetch_json("to-idmz", u64::from(u32::MAX)))
            .expect(200, "")
            .check(|reply| {
                let n = offsets(reply).len();
                if n > 50 {
                    return Err(format!("{n} facts on a page capped at 50"));
                }
                three_facts(reply)
            }),
        Case::json("FetchFacts limit above u32", FETCH, fetch_json("to-idmz", 1 << 32)).expect(400, "invalid_argument"),
        Case::json("FetchFacts unknown consumer", FETCH, fetch_json("nobody", 1)).expect(404, "not_found"),
        Case::json("FetchFacts empty consumer", FETCH, fetch_json("", 1)).expect(400, "invalid_argument"),
        Case::json("ConfirmReceipt beyond what was fetched", CONFIRM, "{\"consumerName\":\"to-idmz\",\"offset\":\"99\"}")
            .expect(400, "failed_precondition"),
        Case::json("ConfirmReceipt unknown consumer", CONFIRM, "{\"consumerName\":\"nobody\",\"offset\":\"1\"}")
            .expect(404, "not_found"),
        // ---- Objects.
        Case::json(
            "GetObject offset beyond the size",
            GET_OBJECT,
            json!({"bucket": "batch-files", "key": OBJECT_KEY, "offset": "6"}).to_string(),
        )
        .expect(400, "out_of_range"),
        Case::json("GetObject unknown bucket", GET_OBJECT, json!({"bucket": "nope-files", "key": OBJECT_KEY}).to_string())
            .expect(404, "not_found"),
        Case::json("GetObject missing key", GET_OBJECT, json!({"bucket": "batch-files", "key": "b-7/none"}).to_string())
            .expect(404, "not_found"),
        Case::json("GetObject key escaping upwards", GET_OBJECT, json!({"bucket": "batch-files", "key": "../etc"}).to_string())
            .expect(400, "invalid_argument"),
        Case::json(
            "PutObject media type not a media type",
            PUT,
            json!({"bucket": "batch-files", "key": "b-7/x", "data": "eA==", "mediaType": "text"}).to_string(),
        )
        .expect(400, "invalid_argument"),
        Case::json(
            "PutObject other bytes under an existing key",
            PUT,
            json!({"bucket": "batch-files", "key": OBJECT_KEY, "data": "b3RoZXI=", "mediaType": "text/plain"}).to_string(),
        )
        .expect(409, "already_exists"),
        Case::json(
            "PutObject data not base64",
            PUT,
            json!({"bucket": "batch-files", "key": "b-7/y", "data": "!!!", "mediaType": "text/plain"}).to_string(),
        )
        .expect(400, "invalid_argument"),
    ]
}

/// The Node.js HTTP/2 client, which reads a response that arrives before its upload ends.
const NODE_H2_POST: &str = r#"
import http2 from 'node:http2';
import fs from 'node:fs';
const [url, ca, cert, key, path, contentType, bodyFile] = process.argv.slice(1);
const body = fs.readFileSync(bodyFile);
const client = http2.connect(url, {
  ca: fs.readFileSync(ca), cert: fs.readFileSync(cert), key: fs.readFileSync(key),
});
const done = (result) => { console.log(JSON.stringify(result)); process.exit(0); };
setTimeout(() => done({ error: 'no answer within 20 s' }), 20000);
client.on('error', (e) => done({ error: e.message }));
const req = client.request({
  ':method': 'POST', ':path': path, 'content-type': contentType,
  'content-length': String(body.length),
});
let status = 0;
const chunks = [];
req.on('response', (headers) => { status = headers[':status']; });
req.on('data', (d) => chunks.push(d));
req.on('error', () => {});
const finish = () => done({ status, body: Buffer.concat(chunks).toString(), rstCode: req.rstCode });
req.on('end', finish);
req.on('close', finish);
req.end(body);
"#;

/// POSTs `body` to `path` over HTTP/2 as `identity` with Node's client; its one-line JSON answer:
/// `{status, body, rstCode}` or `{error}`.
fn node_h2_post(zone: &Zone, identity: &str, path: &str, content_type: &str, body: &[u8]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, body).expect("write body");
    let output = std::process::Command::new("node")
        .arg("--input-type=module")
        .arg("-e")
        .arg(NODE_H2_POST)
        .arg(zone.url())
        .arg(&zone.pki.ca_path)
        .arg(zone.pki.dir.join(format!("{identity}.pem")))
        .arg(zone.pki.dir.join(format!("{identity}.key")))
        .arg(path)
        .arg(content_type)
        .arg(&body_file)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "node printed no JSON: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The JetStream view of the four category streams and the Object Store bucket's stream:
/// (stream, messages, last sequence).
fn stream_states(zone: &Zone) -> Vec<(String, u64, u64)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let mut out = Vec::new();
        for name in [
            "facts_operational",
            "facts_audit",
            "facts_documents",
            "facts_telemetry",
            "OBJ_batch-files",
        ] {
            let state = match js.get_stream(name).await {
                Ok(mut stream) => {
                    let info = stream.info().await.expect("stream info");
                    (info.state.messages, info.state.last_sequence)
                }
                Err(_) => (0, 0),
            };
            out.push((name.to_string(), state.0, state.1));
        }
        out
    })
}

#[test]
fn malformed_requests_are_refused_and_change_nothing() {
    let started = Instant::now();
    let mut zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    for i in 1..=3 {
        let reply = mes.append(&append_json(
            &format!("bad-input-{i}"),
            "plant-a",
            &format!("{{\"n\":{i}}}"),
        ));
        assert_eq!(reply.status, 200, "valid append {i}: {reply:?}");
        assert_eq!(reply.json()["offset"], i.to_string());
    }
    let put = mes.post_json(
        PUT,
        &json!({
            "bucket": "batch-files",
            "key": OBJECT_KEY,
            "data": base64::engine::general_purpose::STANDARD.encode(OBJECT_DATA),
            "mediaType": "text/plain",
        })
        .to_string(),
    );
    assert_eq!(put.status, 200, "PutObject: {put:?}");
    assert_eq!(put.json()["digest"], sha256(OBJECT_DATA));

    let peer = zone.curl(PEER);
    let before = peer.fetch("to-idmz", 100);
    assert_eq!(three_facts(&before), Ok(()));
    let streams_before = stream_states(&zone);

    let cases = cases();
    let mut failures = Vec::new();
    let mut sent = 0;
    for case in &cases {
        for http in [Http::H2, Http::H1] {
            if case.only.is_some_and(|only| only != http) {
                continue;
            }
            sent += 1;
            if let Err(failure) = case.run(&zone, http) {
                eprintln!("FAILED {failure}");
                failures.push(failure);
            }
        }
    }
    eprintln!(
        "{} rows, {sent} requests, {} failed, {:.1} s",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );

    // A body over the limit, over HTTP/2: refused from its Content-Length before it is read.
    let mut oversize = append_with(|_| {});
    oversize.resize(MAX_REQUEST_BYTES + 1, b' ');
    let h2 = node_h2_post(&zone, PRODUCER, APPEND, "application/json", &oversize);
    let h2_body: Value =
        serde_json::from_str(h2["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
    if h2["status"] != 429 || h2_body["code"] != "resource_exhausted" {
        let failure = format!("[H2] body of 1 MiB + 1 byte (Node client): {h2}");
        eprintln!("FAILED {failure}");
        failures.push(failure);
    }

    // Nothing was written: the same page, byte for byte, and the same JetStream state.
    let after = peer.fetch("to-idmz", 100);
    assert_eq!(three_facts(&after), Ok(()));
    assert_eq!(after.json(), before.json(), "the page changed");
    assert_eq!(
        stream_states(&zone),
        streams_before,
        "a stream or the Object Store changed"
    );
    assert_eq!(streams_before[0], ("facts_operational".to_string(), 3, 3));
    assert!(
        streams_before[4].1 >= 2,
        "the Object Store holds the artifact (info and a chunk): {streams_before:?}"
    );
    assert!(
        zone.node.is_running(),
        "the node died:\n{}",
        zone.node.log()
    );
    assert!(
        !zone.node.log_contains("panicked"),
        "the node panicked:\n{}",
        zone.node.log()
    );
    assert!(cases.len() >= 30);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Slow clients.

/// A TLS 1.3 client with `name`'s certificate, speaking HTTP/1.1 by ALPN.
fn tls_connector(zone: &Zone, name: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&zone.pki.ca_path).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let chain = CertificateDer::pem_file_iter(zone.pki.dir.join(format!("{name}.pem")))
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM");
    let key =
        PrivateKeyDer::from_pem_file(zone.pki.dir.join(format!("{name}.key"))).expect("key PEM");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Reads until the peer closes (or errors), for at most `limit`; returns what came and when the
/// read ended, or None if it was still open at `limit`.
async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> Option<(Vec<u8>, Instant)> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| (received, Instant::now()))
}

/// The node bounds every slow client by its timeouts (header_timeout and body_timeout are 2 s in
/// the test config) and serves other callers meanwhile.
#[test]
fn slow_clients_are_cut_off_and_others_are_served_meanwhile() {
    use tokio::io::AsyncWriteExt;
    let mut zone = Zone::start();
    let addr = format!("127.0.0.1:{}", zone.port);
    let server_name = rustls_pki_types::ServerName::try_from("localhost").expect("server name");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let peer = zone.curl(PEER);

    // 1. The body stalls after 11 of 1000 announced bytes: 504 deadline_exceeded after ~2 s,
    //    while another caller is served at once.
    let (reply, started, answered, other) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let mut tls = tls_connector(&zone, PRODUCER)
            .connect(server_name.clone(), tcp)
            .await
            .expect("TLS handshake");
        let started = Instant::now();
        tls.write_all(
            b"POST /bsfg.v1.BoundaryService/AppendFact HTTP/1.1\r\nhost: localhost\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"envelope\"",
        )
        .await
        .expect("send headers");
        tls.flush().await.expect("flush");
        let peer = peer.clone();
        let other = tokio::task::spawn_blocking(move || {
            let reply = peer.fetch("to-idmz", 1);
            (reply, Instant::now())
        });
        let (reply, answered) = read_until_closed(&mut tls, Duration::from_secs(10))
            .await
            .expect("the stalled connection was neither answered nor closed within 10 s");
        (reply, started, answered, other.await.expect("other call"))
    });
    let text = String::from_utf8_lossy(&reply);
    let waited = answered - started;
    eprintln!("stalled body answered after {waited:?}: {text:?}");
    assert!(
        text.starts_with("HTTP/1.1 504"),
        "expected a 504 for the stalled body: {text:?}"
    );
    assert!(text.contains("deadline_exceeded"), "{text:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "the stalled body must be cut near body_timeout (2 s), not after {waited:?}"
    );
    let (other_reply, other_done) = other;
    assert_eq!(
        other_reply.status, 200,
        "another caller during the stall: {other_reply:?}"
    );
    assert!(
        other_done < answered,
        "the other call waited for the stalled one"
    );

    // 2. The headers stall half-way: the connection is closed near header_timeout.
    let waited = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let mut tls = tls_connector(&zone, PRODUCER)
            .connect(server_name.clone(), tcp)
            .await
            .expect("TLS handshake");
        let started = Instant::now();
        tls.write_all(b"POST /bsfg.v1.BoundaryService/AppendFact HTTP/1.1\r\nhost: local")
            .await
            .expect("send part of the headers");
        tls.flush().await.expect("flush");
        let (_, closed) = read_until_closed(&mut tls, Duration::from_secs(10))
            .await
            .expect("stalled headers were not cut within 10 s");
        closed - started
    });
    eprintln!("stalled headers cut after {waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "stalled headers cut after {waited:?}"
    );

    // 3. The TLS handshake never starts: the connection is closed near header_timeout and the
    //    failure is counted with reason "timeout".
    let waited = runtime.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(10))
            .await
            .expect("a silent TCP connection was not closed within 10 s");
        closed - started
    });
    eprintln!("silent TCP connection closed after {waited:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "silent connection closed after {waited:?}"
    );
    let metrics = zone.curl(OPERATOR).request("/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("bsfg_tls_handshake_failures_total{reason=\"timeout\"}")
            && !l.ends_with(" 0")),
        "handshake timeout not counted:\n{metrics}"
    );

    // 4. HTTP/2 with curl trickling a 200 KB body at 1 KB/s: cut well before curl's 10 s.
    let mut body = append_with(|_| {});
    body.resize(200_000, b' ');
    let started = Instant::now();
    let slow = zone.curl(PRODUCER).request(
        APPEND,
        &["-H", JSON, "--limit-rate", "1K", "--max-time", "10"],
        Some(&body),
    );
    let waited = started.elapsed();
    eprintln!(
        "trickled HTTP/2 body: status {} curl exit {} after {waited:?}",
        slow.status, slow.curl_exit
    );
    assert!(
        waited < Duration::from_secs(8),
        "the trickled body was not cut: {waited:?}"
    );
    assert!(slow.status == 504 || slow.curl_exit != 0, "{slow:?}");
    assert_ne!(slow.status, 200);

    // Still serving, nothing written, no panic.
    let after = peer.fetch("to-idmz", 100);
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(
        offsets(&after),
        Vec::<u64>::new(),
        "a stalled append was written"
    );
    assert!(
        zone.node.is_running(),
        "the node died:\n{}",
        zone.node.log()
    );
    assert!(!zone.node.log_contains("panicked"), "{}", zone.node.log());
}
