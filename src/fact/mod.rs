//! Facts and their envelopes (SPEC §2): field rules, the canonical-JSON check, the idempotency
//! content hash and artifact references. Pure functions over the wire types; no I/O.
//!
//! Never rewrites what a producer sent: a fact is accepted byte for byte or refused with the
//! field and the reason.

mod artifact;
mod category;
pub mod jcs;
mod validate;

pub use artifact::{ArtifactRef, parse_artifact_ref};
pub use category::Category;
pub use validate::{FactError, is_media_type, validate_append};

use crate::proto::{Envelope, Fact};
use prost::Message;
use sha2::{Digest, Sha256};

/// A zone name: 1-63 characters of `a-z`, `0-9` and `-`, starting with a letter.
pub fn is_zone_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// SHA-256 over the canonical encoding of (envelope without `produced_at_unix_ms`, fact).
///
/// The canonical encoding is protobuf's deterministic form as prost writes it (fields in number
/// order, defaults omitted, `labels` sorted by key), each part length-prefixed after a domain tag
/// so no two different pairs encode alike.
pub fn content_hash(envelope: &Envelope, fact: &Fact) -> [u8; 32] {
    let mut envelope = envelope.clone();
    envelope.produced_at_unix_ms = 0;
    let envelope_bytes = envelope.encode_to_vec();
    let fact_bytes = fact.encode_to_vec();
    let mut hasher = Sha256::new();
    hasher.update(b"bsfg.v1.content\0");
    hasher.update((envelope_bytes.len() as u64).to_be_bytes());
    hasher.update(&envelope_bytes);
    hasher.update((fact_bytes.len() as u64).to_be_bytes());
    hasher.update(&fact_bytes);
    hasher.finalize().into()
}

/// The subject kind of `kind:id` or `kind:scope/id` (validated before use).
pub fn subject_kind(subject: &str) -> &str {
    subject.split(':').next().unwrap_or(subject)
}

/// `sha256:<hex>` digest of some bytes, as artifact references and PutObject state it.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Envelope, Fact) {
        let envelope = Envelope {
            message_id: "m-1".into(),
            from_zone: "plant-a".into(),
            to_zone: "enterprise".into(),
            produced_at_unix_ms: 1_700_000_000_000,
            labels: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let fact = Fact {
            subject: "batch:B-1".into(),
            predicate: "step_completed".into(),
            object_json: "{\"step\":3}".into(),
        };
        (envelope, fact)
    }

    #[test]
    fn content_hash_ignores_produced_at_but_nothing_else() {
        let (envelope, fact) = sample();
        let base = content_hash(&envelope, &fact);
        let mut later = envelope.clone();
        later.produced_at_unix_ms += 5000;
        assert_eq!(content_hash(&later, &fact), base);
        let mut relabelled = envelope.clone();
        relabelled.labels.insert("c".into(), "3".into());
        assert_ne!(content_hash(&relabelled, &fact), base);
        let mut other_fact = fact.clone();
        other_fact.object_json = "{\"step\":4}".into();
        assert_ne!(content_hash(&envelope, &other_fact), base);
    }

    #[test]
    fn zone_names() {
        assert!(is_zone_name("plant-a"));
        assert!(is_zone_name("idmz"));
        assert!(!is_zone_name(""));
        assert!(!is_zone_name("Plant"));
        assert!(!is_zone_name("1plant"));
        assert!(!is_zone_name("plant a"));
        assert!(!is_zone_name(&"a".repeat(64)));
    }
}
