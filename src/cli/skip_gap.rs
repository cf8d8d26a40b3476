//! `bsfg skip-gap`: skips a gap on the box (see `ops::skip_gap` for what it does, in which order,
//! and why it is safe to run again), and says what it found and did.

use crate::{
    config::{Config, ConsumerSpec},
    ops::skip_gap::{SkipGapRequest, Skipped, check_text, skip},
    store::{audit::AuditRecorded, gap::Gap, jetstream::JetStreamStore},
};
use std::{path::Path, process::ExitCode};

/// Exit statuses (sysexits): bad arguments, bad config, store unreachable or refused.
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
const EXIT_UNAVAILABLE: u8 = 69;

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
    let skipped = runtime.block_on(async {
        let store = JetStreamStore::open(&config)
            .await
            .map_err(|e| e.to_string())?;
        skip(
            &store,
            &config.zone,
            config.limits.max_fact_bytes,
            spec,
            request,
        )
        .await
    });
    let name = &spec.name;
    match skipped {
        Ok(Skipped::NoGap) => {
            println!(
                "consumer {name} (zone {}, category {}): no gap after its cursor; nothing changed",
                config.zone, spec.category
            );
            ExitCode::SUCCESS
        }
        Ok(Skipped::DryRun(gap)) => {
            print_gap(&config, spec, gap);
            println!("dry run: nothing recorded, cursor not moved");
            ExitCode::SUCCESS
        }
        Ok(Skipped::Done {
            gap,
            message_id,
            audit,
        }) => {
            print_gap(&config, spec, gap);
            match audit {
                AuditRecorded::New { offset } => println!(
                    "recorded audit fact {message_id} at audit offset {offset} (operator {:?}, reason {:?})",
                    request.operator, request.reason
                ),
                AuditRecorded::Earlier { offset } => println!(
                    "audit fact {message_id} was already recorded at audit offset {offset} by an earlier run"
                ),
            }
            println!(
                "cursor of consumer {name} moved from {} to {}; the next FetchFacts starts at offset {}",
                gap.cursor,
                gap.to,
                gap.to + 1
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bsfg skip-gap: {e}; the cursor was not moved");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// What the operator is about to accept losing.
fn print_gap(config: &Config, spec: &ConsumerSpec, gap: Gap) {
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
}
