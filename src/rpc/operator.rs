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
    ops::status,
    proto::{AppendFactRequest, Envelope, Fact, GetStatusRequest, GetStatusResponse},
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
    let operation = Operation::Status;
    if let Err(denied) = node.config.access.may_operate(&context.identity, operation) {
        let _ = record_call(
            node,
            &context,
            operation,
            denied.code.as_str(),
            &denied.message,
        )
        .await;
        return Err(denied);
    }
    let result = status::collect(&node.config)
        .await
        .map_err(|e| RpcError::new(Code::Unavailable, e.to_string()));
    let (outcome, detail) = match &result {
        Ok(s) => (
            "ok",
            if s.unhealthy { "unhealthy" } else { "healthy" }.to_string(),
        ),
        Err(e) => (e.code.as_str(), e.message.clone()),
    };
    record_call(node, &context, operation, outcome, &detail).await?;
    result
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
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    // The system RNG failing is not something a caller can act on; a zero nonce still differs
    // by the millisecond.
    let _ = SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}
