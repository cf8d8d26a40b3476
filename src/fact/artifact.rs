//! Artifact references: a fact whose envelope has `object_media_type` carries in `object_json`
//! the keys `bucket`, `key`, `digest`, `size`, `media_type` and optionally `file_name` (SPEC §2).
//! This module parses and checks their syntax; whether the object exists is the store's business.

use super::FactError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ArtifactRef {
    pub bucket: String,
    pub key: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    #[serde(default)]
    pub file_name: Option<String>,
}

/// Parses the reference out of a (canonical) `object_json`.
pub fn parse_artifact_ref(object_json: &str, media_type: &str) -> Result<ArtifactRef, FactError> {
    let reference: ArtifactRef = serde_json::from_str(object_json).map_err(|e| {
        FactError::new(
            "fact.object_json",
            object_json,
            format!("an artifact reference needs bucket, key, digest, size and media_type ({e})"),
        )
    })?;
    if !is_sha256_digest(&reference.digest) {
        return Err(FactError::new(
            "fact.object_json.digest",
            &reference.digest,
            "must be sha256: followed by 64 lowercase hex digits",
        ));
    }
    if reference.media_type != media_type {
        return Err(FactError::new(
            "fact.object_json.media_type",
            &reference.media_type,
            format!("must equal envelope.object_media_type {media_type:?}"),
        ));
    }
    Ok(reference)
}

pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn parses_a_complete_reference() {
        let json = format!(
            "{{\"bucket\":\"batch-files\",\"digest\":\"{DIGEST}\",\"key\":\"b1/report.pdf\",\"media_type\":\"application/pdf\",\"size\":3}}"
        );
        let r = parse_artifact_ref(&json, "application/pdf").expect("valid reference");
        assert_eq!(r.bucket, "batch-files");
        assert_eq!(r.size, 3);
    }

    #[test]
    fn refuses_missing_keys_bad_digest_and_media_type_mismatch() {
        assert!(parse_artifact_ref("{\"bucket\":\"b\"}", "x/y").is_err());
        let bad = "{\"bucket\":\"b\",\"digest\":\"md5:00\",\"key\":\"k\",\"media_type\":\"x/y\",\"size\":1}";
        assert!(parse_artifact_ref(bad, "x/y").is_err());
        let other = format!(
            "{{\"bucket\":\"b\",\"digest\":\"{DIGEST}\",\"key\":\"k\",\"media_type\":\"x/y\",\"size\":1}}"
        );
        assert!(parse_artifact_ref(&other, "x/z").is_err());
    }
}
