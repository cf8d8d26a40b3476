//! Identity and authorization (SPEC §5): plaintext, TLS 1.2, a missing, expired, not yet valid or
//! wrong-CA client certificate never get an HTTP exchange and are counted by reason; a valid
//! certificate only gets what the access policy grants it, and a refusal names the identity in
//! the answer and in the log. After every refused call the node still serves `mes`, and at the
//! end the streams hold exactly what the valid calls appended.

mod common;

use base64::Engine;
use common::{
    OPERATOR, PEER, PRODUCER, Pki, STRANGER, Zone, append_json,
    clients::{Curl, HttpReply, offsets},
};
use serde_json::json;
use std::collections::BTreeMap;
use time::OffsetDateTime;

const APPEND: &str = "/bsfg.v1.BoundaryService/AppendFact";
const FETCH: &str = "/bsfg.v1.BoundaryService/FetchFacts";
const CONFIRM: &str = "/bsfg.v1.BoundaryService/ConfirmReceipt";
const PUT: &str = "/bsfg.v1.BoundaryService/PutObject";
const GET_OBJECT: &str = "/bsfg.v1.ArtifactService/GetObject";

/// The valid appends made so far, in order; each proves the node still serves.
struct Valid {
    ids: Vec<String>,
}

impl Valid {
    /// `mes` appends a new fact; it must be stored at the next offset.
    fn append(&mut self, zone: &Zone, after: &str) {
        let id = format!("authz-{}", self.ids.len() + 1);
        let reply = zone
            .curl(PRODUCER)
            .append(&append_json(&id, "plant-a", "{\"ok\":true}"));
        assert_eq!(
            reply.status, 200,
            "a valid append after {after:?} failed: {reply:?}"
        );
        assert_eq!(
            reply.json()["offset"],
            (self.ids.len() + 1).to_string(),
            "after {after:?}: {:?}",
            reply.json()
        );
        self.ids.push(id);
    }

    /// The peer's page holds exactly the valid appends, and JetStream agrees: only the
    /// operational stream has facts, as many as were appended.
    fn assert_only_these_were_stored(&self, zone: &Zone) {
        let page = zone.curl(PEER).fetch("to-idmz", 100);
        assert_eq!(page.status, 200, "{page:?}");
        let ids = common::clients::message_ids(&page);
        assert_eq!(
            ids, self.ids,
            "the page holds other facts than the valid appends"
        );
        assert_eq!(
            offsets(&page),
            (1..=self.ids.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(page.json()["highWatermark"], self.ids.len().to_string());
        let n = self.ids.len() as u64;
        assert_eq!(
            stream_messages(zone),
            vec![
                ("facts_audit".to_string(), 0),
                ("facts_documents".to_string(), 0),
                ("facts_operational".to_string(), n),
                ("facts_telemetry".to_string(), 0),
            ]
        );
    }
}

/// Messages per category stream, as JetStream reports them.
fn stream_messages(zone: &Zone) -> Vec<(String, u64)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let mut out = Vec::new();
        for name in [
            "facts_audit",
            "facts_documents",
            "facts_operational",
            "facts_telemetry",
        ] {
            let messages = match js.get_stream(name).await {
                Ok(mut stream) => stream.info().await.expect("stream info").state.messages,
                Err(_) => 0,
            };
            out.push((name.to_string(), messages));
        }
        out
    })
}

