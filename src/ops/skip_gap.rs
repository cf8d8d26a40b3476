//! Skipping a gap (SPEC §4, "no silent loss"): the one way past facts that retention evicted
//! before a peer confirmed them. Until an operator does it, FetchFacts on that consumer answers
//! `data_loss` naming the offsets. Used by `bsfg skip-gap` on the box and by the operator's door
//! (`OperatorService/SkipGap`), in this order:
//!
//! 1. finds the gap after the consumer's cursor (none: nothing to do, nothing written);
//! 2. appends an audit fact to the zone's `audit` category — who, why, which consumer, which
//!    offsets — and stops if that fails, so the cursor never moves unrecorded;
//! 3. moves the cursor to the gap's last offset, if the gap is still exactly what was recorded.
//!
//! Running it again after an interruption is safe: the audit fact's `message_id` is derived from
//! the zone, consumer and offsets, so the same gap is recorded once.

use crate::{
    config::ConsumerSpec,
    fact::{Category, jcs},
    proto::{AppendFactRequest, Envelope, Fact},
    replicate::status::now_unix_ms,
    store::{
        Store,
        audit::{AuditRecorded, record_audit},
        gap::Gap,
    },
};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct SkipGapRequest<'a> {
    pub consumer: &'a str,
    pub operator: &'a str,
    pub reason: &'a str,
    pub dry_run: bool,
}

/// The audit fact recording a skip: subject `consumer:<zone>/<consumer>`, predicate
/// `gap_skipped`, canonical JSON naming the offsets, the operator and the reason.
pub fn gap_skipped_fact(
    zone: &str,
    spec: &ConsumerSpec,
    gap: Gap,
    operator: &str,
    reason: &str,
    produced_at_unix_ms: i64,
) -> AppendFactRequest {
    let object = serde_json::json!({
        "category": spec.category.name(),
        "consumer": spec.name,
        "cursor": gap.cursor,
        "from_offset": gap.from,
        "to_offset": gap.to,
        "missing_facts": gap.missing(),
        "operator": operator,
        "reason": reason,
    });
    // serde_json's output is valid JSON, so canonicalizing it cannot fail; keep its text if it
    // ever did, and let validation name the problem.
    let text = object.to_string();
    let object_json = jcs::canonicalize(text.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or(text);
    AppendFactRequest {
        category: Category::Audit.to_wire() as i32,
        envelope: Some(Envelope {
            message_id: format!("bsfg.skip-gap/{zone}/{}/{}-{}", spec.name, gap.from, gap.to),
            from_zone: zone.to_string(),
            to_zone: zone.to_string(),
            produced_at_unix_ms,
            object_schema: "urn:bsfg:schema:consumer.gap_skipped:v1".into(),
            ..Default::default()
        }),
        fact: Some(Fact {
            subject: format!("consumer:{zone}/{}", spec.name),
            predicate: "gap_skipped".into(),
            object_json,
        }),
    }
}

/// Operator and reason: required, printable, bounded (they end up in an audit fact).
pub fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("--{what} is required and must not be blank"));
    }
    if value.len() > max {
        return Err(format!(
            "--{what} is {} bytes long; at most {max}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("--{what} must not contain control characters"));
    }
    Ok(())
}

/// What skipping found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// No gap after the cursor: nothing recorded, nothing moved.
    NoGap,
    /// A dry run: the gap, nothing recorded, nothing moved.
    DryRun(Gap),
    /// Recorded (now, or by an earlier interrupted run) and the cursor moved to `gap.to`.
    Done {
        gap: Gap,
        message_id: String,
        audit: AuditRecorded,
    },
}

/// Finds the gap, records the audit fact, moves the cursor (see the module's order).
pub async fn skip<S: Store>(
    store: &S,
    zone: &str,
    max_fact_bytes: usize,
    spec: &ConsumerSpec,
    request: &SkipGapRequest<'_>,
) -> Result<Skipped, String> {
    check_text("operator", request.operator, 128)?;
    check_text("reason", request.reason, 1024)?;
    let Some(gap) = store.gap(spec).await.map_err(|e| e.to_string())? else {
        return Ok(Skipped::NoGap);
    };
    if request.dry_run {
        return Ok(Skipped::DryRun(gap));
    }
    let audit = gap_skipped_fact(
        zone,
        spec,
        gap,
        request.operator,
        request.reason,
        now_unix_ms(),
    );
    // An earlier, interrupted run may have recorded this very gap (perhaps with other words):
    // that record stands, and the cursor move it announced is finished now.
    let recorded = record_audit(store, &audit, max_fact_bytes).await?;
    match store.skip_gap(spec, gap).await.map_err(|e| e.to_string())? {
        None => Ok(Skipped::Done {
            gap,
            message_id: audit
                .envelope
                .map(|envelope| envelope.message_id)
                .unwrap_or_default(),
            audit: recorded,
        }),
        Some(now) => Err(format!(
            "the gap changed while it was being recorded (now offsets {} to {} after cursor {}); \
             run the command again",
            now.from, now.to, now.cursor
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact;

    fn spec() -> ConsumerSpec {
        ConsumerSpec {
            name: "telemetry-out".into(),
            category: Category::Telemetry,
            max_ack_pending: 1000,
        }
    }

    #[test]
    fn the_audit_fact_is_a_valid_canonical_fact_naming_the_gap() {
        let gap = Gap {
            cursor: 2,
            from: 3,
            to: 9,
        };
        let request = gap_skipped_fact(
            "plant-a",
            &spec(),
            gap,
            "alice",
            "retention shortened during outage, CHG-1042",
            1_700_000_000_000,
        );
        let (category, envelope, fact) =
            fact::validate_append(&request, 64 * 1024).expect("a valid fact");
        assert_eq!(category, Category::Audit);
        assert_eq!(
            envelope.message_id,
            "bsfg.skip-gap/plant-a/telemetry-out/3-9"
        );
        assert_eq!(envelope.from_zone, "plant-a");
        assert_eq!(fact.subject, "consumer:plant-a/telemetry-out");
        assert_eq!(fact.predicate, "gap_skipped");
        assert_eq!(
            fact.object_json,
            "{\"category\":\"telemetry\",\"consumer\":\"telemetry-out\",\"cursor\":2,\
             \"from_offset\":3,\"missing_facts\":7,\"operator\":\"alice\",\
             \"reason\":\"retention shortened during outage, CHG-1042\",\"to_offset\":9}"
        );
    }

    #[test]
    fn operator_and_reason_are_required_and_bounded() {
        assert!(check_text("reason", "CHG-1042", 1024).is_ok());
        assert!(check_text("reason", "  ", 1024).is_err());
        assert!(check_text("reason", "a\nb", 1024).is_err());
        assert!(check_text("reason", &"x".repeat(1025), 1024).is_err());
    }
}
