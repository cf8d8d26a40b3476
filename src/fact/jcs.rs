//! Placeholder until the RFC 8785 checker lands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    #[error("object_json is not valid JSON at byte {position}: {reason}")]
    Invalid { position: usize, reason: String },
    #[error("object_json is not in canonical form (RFC 8785) at byte {position}: {reason}")]
    NotCanonical { position: usize, reason: String },
}
pub fn check_canonical(input: &[u8]) -> Result<(), JcsError> {
    serde_json::from_slice::<serde_json::Value>(input)
        .map(|_| ())
        .map_err(|e| JcsError::Invalid {
            position: e.column(),
            reason: e.to_string(),
        })
}
