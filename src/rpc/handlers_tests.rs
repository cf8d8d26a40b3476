//! Unit tests of the handlers on the in-memory store: authorization, validation order, caps and
//! artifact checks, without NATS or TLS.

use super::{
    Node,
    authz::Identity,
    error::Code,
    handlers::{self, CallContext},
};
use crate::{config::Config, proto::*, store::memory::MemoryStore};
use std::{path::Path, sync::Arc, time::Duration};

const CONFIG: &str = r#"
zone = "plant-a"
[listen]
address = "127.0.0.1:9443"
[tls]
certificate = "node.pem"
private_key = "node.key"
client_ca = "ca.pem"
[limits]
max_page = 5
max_request_bytes = 4096
max_fact_bytes = 1024
max_object_chunk_bytes = 1024
[[consumers]]
name = "to-idmz"
category = "operational"
max_ack_pending = 10
[[consumers]]
name = "small"
category = "operational"
max_ack_pending = 3
[[buckets]]
name = "batch-files"
[[access]]
identity = "mes"
append = ["operational"]
assert_zones = ["plant-a"]
put_objects = ["batch-files"]
[[access]]
identity = "idmz-bsfg"
fetch = ["to-idmz", "small"]
get_objects = ["batch-files"]
"#;

fn node() -> Node<MemoryStore> {
    let config = Config::parse(Path::new("test.toml"), CONFIG).expect("test config");
    Node {
        config: Arc::new(config),
        store: Arc::new(MemoryStore::default()),
        metrics: Default::default(),
    }
}

fn as_who(name: &str) -> CallContext {
    CallContext {
        identity: Identity {
            common_name: name.into(),
        },
        budget: Duration::from_secs(5),
    }
}

