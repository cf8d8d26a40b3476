//! Field rules of AppendFact (SPEC §2). Each failure names the field, the offending value and the
//! rule, so a producer's engineer can fix the call from the error alone.

use super::{Category, is_zone_name, jcs};
use crate::proto::{AppendFactRequest, Envelope, Fact};

/// A field that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {rule}")]
pub struct FactError {
    pub field: &'static str,
    pub value: String,
    pub rule: String,
}

impl FactError {
    pub fn new(field: &'static str, value: &str, rule: impl Into<String>) -> Self {
        let mut shown: String = value.chars().take(64).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        FactError {
            field,
            value: format!("{shown:?}"),
            rule: rule.into(),
        }
    }
}

/// Checks every field of an AppendFact request; returns its parts on success.
pub fn validate_append(
    request: &AppendFactRequest,
    max_fact_bytes: usize,
) -> Result<(Category, &Envelope, &Fact), FactError> {
    let category = Category::from_wire(request.category).ok_or_else(|| {
        FactError::new(
            "category",
            &request.category.to_string(),
            "unknown category",
        )
    })?;
    let envelope = request
        .envelope
        .as_ref()
        .ok_or_else(|| FactError::new("envelope", "", "is required"))?;
    let fact = request
        .fact
        .as_ref()
        .ok_or_else(|| FactError::new("fact", "", "is required"))?;
    validate_envelope(envelope)?;
    validate_fact(fact, max_fact_bytes)?;
    Ok((category, envelope, fact))
}

fn printable_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn check_text(field: &'static str, value: &str, required: bool) -> Result<(), FactError> {
    if required && value.is_empty() {
        return Err(FactError::new(field, value, "is required"));
    }
    if value.len() > 256 || !printable_ascii(value) {
        return Err(FactError::new(
            field,
            value,
            "must be at most 256 bytes of printable ASCII",
        ));
    }
    Ok(())
}

fn validate_envelope(e: &Envelope) -> Result<(), FactError> {
    check_text("envelope.message_id", &e.message_id, true)?;
    for (field, zone) in [
        ("envelope.from_zone", &e.from_zone),
        ("envelope.to_zone", &e.to_zone),
    ] {
        if !is_zone_name(zone) {
            return Err(FactError::new(
                field,
                zone,
                "must be a zone name: 1-63 characters of a-z, 0-9 and '-', starting with a letter",
            ));
        }
    }
    if e.produced_at_unix_ms <= 0 {
        return Err(FactError::new(
            "envelope.produced_at_unix_ms",
            &e.produced_at_unix_ms.to_string(),
            "is required: the producer's clock in milliseconds since the Unix epoch",
        ));
    }
    check_text("envelope.correlation_id", &e.correlation_id, false)?;
    check_text("envelope.causation_id", &e.causation_id, false)?;
    check_text("envelope.object_schema", &e.object_schema, false)?;
    if !e.object_media_type.is_empty() && !is_media_type(&e.object_media_type) {
        return Err(FactError::new(
            "envelope.object_media_type",
            &e.object_media_type,
            "must be a media type such as application/pdf",
        ));
    }
    if e.labels.len() > 64 {
        return Err(FactError::new(
            "envelope.labels",
            &e.labels.len().to_string(),
            "at most 64 labels",
        ));
    }
    for (key, value) in &e.labels {
        let key_ok = (1..=128).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        if !key_ok {
            return Err(FactError::new(
                "envelope.labels",
                key,
                "label keys are 1-128 characters of A-Z, a-z, 0-9, '.', '_', '/' and '-'",
            ));
        }
        if value.len() > 1024 {
            return Err(FactError::new(
                "envelope.labels",
                key,
                "label values are at most 1024 bytes",
            ));
        }
    }
    Ok(())
}

/// `type/subtype` with RFC 6838 token characters, optional parameters after `;`.
pub fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or("").trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 127
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    text.len() <= 256
        && printable_ascii(text)
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

