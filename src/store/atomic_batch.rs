//! JetStream's atomic batch publish (ADR-50, nats-server 2.12+, streams with `allow_atomic`):
//! up to 1 000 messages stored together or not at all, committed as one write. Each message
//! keeps its own checks (`Nats-Expected-Last-Subject-Sequence`, against the stream as it was
//! before the batch); one failed check refuses the whole batch and nothing is stored.

use super::{StoreError, jetstream::unavailable};
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use std::time::Duration;

/// The server's limit on one batch.
pub(super) const MAX_MESSAGES: usize = 1000;

/// One message of a batch.
pub(super) struct Outbound {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Stored: the messages are at `last - count + 1 ..= last`, in order.
    Stored { last: u64 },
    /// Refused as a whole (nothing stored), with the server's reason.
    Refused(String),
}

#[derive(Deserialize)]
struct Ack {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    count: usize,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// Publishes `messages` (1 to [`MAX_MESSAGES`]) as one atomic batch: all but the last without
/// waiting, the last as the commit, whose acknowledgement says how the batch ended.
pub(super) async fn publish(
    client: &async_nats::Client,
    messages: Vec<Outbound>,
    timeout: Duration,
) -> Result<Outcome, StoreError> {
    let count = messages.len();
    if count == 0 || count > MAX_MESSAGES {
        return Err(StoreError::Unavailable(format!(
            "an atomic batch holds 1 to {MAX_MESSAGES} messages, not {count}"
        )));
    }
    let id = batch_id();
    let what = "publishing a page as one batch";
    let mut commit = None;
    for (i, mut message) in messages.into_iter().enumerate() {
        message.headers.insert("Nats-Batch-Id", id.as_str());
        message
            .headers
            .insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i + 1 == count {
            message.headers.insert("Nats-Batch-Commit", "1");
            commit = Some(message);
            break;
        }
        client
            .publish_with_headers(message.subject, message.headers, message.payload)
            .await
            .map_err(|e| unavailable(what, e))?;
    }
    let Some(commit) = commit else {
        return Err(StoreError::Unavailable(format!("{what}: no commit")));
    };
    let request = client.request_with_headers(commit.subject, commit.headers, commit.payload);
    let reply = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| StoreError::Unavailable(format!("{what}: no answer within {timeout:?}")))?
        .map_err(|e| unavailable(what, e))?;
    let ack: Ack = serde_json::from_slice(&reply.payload).map_err(|e| unavailable(what, e))?;
    if let Some(error) = ack.error {
        return Ok(Outcome::Refused(format!(
            "{} (error {})",
            error.description, error.err_code
        )));
    }
    if ack.batch != id || ack.count != count || ack.seq < count as u64 {
        return Err(StoreError::Unavailable(format!(
            "{what}: the acknowledgement does not match the batch (batch {:?}, count {}, seq {})",
            ack.batch, ack.count, ack.seq
        )));
    }
    Ok(Outcome::Stored { last: ack.seq })
}

/// 128 random bits in hex.
fn batch_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    hex::encode(bytes)
}
