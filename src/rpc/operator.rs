//! The operator's door (`bsfg.v1.OperatorService`): on the boundary listener, for identities
//! granted the operation in `[[access]] operate`. Every call — allowed or refused — is an audit
//! fact in this zone (`operator_call`: who, which operation, the outcome), so reading an
//! appliance leaves a trace as surely as changing it. An allowed call whose record cannot be
//! written fails (`unavailable`): no untraced operator access.

use super::{
    Node,
    error::{Code, RpcError},
    handlers::CallContext,
};
use crate::{
    config::Operation,
    fact::{Category, jcs},
    ops::{
        skip_gap::{SkipGapRequest as SkipGapAsk, Skipped, check_text, skip},
        status,
    },
    proto::{
        AppendFactRequest, Envelope, Fact, GetStatusRequest, GetStatusResponse, SkipGapRequest,
        SkipGapResponse,
    },
    replicate::status::now_unix_ms,
    store::{Store, audit::record_audit},
};
use ring::rand::{SecureRandom, SystemRandom};

/// `GetStatus`: what `bsfg status` shows.
pub async fn get_status<S: Store>(
    node: &Node<S>,
    context: CallContext,
    _request: GetStatusRequest,
) -> Result<GetStatusResponse, RpcError> {
    audited(node, &context, Operation::Status, async {
        let status = status::collect(&node.config)
            .await
            .map_err(|e| RpcError::new(Code::Unavailable, e.to_string()))?;
        let detail = if status.unhealthy {
            "unhealthy"
        } else {
            "healthy"
        };
        Ok((status, detail.to_string()))
    })
    .await
}

/// `SkipGap`: the caller's identity is the operator recorded in the `gap_skipped` fact.
pub async fn skip_gap<S: Store>(
    node: &Node<S>,
    context: CallContext,
    request: SkipGapRequest,
) -> Result<SkipGapResponse, RpcError> {
    audited(node, &context, Operation::SkipGap, async {
        let spec = node
            .config
            .consumers
            .get(&request.consumer_name)
            .ok_or_else(|| {
                RpcError::new(
                    Code::NotFound,
                    format!("no consumer named {:?} is declared", request.consumer_name),
                )
            })?;
        let ask = SkipGapAsk {
            consumer: &spec.name,
            operator: &context.identity.common_name,
            reason: &request.reason,
            dry_run: request.dry_run,
        };
        check_text("reason", ask.reason, 1024).map_err(RpcError::invalid)?;
        let skipped = skip(
            node.store.as_ref(),
            &node.config.zone,
            node.config.limits.max_fact_bytes,
            spec,
            &ask,
        )
        .await
        .map_err(|e| RpcError::new(Code::Unavailable, e))?;
        let (response, detail) = match skipped {
            Skipped::NoGap => (
                SkipGapResponse::default(),
                format!("consumer {}: no gap", spec.name),
            ),
            Skipped::DryRun(gap) => (
                SkipGapResponse {
                    gap_found: true,
                    cursor: gap.cursor,
                    from_offset: gap.from,
                    to_offset: gap.to,
                    ..Default::default()
                },
                format!(
                    "consumer {}: dry run, offsets {} to {}",
                    spec.name, gap.from, gap.to
                ),
            ),
            Skipped::Done {
                gap,
                message_id,
                audit,
            } => (
                SkipGapResponse {
                    gap_found: true,
                    cursor: gap.cursor,
                    from_offset: gap.from,
                    to_offset: gap.to,
                    skipped: true,
                    audit_message_id: message_id,
                    audit_offset: audit.offset(),
                },
                format!(
                    "consumer {}: skipped offsets {} to {}",
                    spec.name, gap.from, gap.to
                ),
            ),
        };
        Ok((response, detail))
    })
    .await
}

/// Authorizes `operation`, runs `call`, and records the call with its outcome. A refusal is
/// recorded as well (best effort: the refusal stands either way); an allowed call whose record
/// cannot be written fails.
pub(super) async fn audited<S: Store, T>(
    node: &Node<S>,
    context: &CallContext,
    operation: Operation,
    call: impl Future<Output = Result<(T, String), RpcError>>,
) -> Result<T, RpcError> {
    if let Err(denied) = node.config.access.may_operate(&context.identity, operation) {
        let _ = record_call(
            node,
            context,
            operation,
            denied.code.as_str(),
            &denied.message,
        )
        .await;
        return Err(denied);
    }
    match call.await {
        Ok((response, detail)) => {
            record_call(node, context, operation, "ok", &detail).await?;
            Ok(response)
        }
        Err(e) => {
            record_call(node, context, operation, e.code.as_str(), &e.message).await?;
            Err(e)
        }
    }
}

/// Appends the `operator_call` audit fact of this call.
async fn record_call<S: Store>(
    node: &Node<S>,
    context: &CallContext,
    operation: Operation,
    outcome: &str,
    detail: &str,
) -> Result<(), RpcError> {
    let zone = &node.config.zone;
    let object = serde_json::json!({
        "identity": context.identity.common_name,
        "operation": operation.name(),
        "outcome": outcome,
        "detail": detail,
    })
    .to_string();
    let object_json = jcs::canonicalize(object.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or(object);
    let now = now_unix_ms();
    let request = AppendFactRequest {
        category: Category::Audit.to_wire() as i32,
        envelope: Some(Envelope {
            message_id: format!("bsfg.operator/{zone}/{now}-{}", nonce()),
            from_zone: zone.clone(),
            to_zone: zone.clone(),
            produced_at_unix_ms: now,
            object_schema: "urn:bsfg:schema:operator_call:v1".into(),
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: format!("node:{zone}"),
            predicate: "operator_call".into(),
            object_json,
        }),
    };
    record_audit(node.store.as_ref(), &request, node.config.limits.max_fact_bytes)
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(identity = %context.identity.common_name, operation = operation.name(), error = %e, "operator call not recorded");
            RpcError::new(
                Code::Unavailable,
                format!("the call could not be recorded in the audit category ({e}); refused"),
            )
        })
}

/// 64 random bits as hex: makes each call's record its own.
pub(super) fn nonce() -> String {
    let mut bytes = [0u8; 8];
    // The system RNG failing is not something a caller can act on; a zero nonce still differs
    // by the millisecond.
    let _ = SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}