fn validate_fact(f: &Fact, max_fact_bytes: usize) -> Result<(), FactError> {
    validate_subject(&f.subject)?;
    let p = f.predicate.as_bytes();
    let predicate_ok = (1..=64).contains(&p.len())
        && p[0].is_ascii_lowercase()
        && p.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        && !f.predicate.ends_with('_')
        && !f.predicate.contains("__");
    if !predicate_ok {
        return Err(FactError::new(
            "fact.predicate",
            &f.predicate,
            "must be lower_snake_case (a-z, 0-9, single '_', starting with a letter), at most 64 characters",
        ));
    }
    if f.object_json.len() > max_fact_bytes {
        return Err(FactError::new(
            "fact.object_json",
            &format!("{} bytes", f.object_json.len()),
            format!("is larger than the node's limit of {max_fact_bytes} bytes"),
        ));
    }
    jcs::check_canonical(f.object_json.as_bytes())
        .map_err(|e| FactError::new("fact.object_json", &f.object_json, e.to_string()))
}

fn validate_subject(subject: &str) -> Result<(), FactError> {
    let rule = "must be kind:id or kind:scope/id, kind a lowercase noun (a-z, at most 32), \
                id and scope printable ASCII without spaces or '/' (at most 200 each)";
    let fail = || FactError::new("fact.subject", subject, rule);
    let (kind, rest) = subject.split_once(':').ok_or_else(fail)?;
    if !(1..=32).contains(&kind.len()) || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(fail());
    }
    let part_ok = |part: &str| {
        (1..=200).contains(&part.len())
            && part
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'/')
    };
    let ok = match rest.split_once('/') {
        Some((scope, id)) => part_ok(scope) && part_ok(id),
        None => part_ok(rest),
    };
    if ok { Ok(()) } else { Err(fail()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AppendFactRequest {
        AppendFactRequest {
            envelope: Some(Envelope {
                message_id: "m-1".into(),
                from_zone: "plant-a".into(),
                to_zone: "enterprise".into(),
                produced_at_unix_ms: 1,
                ..Default::default()
            }),
            fact: Some(Fact {
                subject: "batch:line-1/B-7".into(),
                predicate: "step_completed".into(),
                object_json: "{\"a\":1}".into(),
            }),
            category: 0,
        }
    }

    fn field_of(mutate: impl FnOnce(&mut AppendFactRequest)) -> &'static str {
        let mut r = request();
        mutate(&mut r);
        validate_append(&r, 1024)
            .expect_err("should be refused")
            .field
    }

    #[test]
    fn accepts_a_valid_fact() {
        let r = request();
        let (category, _, _) = validate_append(&r, 1024).expect("valid");
        assert_eq!(category, Category::Operational);
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(field_of(|r| r.envelope = None), "envelope");
        assert_eq!(field_of(|r| r.fact = None), "fact");
        assert_eq!(field_of(|r| r.category = 99), "category");
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.message_id.clear()
            }),
            "envelope.message_id"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.message_id = "a\u{7f}".into()
            }),
            "envelope.message_id"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.message_id = "x".repeat(257)
            }),
            "envelope.message_id"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.from_zone = "Plant A".into()
            }),
            "envelope.from_zone"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.to_zone.clear()
            }),
            "envelope.to_zone"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.produced_at_unix_ms = 0
            }),
            "envelope.produced_at_unix_ms"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.object_media_type = "pdf".into()
            }),
            "envelope.object_media_type"
        );
        assert_eq!(
            field_of(|r| if let Some(e) = r.envelope.as_mut() {
                e.labels.insert("bad key".into(), "v".into());
            }),
            "envelope.labels"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.subject = "Batch:1".into()
            }),
            "fact.subject"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.subject = "batch".into()
            }),
            "fact.subject"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.subject = "batch:a b".into()
            }),
            "fact.subject"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.predicate = "StepCompleted".into()
            }),
            "fact.predicate"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.predicate = "step__done".into()
            }),
            "fact.predicate"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.object_json = "{ \"a\": 1 }".into()
            }),
            "fact.object_json"
        );
        assert_eq!(
            field_of(|r| if let Some(f) = r.fact.as_mut() {
                f.object_json = "x".repeat(2000)
            }),
            "fact.object_json"
        );
    }

    #[test]
    fn media_types() {
        assert!(is_media_type("application/pdf"));
        assert!(is_media_type("text/csv; charset=utf-8"));
        assert!(!is_media_type("application"));
        assert!(!is_media_type("a b/c"));
    }
}
