//! The firmware operations of the operator's door: status, install, approve. The node installs
//! nothing itself: an install request is an audit fact (`firmware_install_requested`, with the
//! operator and the change ticket) and then a record in the KV bucket `bsfg_firmware`, which the
//! appliance's firmware agent (root, outside this sandbox) picks up, verifies and carries out,
//! reporting each step back there and in the audit category.

use super::{
    Node,
    error::{Code, RpcError},
    handlers::CallContext,
    operator::{audited, nonce},
};
use crate::{
    config::{FirmwareSettings, Operation},
    firmware::{
        STATUS_KEY,
        audit::{self, Step},
        request_key,
    },
    proto::{
        ApproveFirmwareInstallRequest, ApproveFirmwareInstallResponse, FirmwareInstall,
        GetFirmwareStatusRequest, GetFirmwareStatusResponse, InstallFirmwareRequest,
        InstallFirmwareResponse,
    },
    replicate::status::now_unix_ms,
    store::{Store, audit::record_audit},
};

/// `GetFirmwareStatus`: the agent's last report plus every install asked for, newest first.
pub async fn get_firmware_status<S: Store>(
    node: &Node<S>,
    context: CallContext,
    _request: GetFirmwareStatusRequest,
) -> Result<GetFirmwareStatusResponse, RpcError> {
    audited(node, &context, Operation::FirmwareStatus, async {
        let store = node.store.as_ref();
        let mut status: GetFirmwareStatusResponse = match store.get_firmware(STATUS_KEY).await {
            Ok(Some(json)) => serde_json::from_slice(&json).map_err(|e| {
                RpcError::new(
                    Code::Internal,
                    format!("the firmware agent's status is unreadable: {e}"),
                )
            })?,
            Ok(None) => GetFirmwareStatusResponse::default(),
            Err(e) => return Err(RpcError::new(Code::Unavailable, e.to_string())),
        };
        status.installs = installs(store).await?;
        let detail = if status.booted_slot.is_empty() {
            "no firmware agent has reported".to_string()
        } else {
            format!(
                "slot {} running {}",
                status.booted_slot, status.running_version
            )
        };
        Ok((status, detail))
    })
    .await
}

async fn installs<S: Store>(store: &S) -> Result<Vec<FirmwareInstall>, RpcError> {
    let unavailable = |e: crate::store::StoreError| RpcError::new(Code::Unavailable, e.to_string());
    let mut out = Vec::new();
    for key in store.firmware_keys().await.map_err(unavailable)? {
        if !key.starts_with("request.") {
            continue;
        }
        if let Some(json) = store.get_firmware(&key).await.map_err(unavailable)? {
            match serde_json::from_slice::<FirmwareInstall>(&json) {
                Ok(install) => out.push(install),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable firmware install record skipped")
                }
            }
        }
    }
    out.sort_by_key(|install| std::cmp::Reverse(install.requested_unix_ms));
    Ok(out)
}

/// `InstallFirmware`: checks the request and that the bundle is here with that digest, records
/// who asked and why, then leaves the request for the agent.
pub async fn install_firmware<S: Store>(
    node: &Node<S>,
    context: CallContext,
    request: InstallFirmwareRequest,
) -> Result<InstallFirmwareResponse, RpcError> {
    audited(node, &context, Operation::FirmwareInstall, async {
        let settings = firmware_settings(node)?;
        check_install(settings, &request)?;
        let store = node.store.as_ref();
        let info = store
            .object_info(&request.bucket, &request.key)
            .await
            .map_err(|e| RpcError::new(Code::Unavailable, e.to_string()))?
            .ok_or_else(|| {
                RpcError::new(
                    Code::NotFound,
                    format!(
                        "no bundle {:?} in bucket {:?}: it arrives by replication first",
                        request.key, request.bucket
                    ),
                )
            })?;
        if info.digest != request.digest {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!(
                    "bundle {:?} in bucket {:?} has digest {}, not {}",
                    request.key, request.bucket, info.digest, request.digest
                ),
            ));
        }
        let attempt = format!("{}{}", nonce(), nonce());
        let operator = context.identity.common_name.clone();
        let state = if settings.require_approval {
            "awaiting_approval"
        } else {
            "approved"
        };
        record(
            node,
            Step::InstallRequested {
                attempt: attempt.clone(),
                digest: request.digest.clone(),
                operator: operator.clone(),
                ticket: request.change_ticket.clone(),
                approver: None,
            },
        )
        .await?;
        let now = now_unix_ms();
        let install = FirmwareInstall {
            attempt: attempt.clone(),
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            digest: request.digest.clone(),
            change_ticket: request.change_ticket.clone(),
            operator,
            state: state.into(),
            requested_unix_ms: now,
            updated_unix_ms: now,
            ..Default::default()
        };
        put(node, &install).await?;
        let detail = format!(
            "attempt {attempt}: {}/{} {} ticket {:?}, {state}",
            request.bucket, request.key, request.digest, request.change_ticket
        );
        Ok((
            InstallFirmwareResponse {
                attempt,
                state: state.into(),
            },
            detail,
        ))
    })
    .await
}

