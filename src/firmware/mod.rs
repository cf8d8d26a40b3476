//! The appliance's firmware: RAUC bundles verified before anything is written (`bundle`), and the
//! boot back end RAUC drives over systemd-boot's unified kernel images and boot counters (`boot`).

pub mod boot;
pub mod bundle;
pub mod cms;
pub mod install;
pub mod manifest;
pub mod rauc;
pub mod refusal;
pub mod verify;
pub mod verity;
pub mod version;
