//! Logging: structured `tracing` events to stderr (JSON when `BSFG_LOG_FORMAT=json`), filtered
//! by `RUST_LOG` (default: `info` for `serve`, `warn` for the one-shot commands). Never logs
//! request bodies or private keys.

use tracing_subscriber::EnvFilter;

pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("BSFG_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