fn append_request(id: &str, object_json: &str) -> AppendFactRequest {
    AppendFactRequest {
        envelope: Some(Envelope {
            message_id: id.into(),
            from_zone: "plant-a".into(),
            to_zone: "idmz".into(),
            produced_at_unix_ms: 1,
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: "batch:B-1".into(),
            predicate: "step_completed".into(),
            object_json: object_json.into(),
        }),
        category: 0,
    }
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[test]
fn append_checks_identity_zone_and_content() {
    let node = node();
    run(async {
        let ok = handlers::append_fact(&node, as_who("mes"), append_request("m-1", "1")).await;
        assert_eq!(ok.map(|r| (r.offset, r.duplicate)), Ok((1, false)));
        let dup = handlers::append_fact(&node, as_who("mes"), append_request("m-1", "1")).await;
        assert_eq!(dup.map(|r| (r.offset, r.duplicate)), Ok((1, true)));
        let conflict =
            handlers::append_fact(&node, as_who("mes"), append_request("m-1", "2")).await;
        assert_eq!(conflict.map_err(|e| e.code), Err(Code::AlreadyExists));

        let peer =
            handlers::append_fact(&node, as_who("idmz-bsfg"), append_request("m-2", "1")).await;
        assert_eq!(peer.map_err(|e| e.code), Err(Code::PermissionDenied));
        let mut foreign = append_request("m-3", "1");
        if let Some(e) = foreign.envelope.as_mut() {
            e.from_zone = "enterprise".into();
        }
        let foreign = handlers::append_fact(&node, as_who("mes"), foreign).await;
        assert_eq!(foreign.map_err(|e| e.code), Err(Code::PermissionDenied));
        let audit = AppendFactRequest {
            category: Category::Audit as i32,
            ..append_request("m-4", "1")
        };
        let audit = handlers::append_fact(&node, as_who("mes"), audit).await;
        assert_eq!(audit.map_err(|e| e.code), Err(Code::PermissionDenied));
        let invalid = handlers::append_fact(
            &node,
            as_who("mes"),
            append_request("m-5", "{\"b\":1,\"a\":2}"),
        )
        .await;
        let invalid = invalid.err().map(|e| (e.code, e.message));
        assert_eq!(invalid.as_ref().map(|e| e.0), Some(Code::InvalidArgument));
        assert!(invalid.is_some_and(|e| e.1.contains("fact.object_json")));
    });
}

#[test]
fn fetch_is_capped_and_confirm_bounded_by_what_was_fetched() {
    let node = node();
    run(async {
        for i in 0..8 {
            handlers::append_fact(&node, as_who("mes"), append_request(&format!("f-{i}"), "1"))
                .await
                .expect("append");
        }
        let offsets =
            |page: &FetchFactsResponse| page.facts.iter().map(|f| f.offset).collect::<Vec<_>>();
        let small = FetchFactsRequest {
            consumer_name: "small".into(),
            limit: 100,
            max_wait_ms: 0,
        };
        let page = handlers::fetch_facts(&node, as_who("idmz-bsfg"), small)
            .await
            .expect("page");
        assert_eq!(offsets(&page), vec![1, 2, 3], "capped by max_ack_pending 3");
        let fetch = |limit| FetchFactsRequest {
            consumer_name: "to-idmz".into(),
            limit,
            max_wait_ms: 0,
        };
        let page = handlers::fetch_facts(&node, as_who("idmz-bsfg"), fetch(100))
            .await
            .expect("page");
        assert_eq!(
            offsets(&page),
            vec![1, 2, 3, 4, 5],
            "capped by the server's max_page 5"
        );
        assert_eq!(page.high_watermark, 8);
        let page = handlers::fetch_facts(&node, as_who("idmz-bsfg"), fetch(3))
            .await
            .expect("page");
        assert_eq!(offsets(&page), vec![1, 2, 3], "the caller's own limit");
        let zero = handlers::fetch_facts(&node, as_who("idmz-bsfg"), fetch(0)).await;
        assert_eq!(zero.map_err(|e| e.code).err(), Some(Code::InvalidArgument));
        let stranger = handlers::fetch_facts(&node, as_who("mes"), fetch(1)).await;
        assert_eq!(
            stranger.map_err(|e| e.code).err(),
            Some(Code::PermissionDenied)
        );
        let unknown = FetchFactsRequest {
            consumer_name: "nope".into(),
            limit: 1,
            max_wait_ms: 0,
        };
        let unknown = handlers::fetch_facts(&node, as_who("idmz-bsfg"), unknown).await;
        assert_eq!(unknown.map_err(|e| e.code).err(), Some(Code::NotFound));

        let confirm = |offset| ConfirmReceiptRequest {
            consumer_name: "to-idmz".into(),
            offset,
        };
        let beyond = handlers::confirm_receipt(&node, as_who("idmz-bsfg"), confirm(6)).await;
        assert_eq!(
            beyond.map_err(|e| e.code).err(),
            Some(Code::FailedPrecondition)
        );
        let moved = handlers::confirm_receipt(&node, as_who("idmz-bsfg"), confirm(3))
            .await
            .expect("confirm");
        assert_eq!(moved.cursor_advanced_to, 3);
        let next = handlers::fetch_facts(&node, as_who("idmz-bsfg"), fetch(100))
            .await
            .expect("page");
        assert_eq!(next.facts.first().map(|f| f.offset), Some(4));
    });
}

#[test]
fn pages_are_bounded_by_bytes_too() {
    let node = node();
    run(async {
        let big = format!("\"{}\"", "x".repeat(1000));
        for i in 0..5 {
            handlers::append_fact(
                &node,
                as_who("mes"),
                append_request(&format!("b-{i}"), &big),
            )
            .await
            .expect("append");
        }
        let page = handlers::fetch_facts(
            &node,
            as_who("idmz-bsfg"),
            FetchFactsRequest {
                consumer_name: "to-idmz".into(),
                limit: 5,
                max_wait_ms: 0,
            },
        )
        .await
        .expect("page");
        // Five ~1 KiB facts do not fit the 4096-byte response budget: the page stops at three,
        // the rest follow on the next page.
        assert_eq!(page.facts.len(), 3);
        assert!(
            page.facts
                .iter()
                .map(prost::Message::encoded_len)
                .sum::<usize>()
                <= 4096
        );
        // Only what the response carried counts as fetched (SPEC §4): confirming the fourth,
        // trimmed fact is refused, and the next page starts with it.
        let beyond = handlers::confirm_receipt(
            &node,
            as_who("idmz-bsfg"),
            ConfirmReceiptRequest {
                consumer_name: "to-idmz".into(),
                offset: 4,
            },
        )
        .await;
        assert_eq!(
            beyond.map_err(|e| e.code).err(),
            Some(Code::FailedPrecondition),
            "offset 4 was not carried by the response"
        );
        handlers::confirm_receipt(
            &node,
            as_who("idmz-bsfg"),
            ConfirmReceiptRequest {
                consumer_name: "to-idmz".into(),
                offset: 3,
            },
        )
        .await
        .expect("confirm what was carried");
        let next = handlers::fetch_facts(
            &node,
            as_who("idmz-bsfg"),
            FetchFactsRequest {
                consumer_name: "to-idmz".into(),
                limit: 5,
                max_wait_ms: 0,
            },
        )
        .await
        .expect("next page");
        let offsets: Vec<u64> = next.facts.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, vec![4, 5]);
    });
}

