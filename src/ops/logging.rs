//! Logging: structured `tracing` events to journald (each field a journal field, e.g.
//! `IDENTITY=`, `REASON=`) when systemd connected stderr to the journal (`JOURNAL_STREAM` set),
//! to stderr otherwise (JSON when `BSFG_LOG_FORMAT=json`); filtered by `RUST_LOG` (default:
//! `info` for `serve`, `warn` for the one-shot commands). Never logs request bodies or keys.

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journald.with_syslog_identifier("bsfg".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("bsfg: journald unavailable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("BSFG_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
