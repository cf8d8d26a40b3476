//! JetStream's batch direct get (ADR-31, nats-server 2.11+; the streams have `allow_direct`):
//! many stored messages for one request, sent to an inbox and ended by an end-of-batch status.
//! A page of facts is read with one (`range`), and a page's idempotency lookups in a category
//! are one (`last_for`), instead of one request per fact.

use super::{StoreError, jetstream::unavailable};
use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;
use serde::Serialize;
use std::time::Duration;

/// The server's limits on one request.
pub(super) const MAX_BATCH: usize = 1000;
pub(super) const MAX_SUBJECTS: usize = 1024;

#[derive(Serialize)]
struct RangeRequest {
    seq: u64,
    batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes: Option<usize>,
}

#[derive(Serialize)]
struct LastForRequest<'a> {
    multi_last: &'a [String],
    batch: usize,
}

/// Up to `batch` (at most [`MAX_BATCH`]) messages of `stream` from sequence `from` on, in
/// order, stopping early past about `max_bytes` of payload when given. Deleted sequences are
/// skipped by the server: the caller checks the sequences.
pub(super) async fn range(
    client: &async_nats::Client,
    prefix: &str,
    stream: &str,
    from: u64,
    batch: usize,
    max_bytes: Option<usize>,
    timeout: Duration,
) -> Result<Vec<StreamMessage>, StoreError> {
    let request = RangeRequest {
        seq: from,
        batch: batch.clamp(1, MAX_BATCH),
        max_bytes,
    };
    get(client, prefix, stream, &request, timeout).await
}

/// The last message of each subject matching `filters` (at most [`MAX_SUBJECTS`]; wildcards
/// allowed), in no particular order; subjects with no message are simply absent.
pub(super) async fn last_for(
    client: &async_nats::Client,
    prefix: &str,
    stream: &str,
    filters: &[String],
    timeout: Duration,
) -> Result<Vec<StreamMessage>, StoreError> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let request = LastForRequest {
        multi_last: filters,
        batch: filters.len().min(MAX_BATCH),
    };
    get(client, prefix, stream, &request, timeout).await
}

async fn get(
    client: &async_nats::Client,
    prefix: &str,
    stream: &str,
    request: &impl Serialize,
    timeout: Duration,
) -> Result<Vec<StreamMessage>, StoreError> {
    let what = format!("batch read of {stream}");
    let body = serde_json::to_vec(request).map_err(|e| unavailable(&what, e))?;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(&what, e))?;
    client
        .publish_with_reply(format!("{prefix}.DIRECT.GET.{stream}"), inbox, body.into())
        .await
        .map_err(|e| unavailable(&what, e))?;
    let read = async {
        let mut messages = Vec::new();
        while let Some(reply) = replies.next().await {
            if ends_batch(&reply, &what)? {
                return Ok(messages);
            }
            let message = StreamMessage::try_from(reply).map_err(|e| unavailable(&what, e))?;
            messages.push(message);
        }
        Err(StoreError::Unavailable(format!(
            "{what}: the reply stream ended before its end of batch"
        )))
    };
    let result = tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "{what}: no end of batch within {timeout:?}"
            )))
        });
    let _ = replies.unsubscribe().await;
    result
}

/// Whether a reply ends the batch: the end-of-batch status (204 EOB), or "nothing matched"
/// (404). Any other status is an error; a stored message has no status.
fn ends_batch(reply: &async_nats::Message, what: &str) -> Result<bool, StoreError> {
    match reply.status.map(|code| code.as_u16()) {
        None => Ok(false),
        Some(204 | 404) => Ok(true),
        Some(code) => Err(StoreError::Unavailable(format!(
            "{what}: status {code} {}",
            reply.description.as_deref().unwrap_or("")
        ))),
    }
}
