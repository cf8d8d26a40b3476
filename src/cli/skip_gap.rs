//! `bsfg skip-gap`: the one way past facts that retention evicted before a peer confirmed them
//! (SPEC §4, "no silent loss"). Until an operator runs it, FetchFacts on that consumer answers
//! `data_loss` naming the offsets. The command runs beside the serving node (it talks to the
//! zone's nats-server) and, in this order:
//!
//! 1. finds the gap after the consumer's cursor (none: nothing to do, nothing written);
//! 2. appends an audit fact to the zone's `audit` category — who, why, which consumer, which
//!    offsets — and stops if that fails, so the cursor never moves unrecorded;
//! 3. moves the cursor to the gap's last offset, if the gap is still exactly what was recorded.
//!
//! Running it again after an interruption is safe: the audit fact's `message_id` is derived from
//! the zone, consumer and offsets, so the same gap is recorded once.

use crate::{
    config::{Config, ConsumerSpec},
    fact::{Category, jcs},
    proto::{AppendFactRequest, Envelope, Fact},
    replicate::status::now_unix_ms,
    store::{
        audit::{AuditRecorded, record_audit},
        gap::Gap,
        jetstream::JetStreamStore,
    },
};
use std::{path::Path, process::ExitCode};

/// Exit statuses (sysexits): bad arguments, bad config, store unreachable or refused.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
const EXIT_UNAVAILABLE: u8 = 69;

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

fn audit_id(request: &AppendFactRequest) -> &str {
    request
        .envelope
        .as_ref()
        .map_or("", |envelope| envelope.message_id.as_str())
}

/// Operator and reason: required, printable, bounded (they end up in an audit fact).
fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
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

pub fn skip_gap(path: &Path, request: &SkipGapRequest<'_>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(spec) = config.consumers.get(request.consumer) else {
        let declared: Vec<&str> = config.consumers.keys().map(String::as_str).collect();
        eprintln!(
            "bsfg skip-gap: {}: no consumer named {:?} is declared (declared: {})",
            path.display(),
            request.consumer,
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        );
        return ExitCode::from(EXIT_USAGE);
    };
    if let Err(e) = check_text("operator", request.operator, 128)
        .and_then(|()| check_text("reason", request.reason, 1024))
    {
        eprintln!("bsfg skip-gap: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bsfg skip-gap: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config, spec, request)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bsfg skip-gap: {e}; the cursor was not moved");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

async fn run(
    config: &Config,
    spec: &ConsumerSpec,
    request: &SkipGapRequest<'_>,
) -> Result<(), String> {
    let store = JetStreamStore::open(config)
        .await
        .map_err(|e| e.to_string())?;
    let Some(gap) = store.gap(spec).await.map_err(|e| e.to_string())? else {
        println!(
            "consumer {} (zone {}, category {}): no gap after its cursor; nothing changed",
            spec.name, config.zone, spec.category
        );
        return Ok(());
    };
    println!(
        "consumer {} (zone {}, category {}): cursor {}; offsets {} to {} ({} facts) were deleted \
         by retention before anyone confirmed them",
        spec.name,
        config.zone,
        spec.category,
        gap.cursor,
        gap.from,
        gap.to,
        gap.missing()
    );
    if request.dry_run {
        println!("dry run: nothing recorded, cursor not moved");
        return Ok(());
    }

    let audit = gap_skipped_fact(
        &config.zone,
        spec,
        gap,
        request.operator,
        request.reason,
        now_unix_ms(),
    );
    match record_audit(&store, &audit, config.limits.max_fact_bytes).await? {
        AuditRecorded::New { offset } => println!(
            "recorded audit fact {} at audit offset {offset} (operator {:?}, reason {:?})",
            audit_id(&audit),
            request.operator,
            request.reason
        ),
        // An earlier, interrupted run recorded this very gap (perhaps with other words): that
        // record stands, and the cursor move it announced is finished now.
        AuditRecorded::Earlier { offset } => println!(
            "audit fact {} was already recorded at audit offset {offset} by an earlier run",
            audit_id(&audit)
        ),
    }

    match store.skip_gap(spec, gap).await.map_err(|e| e.to_string())? {
        None => {
            println!(
                "cursor of consumer {} moved from {} to {}; the next FetchFacts starts at offset {}",
                spec.name,
                gap.cursor,
                gap.to,
                gap.to + 1
            );
            Ok(())
        }
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
