//! A fast producer for volume tests: the node's own Connect client (binary codec, HTTP/2, mTLS)
//! appending many facts concurrently.

use bsfg::{
    config::TlsFiles,
    proto::{
        AppendFactRequest, AppendFactResponse, Envelope, Fact, PutObjectRequest, PutObjectResponse,
    },
    rpc::client::PeerClient,
};
use std::{path::Path, sync::Arc, time::Duration};

pub fn client(url: &str, node_identity: &str, pki_dir: &Path, ca: &Path, who: &str) -> PeerClient {
    let files = TlsFiles {
        certificate: pki_dir.join(format!("{who}.pem")),
        private_key: pki_dir.join(format!("{who}.key")),
        client_ca: ca.to_path_buf(),
        peer_ca: ca.to_path_buf(),
        crls: vec![],
        reload_interval: Duration::from_secs(5),
    };
    PeerClient::new(
        url,
        node_identity,
        files,
        ca.to_path_buf(),
        Duration::from_secs(30),
    )
    .expect("client")
}

pub fn fact(id: &str, from_zone: &str, object_json: String, media_type: &str) -> AppendFactRequest {
    AppendFactRequest {
        envelope: Some(Envelope {
            message_id: id.into(),
            from_zone: from_zone.into(),
            to_zone: "enterprise".into(),
            produced_at_unix_ms: 1_700_000_000_000,
            object_media_type: media_type.into(),
            correlation_id: format!("wf-{}", id.len()),
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: "batch:line-1/B-7".into(),
            predicate: "step_completed".into(),
            object_json,
        }),
        category: 0,
    }
}

/// Appends every request with `concurrency` calls in flight; panics on any failure.
pub fn append_all(client: PeerClient, requests: Vec<AppendFactRequest>, concurrency: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let client = Arc::new(client);
        let queue = Arc::new(tokio::sync::Mutex::new(requests.into_iter()));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let client = client.clone();
            let queue = queue.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.next();
                    let Some(request) = next else { break };
                    let reply: Result<AppendFactResponse, _> = client
                        .unary(
                            "/bsfg.v1.BoundaryService/AppendFact",
                            &request,
                            Duration::from_secs(30),
                        )
                        .await;
                    if let Err(e) = reply {
                        panic!("append failed: {e}");
                    }
                }
            }));
        }
        for w in workers {
            w.await.expect("worker");
        }
    });
}

pub fn put_object(
    client: &PeerClient,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
) -> PutObjectResponse {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let request = PutObjectRequest {
            bucket: bucket.into(),
            key: key.into(),
            data: data.into(),
            media_type: "application/pdf".into(),
        };
        client
            .unary(
                "/bsfg.v1.BoundaryService/PutObject",
                &request,
                Duration::from_secs(30),
            )
            .await
            .expect("put object")
    })
}
