//! One handler per RPC: authorize the caller, validate the request, call the store, shape the
//! answer. Handlers see decoded messages and an [`Identity`], never HTTP.

use super::{
    Node,
    authz::Identity,
    error::{Code, RpcError},
};
use crate::{
    config::ConsumerSpec,
    fact::{self, parse_artifact_ref, validate_append},
    proto::*,
    store::{NewFact, Store},
};
use std::time::Duration;

/// What a handler knows about the call besides its message.
pub struct CallContext {
    pub identity: Identity,
    /// Time left before the call's deadline.
    pub budget: Duration,
}

fn consumer<'a, S>(node: &'a Node<S>, name: &str) -> Result<&'a ConsumerSpec, RpcError> {
    if name.is_empty() {
        return Err(RpcError::invalid("consumer_name is required"));
    }
    node.config.consumers.get(name).ok_or_else(|| {
        RpcError::new(
            Code::NotFound,
            format!("no consumer named {name:?} is declared on this node"),
        )
    })
}

fn bucket_and_key<S>(node: &Node<S>, bucket: &str, key: &str) -> Result<(), RpcError> {
    if !node.config.buckets.contains_key(bucket) {
        return Err(RpcError::new(
            Code::NotFound,
            format!("no bucket named {bucket:?} is declared on this node"),
        ));
    }
    let key_ok = (1..=256).contains(&key.len())
        && !key.starts_with(['/', '.'])
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/=-".contains(&b));
    if !key_ok {
        return Err(RpcError::invalid(format!(
            "key {key:?} must be 1-256 characters of A-Z, a-z, 0-9, '.', '_', '/', '=' and '-', not starting with '/' or '.'"
        )));
    }
    Ok(())
}

pub async fn append_fact<S: Store>(
    node: &Node<S>,
    call: CallContext,
    request: AppendFactRequest,
) -> Result<AppendFactResponse, RpcError> {
    let (category, envelope, fact) = validate_append(&request, node.config.limits.max_fact_bytes)?;
    node.config
        .access
        .may_append(&call.identity, category, &envelope.from_zone)?;
    if !envelope.object_media_type.is_empty() {
        check_artifact(node, &fact.object_json, &envelope.object_media_type).await?;
    }
    let appended = node
        .store
        .append(NewFact {
            category,
            envelope,
            fact,
            content_hash: fact::content_hash(envelope, fact),
        })
        .await?;
    Ok(AppendFactResponse {
        offset: appended.offset,
        duplicate: appended.duplicate,
    })
}

/// A referenced artifact must already be stored, with the stated digest and size.
async fn check_artifact<S: Store>(
    node: &Node<S>,
    object_json: &str,
    media_type: &str,
) -> Result<(), RpcError> {
    let reference = parse_artifact_ref(object_json, media_type)?;
    bucket_and_key(node, &reference.bucket, &reference.key)?;
    let stored = node
        .store
        .object_info(&reference.bucket, &reference.key)
        .await?
        .ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!(
                    "the referenced artifact {:?} is not stored in bucket {:?}; PutObject it before appending the fact",
                    reference.key, reference.bucket
                ),
            )
        })?;
    if stored.digest != reference.digest || stored.size != reference.size {
        return Err(RpcError::invalid(format!(
            "the reference says {} ({} bytes) but the stored artifact {:?} is {} ({} bytes)",
            reference.digest, reference.size, reference.key, stored.digest, stored.size
        )));
    }
    Ok(())
}

pub async fn fetch_facts<S: Store>(
    node: &Node<S>,
    call: CallContext,
    request: FetchFactsRequest,
) -> Result<FetchFactsResponse, RpcError> {
    let spec = consumer(node, &request.consumer_name)?;
    node.config.access.may_fetch(&call.identity, &spec.name)?;
    if request.limit == 0 {
        return Err(RpcError::invalid("limit must be at least 1"));
    }
    let limit = request
        .limit
        .min(node.config.limits.max_page)
        .min(spec.max_ack_pending);
    // Leave time to answer before the caller's deadline.
    let wait = Duration::from_millis(u64::from(request.max_wait_ms))
        .min(node.config.limits.max_wait)
        .min(call.budget.saturating_sub(Duration::from_millis(500)));
    // The store bounds the page to the response budget and counts as fetched only what it
    // returns: the whole page goes out, or a confirm could pass facts never delivered.
    let budget = node.config.limits.max_request_bytes;
    let page = node.store.fetch(spec, limit, budget, wait).await?;
    let facts = page.facts;
    Ok(FetchFactsResponse {
        facts,
        high_watermark: page.high_watermark,
    })
}

pub async fn confirm_receipt<S: Store>(
    node: &Node<S>,
    call: CallContext,
    request: ConfirmReceiptRequest,
) -> Result<ConfirmReceiptResponse, RpcError> {
    let spec = consumer(node, &request.consumer_name)?;
    node.config.access.may_fetch(&call.identity, &spec.name)?;
    let cursor = node.store.confirm(spec, request.offset).await?;
    Ok(ConfirmReceiptResponse {
        cursor_advanced_to: cursor,
    })
}

pub async fn put_object<S: Store>(
    node: &Node<S>,
    call: CallContext,
    request: PutObjectRequest,
) -> Result<PutObjectResponse, RpcError> {
    bucket_and_key(node, &request.bucket, &request.key)?;
    node.config
        .access
        .may_put(&call.identity, &request.bucket)?;
    if !fact::is_media_type(&request.media_type) {
        return Err(RpcError::invalid(format!(
            "media_type {:?} must be a media type such as application/pdf",
            request.media_type
        )));
    }
    let info = node
        .store
        .put_object(
            &request.bucket,
            &request.key,
            &request.media_type,
            request.data,
        )
        .await?;
    Ok(PutObjectResponse {
        bucket: info.bucket,
        key: info.key,
        digest: info.digest,
        size: info.size,
    })
}

pub async fn get_object<S: Store>(
    node: &Node<S>,
    call: CallContext,
    request: GetObjectRequest,
) -> Result<GetObjectResponse, RpcError> {
    bucket_and_key(node, &request.bucket, &request.key)?;
    node.config
        .access
        .may_get(&call.identity, &request.bucket)?;
    let max = node.config.limits.max_object_chunk_bytes;
    let limit = if request.limit_bytes == 0 {
        max
    } else {
        request.limit_bytes.min(max)
    };
    let chunk = node
        .store
        .get_object(
            &request.bucket,
            &request.key,
            request.offset,
            limit as usize,
        )
        .await?;
    Ok(GetObjectResponse {
        digest: chunk.info.digest,
        size: chunk.info.size,
        media_type: chunk.info.media_type,
        data: chunk.data,
        eof: chunk.eof,
    })
}
