//! The `bsfg` node as a library: the binary (`main.rs`) is its runbook, and the integration tests
//! use the same modules (development PKI, config) to set up real zones.

pub mod cli;
pub mod config;
pub mod fact;
pub mod firmware;
pub mod ops;
pub mod proto;
pub mod replicate;
pub mod rpc;
pub mod sandbox;
pub mod store;