#[test]
fn objects_and_artifact_references() {
    let node = node();
    run(async {
        let put = PutObjectRequest {
            bucket: "batch-files".into(),
            key: "B-1/report.pdf".into(),
            data: bytes::Bytes::from_static(b"%PDF"),
            media_type: "application/pdf".into(),
        };
        let stored = handlers::put_object(&node, as_who("mes"), put.clone())
            .await
            .expect("put");
        let denied = handlers::put_object(&node, as_who("idmz-bsfg"), put.clone()).await;
        assert_eq!(
            denied.map_err(|e| e.code).err(),
            Some(Code::PermissionDenied)
        );
        let bad_key = PutObjectRequest {
            key: "../etc/passwd".into(),
            ..put.clone()
        };
        assert_eq!(
            handlers::put_object(&node, as_who("mes"), bad_key)
                .await
                .map_err(|e| e.code)
                .err(),
            Some(Code::InvalidArgument)
        );
        let no_bucket = PutObjectRequest {
            bucket: "nope".into(),
            ..put
        };
        assert_eq!(
            handlers::put_object(&node, as_who("mes"), no_bucket)
                .await
                .map_err(|e| e.code)
                .err(),
            Some(Code::NotFound)
        );

        let reference = |digest: &str, size: u64| {
            let mut r = append_request(
                &format!("a-{size}-{}", &digest[7..11]),
                &format!(
                    "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"B-1/report.pdf\",\"media_type\":\"application/pdf\",\"size\":{size}}}"
                ),
            );
            if let Some(e) = r.envelope.as_mut() {
                e.object_media_type = "application/pdf".into();
            }
            r
        };
        let good = handlers::append_fact(&node, as_who("mes"), reference(&stored.digest, 4)).await;
        assert!(good.is_ok(), "{good:?}");
        let wrong_size =
            handlers::append_fact(&node, as_who("mes"), reference(&stored.digest, 5)).await;
        assert_eq!(
            wrong_size.map_err(|e| e.code).err(),
            Some(Code::InvalidArgument)
        );

        let chunk = handlers::get_object(
            &node,
            as_who("idmz-bsfg"),
            GetObjectRequest {
                bucket: "batch-files".into(),
                key: "B-1/report.pdf".into(),
                offset: 1,
                limit_bytes: 2,
            },
        )
        .await
        .expect("get");
        assert_eq!(
            (chunk.data.as_ref(), chunk.eof, chunk.size),
            (b"PD".as_ref(), false, 4)
        );
    });
}
