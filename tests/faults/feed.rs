//! A producer that outlives its own node: facts (some referencing artifacts) appended one at a
//! time in a background thread, each call retried with the same message_id until the node
//! answers — so a source killed mid-call still ends up with every fact exactly once.

use crate::common::producer;
use bsfg::proto::{AppendFactResponse, PutObjectRequest, PutObjectResponse};
use sha2::{Digest, Sha256};
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// What to produce and how fast.
#[derive(Clone)]
pub struct Plan {
    /// Node URL, its identity, the estate PKI directory and CA, and the producer identity.
    pub url: String,
    pub node_identity: String,
    pub pki_dir: PathBuf,
    pub ca: PathBuf,
    pub who: String,
    pub from_zone: String,
    pub total: u64,
    /// Every n-th fact references an artifact put just before it.
    pub artifact_every: u64,
    /// Facts appended back to back, then `pause`.
    pub batch: u64,
    pub pause: Duration,
    /// Bytes of filler in each fact's object, to make pages large.
    pub padding: usize,
    /// Give up (panic) when the whole feed takes longer.
    pub deadline: Duration,
}

#[derive(Default)]
pub struct Progress {
    pub appended: AtomicU64,
    /// Calls that failed and were retried.
    pub retries: AtomicU64,
    /// Appends answered `duplicate = true`: a retry whose first attempt had been stored.
    pub duplicates: AtomicU64,
}

pub fn message_id(i: u64) -> String {
    format!("evt-{i:05}")
}

pub fn artifact_key(i: u64) -> String {
    format!("B-{i}/report.pdf")
}

/// The artifact of fact `i`: 20–160 KB, distinct per fact.
pub fn artifact_bytes(i: u64) -> Vec<u8> {
    format!("report {i} ")
        .repeat(2_000 + (i as usize * 37) % 12_000)
        .into_bytes()
}

pub fn is_artifact(plan: &Plan, i: u64) -> bool {
    plan.artifact_every > 0 && i % plan.artifact_every == plan.artifact_every / 2
}

/// Errors a healthy node never answers, whatever the faults: stop at once.
fn fatal(e: &bsfg::rpc::client::ClientError) -> bool {
    matches!(
        e.code(),
        Some("already_exists" | "invalid_argument" | "permission_denied" | "not_found")
    )
}

/// The running feed; dropping it stops the thread (between calls).
pub struct Feed {
    pub progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Feed {
    pub fn start(plan: Plan) -> Feed {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let progress = progress.clone();
            let stop = stop.clone();
            std::thread::spawn(move || run(plan, progress, stop))
        };
        Feed {
            progress,
            stop,
            handle: Some(handle),
        }
    }

    pub fn appended(&self) -> u64 {
        self.progress.appended.load(Ordering::SeqCst)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the feed; re-raises its panic.
    pub fn join(&mut self) {
        if let Some(handle) = self.handle.take()
            && let Err(panic) = handle.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run(plan: Plan, progress: Arc<Progress>, stop: Arc<AtomicBool>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = producer::client(
        &plan.url,
        &plan.node_identity,
        &plan.pki_dir,
        &plan.ca,
        &plan.who,
    );
    let start = Instant::now();
    let call_timeout = Duration::from_secs(8);
    runtime.block_on(async {
        for i in 0..plan.total {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let id = message_id(i);
            let request = if is_artifact(&plan, i) {
                let data = artifact_bytes(i);
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
                let put = PutObjectRequest {
                    bucket: "batch-files".into(),
                    key: artifact_key(i),
                    data: data.clone().into(),
                    media_type: "application/pdf".into(),
                };
                let stored: PutObjectResponse = loop {
                    match client
                        .unary("/bsfg.v1.BoundaryService/PutObject", &put, call_timeout)
                        .await
                    {
                        Ok(reply) => break reply,
                        Err(e) if fatal(&e) => panic!("PutObject {} refused: {e}", put.key),
                        Err(_) if stop.load(Ordering::SeqCst) => return,
                        Err(e) => {
                            progress.retries.fetch_add(1, Ordering::SeqCst);
                            assert!(
                                start.elapsed() < plan.deadline,
                                "feed: PutObject {} still failing after {:?}: {e}",
                                put.key,
                                plan.deadline
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                assert_eq!(stored.digest, digest, "digest of {}", put.key);
                let reference = format!(
                    "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"{}\",\"media_type\":\"application/pdf\",\"size\":{}}}",
                    put.key,
                    data.len()
                );
                producer::fact(&id, &plan.from_zone, reference, "application/pdf")
            } else {
                let filler = "x".repeat(plan.padding);
                producer::fact(
                    &id,
                    &plan.from_zone,
                    format!("{{\"filler\":\"{filler}\",\"n\":{i}}}"),
                    "",
                )
            };
            loop {
                let reply: Result<AppendFactResponse, _> = client
                    .unary(
                        "/bsfg.v1.BoundaryService/AppendFact",
                        &request,
                        call_timeout,
                    )
                    .await;
                match reply {
                    Ok(reply) => {
                        if reply.duplicate {
                            progress.duplicates.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    Err(e) if fatal(&e) => panic!("AppendFact {id} refused: {e}"),
                    Err(_) if stop.load(Ordering::SeqCst) => return,
                    Err(e) => {
                        progress.retries.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            start.elapsed() < plan.deadline,
                            "feed: AppendFact {id} still failing after {:?}: {e}",
                            plan.deadline
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            progress.appended.store(i + 1, Ordering::SeqCst);
            if plan.batch > 0 && (i + 1) % plan.batch == 0 {
                tokio::time::sleep(plan.pause).await;
            }
        }
    });
}
