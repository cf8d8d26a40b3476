//! Which wire protocol a request speaks, chosen by its `Content-Type`: `application/grpc…` is gRPC
//! or gRPC-Web (`grpc.rs`), anything else (and every GET) is Connect (`connect.rs`). Both end in
//! the same [`UnaryCall`], so the handlers, authorization and limits are the same; only reading
//! the request, writing the answer and writing a refusal differ.
//!
//! Never changes what a Connect client sees: its responses are `connect.rs`'s and
//! [`RpcError::into_response`]'s, byte for byte, only boxed.

use super::{
    budget::BodyBudget,
    connect::{self, BodyLimits, MethodInfo, UnaryCall},
    error::RpcError,
    grpc::{self, GrpcMode},
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use serde::Serialize;
use std::convert::Infallible;

/// Every response body: a whole Connect body, or gRPC frames followed by trailers.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A Connect (or plain HTTP) response, boxed.
pub fn boxed(response: Response<Full<Bytes>>) -> Response<ResponseBody> {
    response.map(BodyExt::boxed_unsync)
}

#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    Connect,
    /// `application/grpc…`; `None` when the subtype is not one this node speaks.
    Grpc(Option<GrpcMode>),
}

impl Protocol {
    pub fn of(headers: &HeaderMap) -> Protocol {
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence.starts_with("application/grpc") {
            Protocol::Grpc(GrpcMode::parse(&essence))
        } else {
            Protocol::Connect
        }
    }

    /// Reads and checks a unary request (everything but the message's own decoding).
    pub async fn read_request(
        self,
        request: Request<Incoming>,
        method: &MethodInfo,
        limits: BodyLimits,
        budget: &BodyBudget,
    ) -> Result<UnaryCall, RpcError> {
        match self {
            Protocol::Connect => connect::read_request(request, method, limits, budget).await,
            Protocol::Grpc(mode) => grpc::read_request(mode, request, limits, budget).await,
        }
    }

    /// A successful answer.
    pub fn encode<M>(self, call: &UnaryCall, message: &M) -> Response<ResponseBody>
    where
        M: prost::Message + Serialize,
    {
        match self {
            Protocol::Connect => boxed(connect::encode(call, message)),
            Protocol::Grpc(mode) => grpc::encode(mode, call, message),
        }
    }

    /// A refusal, in this protocol's error form.
    pub fn refuse(self, error: RpcError) -> Response<ResponseBody> {
        match self {
            Protocol::Connect => boxed(error.into_response()),
            Protocol::Grpc(mode) => grpc::refuse(mode, error),
        }
    }
}
