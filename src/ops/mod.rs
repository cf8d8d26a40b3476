//! Operations: metrics, logging set-up (journald or stderr) and sd_notify.

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod skip_gap;
pub mod status;
