//! Recording an audit fact the node itself writes (skip-gap, firmware steps): validated like any
//! AppendFact, appended idempotently, and a record that is already there — the same fact, or
//! one an earlier interrupted run wrote with other words under the same `message_id` — counts as
//! recorded. Re-running a step never records it twice.

use super::{NewFact, Store, StoreError};
use crate::{fact, proto::AppendFactRequest};

/// Where an audit fact is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecorded {
    /// Appended now, at this offset of the audit category.
    New { offset: u64 },
    /// Already there (an earlier run), at this offset.
    Earlier { offset: u64 },
}

impl AuditRecorded {
    pub fn offset(&self) -> u64 {
        match self {
            Self::New { offset } | Self::Earlier { offset } => *offset,
        }
    }
}

/// Validates and appends `request`; an error says why it could not be recorded.
pub async fn record_audit<S: Store>(
    store: &S,
    request: &AppendFactRequest,
    max_fact_bytes: usize,
) -> Result<AuditRecorded, String> {
    let (category, envelope, fact) = fact::validate_append(request, max_fact_bytes)
        .map_err(|e| format!("the audit fact is invalid: {e}"))?;
    let new = NewFact {
        category,
        envelope,
        fact,
        content_hash: fact::content_hash(envelope, fact),
    };
    match store.append(new).await {
        Ok(appended) if appended.duplicate => Ok(AuditRecorded::Earlier {
            offset: appended.offset,
        }),
        Ok(appended) => Ok(AuditRecorded::New {
            offset: appended.offset,
        }),
        Err(StoreError::Conflict { offset, .. }) => Ok(AuditRecorded::Earlier { offset }),
        Err(e) => Err(format!("recording audit fact {}: {e}", envelope.message_id)),
    }
}