/// The operator's view of `/metrics`.
fn metrics(zone: &Zone) -> String {
    let reply = zone.curl(OPERATOR).request("/metrics", &[], None);
    assert_eq!(reply.status, 200, "ops GET /metrics: {reply:?}");
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// `bsfg_tls_handshake_failures_total` by reason.
fn tls_failures(zone: &Zone) -> BTreeMap<String, u64> {
    metrics(zone)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("bsfg_tls_handshake_failures_total{reason=\"")?;
            let (reason, count) = rest.split_once("\"} ")?;
            Some((reason.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of `bsfg_rpc_requests_total{...,code="permission_denied"}` over all methods.
fn permission_denied_count(zone: &Zone) -> u64 {
    metrics(zone)
        .lines()
        .filter(|l| {
            l.starts_with("bsfg_rpc_requests_total{") && l.contains("code=\"permission_denied\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn curl_with(zone: &Zone, cert: &std::path::Path, key: &std::path::Path) -> Curl {
    Curl {
        base: zone.url(),
        ca: zone.pki.ca_path.clone(),
        cert: Some(cert.to_path_buf()),
        key: Some(key.to_path_buf()),
        extra: Vec::new(),
    }
}

fn describe(reply: &HttpReply) -> String {
    format!(
        "status {} curl exit {} stderr {:?} body {:?}",
        reply.status,
        reply.curl_exit,
        reply.stderr.trim(),
        String::from_utf8_lossy(&reply.body)
    )
}

/// A connection the TLS layer must refuse before any HTTP exchange.
struct TlsCase {
    name: &'static str,
    curl: Curl,
    /// The `reason` label the failure must be counted under (from `tls::failure_reason`).
    reason: &'static str,
}

#[test]
fn connections_without_a_valid_tls13_client_certificate_are_refused_and_counted() {
    let mut zone = Zone::start();
    let mut valid = Valid { ids: Vec::new() };
    valid.append(&zone, "start");

    let other_ca = Pki::new(&zone.dir.path().join("other-ca"), "another estate's CA");
    let foreign = other_ca.issue(PRODUCER);
    let expired = zone.pki.issue_expired(PRODUCER);
    let not_yet = zone.pki.issue_valid(
        PRODUCER,
        OffsetDateTime::now_utc() + time::Duration::days(2),
        30,
    );
    let mes = zone.curl(PRODUCER);
    let cases = vec![
        // The client presents no certificate at all.
        TlsCase {
            name: "no client certificate",
            curl: Curl {
                cert: None,
                key: None,
                ..mes.clone()
            },
            reason: "no_client_certificate",
        },
        // A certificate named `mes`, but issued by another CA: identity is not just a CN.
        TlsCase {
            name: "client certificate from another CA",
            curl: curl_with(&zone, &foreign.cert, &foreign.key),
            reason: "unknown_ca",
        },
        // `mes`, from the right CA, expired yesterday.
        TlsCase {
            name: "expired client certificate",
            curl: curl_with(&zone, &expired.cert, &expired.key),
            reason: "expired",
        },
        // `mes`, from the right CA, valid only from the day after tomorrow.
        TlsCase {
            name: "client certificate not yet valid",
            curl: curl_with(&zone, &not_yet.cert, &not_yet.key),
            reason: "not_yet_valid",
        },
        // A valid certificate, but the client offers at most TLS 1.2.
        TlsCase {
            name: "TLS 1.2 only",
            curl: mes.clone().with_args(&["--tls-max", "1.2"]),
            reason: "protocol_version",
        },
        // Plaintext HTTP to the TLS port.
        TlsCase {
            name: "plaintext HTTP",
            curl: Curl {
                base: format!("http://127.0.0.1:{}", zone.port),
                ..mes.clone()
            },
            reason: "protocol",
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let before = tls_failures(&zone);
        for http in [&[][..], &["--http1.1"][..]] {
            let reply = case.curl.request(
                APPEND,
                &[&["-H", "content-type: application/json"], http].concat(),
                Some(append_json("tls-refused", "plant-a", "{\"n\":1}").as_bytes()),
            );
            eprintln!("{} {http:?}: {}", case.name, describe(&reply));
            // No HTTP exchange at all: curl itself fails and saw no status line.
            if reply.status != 0 || reply.curl_exit == 0 {
                failures.push(format!(
                    "{} {http:?}: expected a TLS failure, got {}",
                    case.name,
                    describe(&reply)
                ));
            }
        }
        let after = tls_failures(&zone);
        let counted = after.get(case.reason).copied().unwrap_or(0)
            - before.get(case.reason).copied().unwrap_or(0);
        if counted != 2 {
            failures.push(format!(
                "{}: expected 2 more handshake failures with reason {:?}; before {before:?}, after {after:?}",
                case.name, case.reason
            ));
        }
        valid.append(&zone, case.name);
    }

    let counts = tls_failures(&zone);
    eprintln!("bsfg_tls_handshake_failures_total: {counts:?}");
    for reason in ["no_client_certificate", "unknown_ca", "expired"] {
        if counts.get(reason).copied().unwrap_or(0) == 0 {
            failures.push(format!(
                "metrics show no handshake failure with reason {reason:?}: {counts:?}"
            ));
        }
    }
    assert!(
        zone.node.log_contains("TLS handshake refused"),
        "refused handshakes are not logged:\n{}",
        zone.node.log()
    );
    valid.assert_only_these_were_stored(&zone);
    assert!(zone.node.is_running(), "{}", zone.node.log());
    assert!(!zone.node.log_contains("panicked"), "{}", zone.node.log());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A call by a valid identity that the access policy does not allow.
struct Denied {
    name: &'static str,
    identity: &'static str,
    path: &'static str,
    /// JSON request; None for GET without a message (`/metrics`).
    body: Option<String>,
    /// Sent with GET (`?encoding=json&message=`), as FetchFacts and GetObject allow.
    get: bool,
    /// What the refusal message must name besides the identity.
    names: &'static str,
}

fn denied(
    name: &'static str,
    identity: &'static str,
    path: &'static str,
    body: serde_json::Value,
    names: &'static str,
) -> Denied {
    Denied {
        name,
        identity,
        path,
        body: Some(body.to_string()),
        get: false,
        names,
    }
}

fn append_body(from_zone: &str, category: &str) -> serde_json::Value {
    let mut body: serde_json::Value =
        serde_json::from_str(&append_json("authz-denied", from_zone, "{\"n\":1}"))
            .expect("valid JSON");
    body["category"] = json!(category);
    body
}

fn fetch_body(consumer: &str) -> serde_json::Value {
    json!({"consumerName": consumer, "limit": 10})
}

fn confirm_body(consumer: &str) -> serde_json::Value {
    json!({"consumerName": consumer, "offset": "1"})
}

fn get_object_body(bucket: &str) -> serde_json::Value {
    json!({"bucket": bucket, "key": "b-7/report.txt"})
}

fn put_object_body(bucket: &str) -> serde_json::Value {
    json!({
        "bucket": bucket,
        "key": "b-7/denied.txt",
        "data": base64::engine::general_purpose::STANDARD.encode(b"denied"),
        "mediaType": "text/plain",
    })
}

fn metrics_get(name: &'static str, identity: &'static str, names: &'static str) -> Denied {
    Denied {
        name,
        identity,
        path: "/metrics",
        body: None,
        get: true,
        names,
    }
}

impl Denied {
    fn via_get(mut self) -> Denied {
        self.get = true;
        self
    }

    fn send(&self, zone: &Zone) -> HttpReply {
        let curl = zone.curl(self.identity);
        match (&self.body, self.get) {
            (Some(body), true) => {
                let message =
                    percent_encoding::utf8_percent_encode(body, percent_encoding::NON_ALPHANUMERIC);
                curl.request(
                    &format!("{}?connect=v1&encoding=json&message={message}", self.path),
                    &[],
                    None,
                )
            }
            (Some(body), false) => curl.post_json(self.path, body),
            (None, _) => curl.request(self.path, &[], None),
        }
    }
}

#[test]
fn identities_get_only_what_the_policy_grants() {
    let mut zone = Zone::start();
    let mut valid = Valid { ids: Vec::new() };
    valid.append(&zone, "start");
    // Objects in both buckets, so a GetObject refusal is about the grant, not a missing key.
    for bucket in ["batch-files", "document-files"] {
        let put = zone.curl(PRODUCER).post_json(
            PUT,
            &json!({
                "bucket": bucket,
                "key": "b-7/report.txt",
                "data": base64::engine::general_purpose::STANDARD.encode(b"report"),
                "mediaType": "text/plain",
            })
            .to_string(),
        );
        assert_eq!(put.status, 200, "PutObject into {bucket}: {put:?}");
    }
    // Controls: what is granted works.
    let granted = zone
        .curl(PEER)
        .post_json(GET_OBJECT, &get_object_body("batch-files").to_string());
    assert_eq!(
        granted.status, 200,
        "idmz-bsfg reads batch-files: {granted:?}"
    );
    let ops_metrics = zone.curl(OPERATOR).request("/metrics", &[], None);
    assert_eq!(ops_metrics.status, 200, "ops GET /metrics: {ops_metrics:?}");
    assert!(String::from_utf8_lossy(&ops_metrics.body).contains("bsfg_append_requests_total"));
    let denied_before = permission_denied_count(&zone);

    let cases = vec![
        // A valid certificate from the estate's CA, but not in this node's policy: nothing.
        denied(
            "stranger appends",
            STRANGER,
            APPEND,
            append_body("plant-a", "CATEGORY_OPERATIONAL"),
            "policy",
        ),
        denied(
            "stranger fetches",
            STRANGER,
            FETCH,
            fetch_body("to-idmz"),
            "policy",
        ),
        denied(
            "stranger fetches with GET",
            STRANGER,
            FETCH,
            fetch_body("to-idmz"),
            "policy",
        )
        .via_get(),
        denied(
            "stranger confirms",
            STRANGER,
            CONFIRM,
            confirm_body("to-idmz"),
            "policy",
        ),
        denied(
            "stranger puts an object",
            STRANGER,
            PUT,
            put_object_body("batch-files"),
            "policy",
        ),
        denied(
            "stranger reads an object",
            STRANGER,
            GET_OBJECT,
            get_object_body("batch-files"),
            "policy",
        ),
        metrics_get("stranger reads /metrics", STRANGER, "policy"),
        // The producer may assert only its own zone.
        denied(
            "mes asserts from_zone enterprise",
            PRODUCER,
            APPEND,
            append_body("enterprise", "CATEGORY_OPERATIONAL"),
            "enterprise",
        ),
        denied(
            "mes asserts from_zone idmz in audit",
            PRODUCER,
            APPEND,
            append_body("idmz", "CATEGORY_AUDIT"),
            "idmz",
        ),
        // The producer may not read what it wrote: no consumer, no GetObject.
        denied(
            "mes fetches to-idmz",
            PRODUCER,
            FETCH,
            fetch_body("to-idmz"),
            "to-idmz",
        ),
        denied(
            "mes fetches to-idmz with GET",
            PRODUCER,
            FETCH,
            fetch_body("to-idmz"),
            "to-idmz",
        )
        .via_get(),
        denied(
            "mes confirms to-idmz",
            PRODUCER,
            CONFIRM,
            confirm_body("to-idmz"),
            "to-idmz",
        ),
        denied(
            "mes reads batch-files",
            PRODUCER,
            GET_OBJECT,
            get_object_body("batch-files"),
            "batch-files",
        ),
        // The peer has exactly one consumer and one bucket.
        denied(
            "idmz-bsfg fetches audit-to-idmz (declared, not granted)",
            PEER,
            FETCH,
            fetch_body("audit-to-idmz"),
            "audit-to-idmz",
        ),
        denied(
            "idmz-bsfg confirms audit-to-idmz",
            PEER,
            CONFIRM,
            confirm_body("audit-to-idmz"),
            "audit-to-idmz",
        ),
        denied(
            "idmz-bsfg reads document-files",
            PEER,
            GET_OBJECT,
            get_object_body("document-files"),
            "document-files",
        ),
        denied(
            "idmz-bsfg reads document-files with GET",
            PEER,
            GET_OBJECT,
            get_object_body("document-files"),
            "document-files",
        )
        .via_get(),
        denied(
            "idmz-bsfg appends",
            PEER,
            APPEND,
            append_body("plant-a", "CATEGORY_OPERATIONAL"),
            "operational",
        ),
        denied(
            "idmz-bsfg puts into batch-files",
            PEER,
            PUT,
            put_object_body("batch-files"),
            "batch-files",
        ),
        // The operator reads metrics, and nothing else.
        denied(
            "ops appends",
            OPERATOR,
            APPEND,
            append_body("plant-a", "CATEGORY_OPERATIONAL"),
            "operational",
        ),
        denied(
            "ops fetches to-idmz",
            OPERATOR,
            FETCH,
            fetch_body("to-idmz"),
            "to-idmz",
        ),
        // Metrics are for operators only.
        metrics_get("mes reads /metrics", PRODUCER, "operator"),
        metrics_get("idmz-bsfg reads /metrics", PEER, "operator"),
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let reply = case.send(&zone);
        let message = reply.json()["message"].as_str().unwrap_or("").to_string();
        let mut problems = Vec::new();
        if reply.status != 403 || reply.code() != "permission_denied" {
            problems.push("expected 403 permission_denied".to_string());
        }
        if !message.contains(&format!("{:?}", case.identity)) {
            problems.push(format!("the message does not name {:?}", case.identity));
        }
        if !message.contains(case.names) {
            problems.push(format!("the message does not name {:?}", case.names));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}; got status {} body {}",
                case.name,
                problems.join("; "),
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        valid.append(&zone, case.name);
    }

    // Every refusal is counted, logged with the identity, and wrote nothing.
    let counted = permission_denied_count(&zone) - denied_before;
    if counted != cases.len() as u64 {
        failures.push(format!(
            "{counted} permission_denied calls counted in bsfg_rpc_requests_total, expected {}",
            cases.len()
        ));
    }
    let log = zone.node.log();
    for identity in [STRANGER, PRODUCER, PEER, OPERATOR] {
        if !log
            .lines()
            .any(|l| l.contains("permission denied") && l.contains(identity))
        {
            failures.push(format!(
                "no \"permission denied\" log line names {identity:?}"
            ));
        }
    }
    let unwritten = zone.curl(PRODUCER).post_json(
        PUT,
        &json!({
            "bucket": "batch-files",
            "key": "b-7/denied.txt",
            "data": base64::engine::general_purpose::STANDARD.encode(b"other"),
            "mediaType": "text/plain",
        })
        .to_string(),
    );
    assert_eq!(
        unwritten.status, 200,
        "the refused PutObject left an object behind: {unwritten:?}"
    );
    valid.assert_only_these_were_stored(&zone);
    assert!(zone.node.is_running(), "{}", zone.node.log());
    assert!(!zone.node.log_contains("panicked"), "{}", zone.node.log());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
