//! The appliance's firmware: RAUC bundles verified before anything is written (`bundle`), and the
//! boot back end RAUC drives over systemd-boot's unified kernel images and boot counters (`boot`).

pub mod agent;
pub mod appliance;
pub mod audit;
pub mod boot;
pub mod bundle;
pub mod cms;
pub mod commands;
pub mod conclusion;
pub mod host;
pub mod install;
pub mod manifest;
pub mod rauc;
pub mod refusal;
pub mod report;
pub mod verify;
pub mod verity;
pub mod version;

/// The firmware agent's status record in the KV bucket `bsfg_firmware`.
pub const STATUS_KEY: &str = "status";

/// An install's record in `bsfg_firmware`.
pub fn request_key(attempt: &str) -> String {
    format!("request.{attempt}")
}
