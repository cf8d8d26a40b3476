//! Operations: metrics, logging set-up and (later) sd_notify.

pub mod logging;
pub mod metrics;
