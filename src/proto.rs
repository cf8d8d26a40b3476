//! The `bsfg.v1` wire types: prost messages generated at build time from `proto/bsfg/v1/` by a
//! pure-Rust compiler (see `build.rs`), with their canonical proto3 JSON mapping from pbjson.
//! Nothing here is written by hand; change the `.proto` file instead.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/bsfg.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/bsfg.v1.serde.rs"));