/// `ApproveFirmwareInstall`: a second, different identity approves an install waiting for it.
pub async fn approve_firmware_install<S: Store>(
    node: &Node<S>,
    context: CallContext,
    request: ApproveFirmwareInstallRequest,
) -> Result<ApproveFirmwareInstallResponse, RpcError> {
    audited(node, &context, Operation::FirmwareApprove, async {
        firmware_settings(node)?;
        let store = node.store.as_ref();
        let json = store
            .get_firmware(&request_key(&request.attempt))
            .await
            .map_err(|e| RpcError::new(Code::Unavailable, e.to_string()))?
            .ok_or_else(|| {
                RpcError::new(Code::NotFound, format!("no install {:?}", request.attempt))
            })?;
        let mut install: FirmwareInstall = serde_json::from_slice(&json).map_err(|e| {
            RpcError::new(Code::Internal, format!("install record unreadable: {e}"))
        })?;
        let approver = context.identity.common_name.clone();
        if install.state != "awaiting_approval" {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("install {} is {}, not awaiting approval", install.attempt, install.state),
            ));
        }
        if install.operator == approver {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!(
                    "install {} was asked for by {approver:?}: a second, different operator must approve it",
                    install.attempt
                ),
            ));
        }
        record(
            node,
            Step::InstallApproved {
                attempt: install.attempt.clone(),
                approver: approver.clone(),
            },
        )
        .await?;
        install.approver = approver.clone();
        install.state = "approved".into();
        install.updated_unix_ms = now_unix_ms();
        put(node, &install).await?;
        let detail = format!("attempt {} approved by {approver:?}", install.attempt);
        Ok((
            ApproveFirmwareInstallResponse {
                attempt: install.attempt,
                state: install.state,
            },
            detail,
        ))
    })
    .await
}

fn firmware_settings<S>(node: &Node<S>) -> Result<&FirmwareSettings, RpcError> {
    node.config.firmware.as_ref().ok_or_else(|| {
        RpcError::new(
            Code::FailedPrecondition,
            "this node installs no firmware (its configuration has no [firmware] section)",
        )
    })
}

fn check_install(
    settings: &FirmwareSettings,
    request: &InstallFirmwareRequest,
) -> Result<(), RpcError> {
    if request.bucket != settings.bucket {
        return Err(RpcError::invalid(format!(
            "bucket {:?}: bundles are installed only from the firmware bucket {:?}",
            request.bucket, settings.bucket
        )));
    }
    if request.key.is_empty() {
        return Err(RpcError::invalid("key is required"));
    }
    let hex = request.digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(RpcError::invalid(format!(
            "digest {:?}: expected \"sha256:\" and 64 lowercase hex digits",
            request.digest
        )));
    }
    let ticket = request.change_ticket.trim();
    if ticket.is_empty()
        || request.change_ticket.len() > 256
        || request.change_ticket.chars().any(char::is_control)
    {
        return Err(RpcError::invalid(
            "change_ticket is required: 1 to 256 characters, no control characters",
        ));
    }
    Ok(())
}

async fn record<S: Store>(node: &Node<S>, step: Step) -> Result<(), RpcError> {
    let request = audit::now(&node.config.zone, step).to_fact();
    record_audit(
        node.store.as_ref(),
        &request,
        node.config.limits.max_fact_bytes,
    )
    .await
    .map(|_| ())
    .map_err(|e| RpcError::new(Code::Unavailable, e))
}

async fn put<S: Store>(node: &Node<S>, install: &FirmwareInstall) -> Result<(), RpcError> {
    let json = serde_json::to_vec(install)
        .map_err(|e| RpcError::new(Code::Internal, format!("encoding the install: {e}")))?;
    node.store
        .put_firmware(&request_key(&install.attempt), json)
        .await
        .map_err(|e| RpcError::new(Code::Unavailable, e.to_string()))
}
