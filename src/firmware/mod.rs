//! The appliance's firmware: RAUC bundles verified before anything is written (`bundle`), and the
//! boot back end RAUC drives over systemd-boot's unified kernel images and boot counters (`boot`).

pub mod audit;
pub mod boot;
pub mod bundle;
pub mod commands;
pub mod host;
pub mod report;
