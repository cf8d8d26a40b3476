//! gRPC and gRPC-Web, unary only, on the Connect listener: the same methods for .NET, Java and Go
//! gRPC stubs and for browsers behind no proxy. A request is one length-prefixed message (flag
//! byte, 4-byte big-endian length); the answer is one message and the status as trailers —
//! HTTP/2 trailers for gRPC, a final frame flagged `0x80` in the body for gRPC-Web. A refusal is
//! "trailers-only": gRPC puts `grpc-status` / `grpc-message` in the response headers, gRPC-Web
//! sends only the trailer frame. `grpc-timeout` bounds the call like `Connect-Timeout-Ms`;
//! `grpc-encoding: gzip` messages are accepted and answers of 1 KiB or more are gzipped when
//! `grpc-accept-encoding` allows it. The size limit applies to the message as sent and again
//! after decompression.
//!
//! Limits: unary only (no streams, like the Connect side); no `application/grpc-web-text`
//! (base64) and no codec other than proto and JSON (refused with HTTP 415); gRPC proper needs
//! HTTP/2 (gRPC-Web works over HTTP/1.1 too). Never panics on input and never buffers more than
//! the limit plus the 5-byte prefix and one byte.

use super::{
    budget::BodyBudget,
    connect::{
        BodyLimits, Codec, UnaryCall, decompress, drain_before_refusal, header_str, read_body,
        too_large,
    },
    error::{Code, RpcError},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use hyper::body::Incoming;
use std::time::Duration;

#[path = "grpc_reply.rs"]
mod reply;
pub use reply::{encode, refuse};

const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Grpc,
    Web,
}

/// What the request's content type asked for; the answer carries the same content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMode {
    pub flavor: Flavor,
    pub codec: Codec,
    content_type: &'static str,
}

impl GrpcMode {
    /// `essence` is the lowercased content type without parameters.
    pub fn parse(essence: &str) -> Option<GrpcMode> {
        let (flavor, codec, content_type) = match essence {
            "application/grpc" => (Flavor::Grpc, Codec::Proto, "application/grpc"),
            "application/grpc+proto" => (Flavor::Grpc, Codec::Proto, "application/grpc+proto"),
            "application/grpc+json" => (Flavor::Grpc, Codec::Json, "application/grpc+json"),
            "application/grpc-web" => (Flavor::Web, Codec::Proto, "application/grpc-web"),
            "application/grpc-web+proto" => {
                (Flavor::Web, Codec::Proto, "application/grpc-web+proto")
            }
            "application/grpc-web+json" => (Flavor::Web, Codec::Json, "application/grpc-web+json"),
            _ => return None,
        };
        Some(GrpcMode {
            flavor,
            codec,
            content_type,
        })
    }
}

/// `grpc-timeout`: 1 to 8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Result<Duration, RpcError> {
    let invalid = || {
        RpcError::invalid(format!(
            "grpc-timeout {value:?} must be 1 to 8 digits and a unit (H, M, S, m, u or n)"
        ))
    };
    let (digits, unit) = value.split_at(value.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(invalid()),
    })
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(GRPC_ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.trim().eq_ignore_ascii_case("gzip"))
}

/// Checks the request line and headers; returns the message encoding and the deadline.
fn check_head(
    mode: Option<GrpcMode>,
    parts: &http::request::Parts,
    limits: BodyLimits,
) -> Result<(GrpcMode, Option<String>, Option<Duration>), RpcError> {
    let headers = &parts.headers;
    let mode = mode.ok_or_else(|| {
        let value = header_str(headers, "content-type").ok().flatten().unwrap_or("");
        RpcError::new(
            Code::Unknown,
            format!(
                "content type {value:?} is not supported; use application/grpc[+proto|+json] or application/grpc-web[+proto|+json]"
            ),
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    })?;
    if parts.method != Method::POST {
        return Err(RpcError::new(
            Code::Unimplemented,
            format!("gRPC calls use POST, not {}", parts.method),
        ));
    }
    if mode.flavor == Flavor::Grpc && parts.version != http::Version::HTTP_2 {
        return Err(RpcError::new(
            Code::Unimplemented,
            "gRPC needs HTTP/2; over HTTP/1.1 use gRPC-Web or Connect",
        ));
    }
    let timeout = header_str(headers, "grpc-timeout")?
        .map(parse_timeout)
        .transpose()?;
    let encoding = header_str(headers, "grpc-encoding")?.map(str::to_ascii_lowercase);
    if let Some(e) = encoding.as_deref()
        && !matches!(e, "gzip" | "identity")
    {
        return Err(RpcError::new(
            Code::Unimplemented,
            format!("message encoding {e:?} is not supported; use gzip or identity"),
        )
        .with_header(GRPC_ACCEPT_ENCODING, "gzip, identity"));
    }
    let declared = header_str(headers, "content-length")?.and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64 + 5) {
        return Err(too_large("request message", limits.max_bytes));
    }
    Ok((mode, encoding, timeout))
}

/// Reads and checks a unary gRPC request: one message, decompressed, within the limits.
pub async fn read_request(
    mode: Option<GrpcMode>,
    request: Request<Incoming>,
    limits: BodyLimits,
    budget: &BodyBudget,
) -> Result<UnaryCall, RpcError> {
    let (parts, body) = request.into_parts();
    let (mode, encoding, timeout) = match check_head(mode, &parts, limits) {
        Ok(head) => head,
        Err(e) => {
            drain_before_refusal(&parts.headers, body, limits).await;
            return Err(e);
        }
    };
    // The 5-byte prefix rides on top of the message limit; the bytes come from the node's
    // request-body budget like a Connect body's (`budget.rs`).
    let (body, grant) = read_body(body, limits.max_bytes + 5, limits.body_timeout, budget).await?;
    let message = unframe(body, encoding.as_deref(), limits.max_bytes)?;
    Ok(UnaryCall {
        codec: mode.codec,
        body: message,
        gzip_response: accepts_gzip(&parts.headers),
        timeout,
        body_grant: Some(grant),
    })
}

/// The one message of a unary request body.
fn unframe(body: Bytes, encoding: Option<&str>, limit: usize) -> Result<Bytes, RpcError> {
    if body.is_empty() {
        return Err(RpcError::invalid(
            "a unary gRPC request carries exactly one message; the body is empty",
        ));
    }
    if body.len() < 5 {
        return Err(RpcError::invalid(format!(
            "the message prefix is truncated: {} of 5 bytes",
            body.len()
        )));
    }
    let flag = body[0];
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if flag > 1 {
        return Err(RpcError::invalid(format!(
            "message flag {flag:#04x} is not valid in a request (0: plain, 1: compressed)"
        )));
    }
    if length > limit {
        return Err(too_large("request message", limit));
    }
    let end = 5 + length;
    if body.len() < end {
        return Err(RpcError::invalid(format!(
            "the message is truncated: {} of {length} bytes",
            body.len() - 5
        )));
    }
    if body.len() > end {
        return Err(RpcError::invalid(
            "a unary gRPC request carries exactly one message; more followed",
        ));
    }
    let message = body.slice(5..end);
    if flag == 0 {
        return Ok(message);
    }
    match encoding {
        Some("gzip") => decompress(message, Some("gzip"), limit),
        _ => Err(RpcError::invalid(
            "the message is flagged compressed but grpc-encoding names no compression",
        )),
    }
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
