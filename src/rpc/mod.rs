//! The RPC listener: TLS acceptor with certificate reload (`tls.rs`), the Connect unary protocol
//! (`connect.rs`) and gRPC / gRPC-Web on the same port (`grpc.rs`, chosen per request by
//! `protocol.rs`), one error→code map (`error.rs`), authorization (`authz.rs`) and one handler per
//! method (`handlers.rs`; the operator's door in `operator.rs`), wired together by `server.rs`.

pub mod admission;
pub mod authz;
pub mod budget;
pub mod client;
pub mod connect;
pub mod crl;
pub mod error;
pub mod grpc;
pub mod handlers;
#[cfg(test)]
mod handlers_tests;
pub mod operator;
pub mod operator_firmware;
pub mod protocol;
pub mod revalidate;
pub mod server;
pub mod tls;

use crate::{config::Config, ops::metrics::Metrics};
use std::sync::Arc;

/// Everything a handler may use: the validated config, the store and the metrics.
pub struct Node<S> {
    pub config: Arc<Config>,
    pub store: Arc<S>,
    pub metrics: Arc<Metrics>,
}
