//! Why a page could not be replicated, and which of those reasons stop a pull for an operator.

use crate::rpc::client::ClientError;
use crate::store::StoreError;

/// Why a page could not be replicated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PullError {
    #[error("peer: {0}")]
    Peer(#[from] ClientError),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error("conflicting duplicate: {0}")]
    Conflict(String),
    #[error("artifact {key:?}: {problem}")]
    Artifact { key: String, problem: String },
    #[error("the peer sent an invalid fact at offset {offset}: {problem}")]
    Invalid { offset: u64, problem: String },
    #[error(
        "peer offset {offset} is a fact in category {category}, but this pull keeps {keeps} (its category key): was it pointed at another category's consumer?"
    )]
    Category {
        offset: u64,
        category: String,
        keeps: crate::fact::Category,
    },
    #[error(
        "peer offset {offset} (message_id {message_id:?}) carries from_zone {from_zone:?}, which this pull does not accept (accept_from_zones = {accepted:?}): the peer relays a zone it may not"
    )]
    Origin {
        offset: u64,
        message_id: String,
        from_zone: String,
        accepted: Vec<String>,
    },
    #[error(
        "the peer's offsets went backwards (offset {got} after confirming {confirmed}): was its stream recreated?"
    )]
    Regressed { got: u64, confirmed: u64 },
}

impl PullError {
    /// Errors that need an operator: the pull stops instead of retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PullError::Conflict(_)
                | PullError::Artifact { .. }
                | PullError::Invalid { .. }
                | PullError::Regressed { .. }
                | PullError::Category { .. }
                | PullError::Origin { .. }
        )
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            PullError::Peer(ClientError::WrongPeer { .. }) => "wrong_peer",
            PullError::Peer(ClientError::PeerCertificate { reason, .. }) => match reason.as_str() {
                "revoked" => "peer_revoked",
                "expired" => "peer_expired",
                _ => "peer_certificate",
            },
            PullError::Peer(e) if e.code() == Some("permission_denied") => "permission_denied",
            PullError::Peer(_) => "peer",
            PullError::Store(_) => "store",
            PullError::Conflict(_) => "conflict",
            PullError::Artifact { .. } => "artifact",
            PullError::Invalid { .. } => "invalid",
            PullError::Regressed { .. } => "regressed",
            PullError::Category { .. } => "category",
            PullError::Origin { .. } => "from_zone",
        }
    }
}
