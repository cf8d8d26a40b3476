//! The Connect protocol, unary only: turns an HTTP request into a decoded message and a handler's
//! result into an HTTP response. POST with `application/proto` or `application/json`
//! (`charset=utf-8` allowed), GET for methods without side effects (`message`, `encoding`,
//! `base64`, `compression`, `connect` query parameters), gzip in both directions,
//! `Connect-Protocol-Version` and `Connect-Timeout-Ms` checked, and the request size limit applied
//! to the body as sent and again after decompression.
//!
//! Never panics on input and never buffers more than the limit plus one byte.

use super::error::{Code, RpcError};
use base64::Engine;
use bytes::Bytes;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Serialize, de::DeserializeOwned};
use std::{
    io::{Read, Write},
    time::Duration,
};

/// Responses smaller than this are not worth compressing.
pub(super) const COMPRESS_MIN_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }
}

/// A method as the router knows it.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// e.g. `AppendFact`, for logs and metrics.
    pub name: &'static str,
    /// `NO_SIDE_EFFECTS`: may be called with GET.
    pub get_allowed: bool,
}

/// A decoded request body plus what the response must honour.
pub struct UnaryCall {
    pub codec: Codec,
    pub body: Bytes,
    pub gzip_response: bool,
    pub timeout: Option<Duration>,
    /// The body's bytes taken from the node's request-body budget, given back when the call
    /// ends (`budget.rs`); `None` for GET.
    pub body_grant: Option<super::budget::BodyGrant>,
}

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub body_timeout: Duration,
}

pub(super) fn header_str<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, RpcError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| RpcError::invalid(format!("header {name} is not ASCII")))
        })
        .transpose()
}

/// `Connect-Timeout-Ms`: 1 to 10 ASCII digits, greater than zero.
pub fn parse_timeout(value: &str) -> Result<Duration, RpcError> {
    let valid = !value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u64>() {
        Ok(ms) if valid && ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(RpcError::invalid(format!(
            "Connect-Timeout-Ms {value:?} must be a positive integer of at most 10 digits"
        ))),
    }
}

fn check_protocol_version(value: Option<&str>, expected: &str, name: &str) -> Result<(), RpcError> {
    match value {
        None => Ok(()),
        Some(v) if v == expected => Ok(()),
        Some(v) => Err(RpcError::invalid(format!(
            "{name} {v:?} is not supported; this server speaks Connect protocol version {expected}"
        ))),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            e.split(';')
                .next()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip"))
        })
}

fn unsupported_encoding(encoding: &str) -> RpcError {
    RpcError::new(
        Code::Unimplemented,
        format!("content encoding {encoding:?} is not supported; use gzip or identity"),
    )
    .with_header(header::ACCEPT_ENCODING, "gzip, identity")
}

pub(super) fn too_large(what: &str, limit: usize) -> RpcError {
    RpcError::new(
        Code::ResourceExhausted,
        format!("{what} is larger than the server's limit of {limit} bytes"),
    )
}

/// Decompresses `data` per `encoding`, refusing more than `limit` bytes of output.
pub(super) fn decompress(
    data: Bytes,
    encoding: Option<&str>,
    limit: usize,
) -> Result<Bytes, RpcError> {
    match encoding.map(str::to_ascii_lowercase).as_deref() {
        None | Some("identity") => Ok(data),
        Some("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(data.as_ref())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| RpcError::invalid(format!("request body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(too_large("decompressed request", limit));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(unsupported_encoding(other)),
    }
}

/// How long a refused request's body is read before the refusal is sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads (and drops) a small request body before a refusal made on the headers or path alone.
/// Answering and ending the stream while the client is still sending makes the server reset
/// the stream, and some HTTP/2 clients (curl 7.88) then lose the answer. A body declared larger
/// than the limit is not read: the reset is the lesser harm than reading it.
pub(super) async fn drain_before_refusal(
    headers: &http::HeaderMap,
    body: Incoming,
    limits: BodyLimits,
) {
    let declared = header_str(headers, "content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= limits.max_bytes as u64) {
        let drain = Limited::new(body, limits.max_bytes).collect();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT.min(limits.body_timeout), drain).await;
    }
}

/// What the request line and headers say, once checked.
enum Head {
    Post {
        codec: Codec,
        encoding: Option<String>,
        timeout: Option<Duration>,
    },
    Get {
        codec: Codec,
        message: Bytes,
        timeout: Option<Duration>,
    },
}

fn check_head(
    parts: &http::request::Parts,
    method: &MethodInfo,
    limits: BodyLimits,
) -> Result<Head, RpcError> {
    let headers = &parts.headers;
    let timeout = header_str(headers, "connect-timeout-ms")?
        .map(parse_timeout)
        .transpose()?;
    match parts.method {
        Method::POST => {}
        Method::GET if method.get_allowed => {
            let query = parts.uri.query().unwrap_or("");
            let (codec, message) = parse_get_query(query, limits.max_bytes)?;
            return Ok(Head::Get {
                codec,
                message,
                timeout,
            });
        }
        _ => {
            let allow = if method.get_allowed {
                "GET, POST"
            } else {
                "POST"
            };
            return Err(RpcError::new(
                Code::Unknown,
                format!(
                    "HTTP method {} is not allowed for {}; use {allow}",
                    parts.method, method.name
                ),
            )
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .with_header(header::ALLOW, allow));
        }
    }
    check_protocol_version(
        header_str(headers, "connect-protocol-version")?,
        "1",
        "Connect-Protocol-Version",
    )?;
    let codec = parse_content_type(header_str(headers, "content-type")?)?;
    let encoding = header_str(headers, "content-encoding")?;
    if let Some(e) = encoding
        && !matches!(e.to_ascii_lowercase().as_str(), "gzip" | "identity")
    {
        return Err(unsupported_encoding(e));
    }
    let declared = header_str(headers, "content-length")?.and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(too_large("request body", limits.max_bytes));
    }
    Ok(Head::Post {
        codec,
        encoding: encoding.map(str::to_string),
        timeout,
    })
}

/// Reads and checks a unary request (everything but the message's own decoding).
pub async fn read_request(
    request: Request<Incoming>,
    method: &MethodInfo,
    limits: BodyLimits,
    budget: &super::budget::BodyBudget,
) -> Result<UnaryCall, RpcError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let gzip_response = accepts_gzip(headers);
    let checked = check_head(&parts, method, limits);
    let (codec, encoding, timeout) = match checked {
        Ok(Head::Post {
            codec,
            encoding,
            timeout,
        }) => (codec, encoding, timeout),
        Ok(Head::Get {
            codec,
            message,
            timeout,
        }) => {
            return Ok(UnaryCall {
                codec,
                body: message,
                gzip_response,
                timeout,
                body_grant: None,
            });
        }
        Err(e) => {
            drain_before_refusal(headers, body, limits).await;
            return Err(e);
        }
    };
    let encoding = encoding.as_deref();
    let (body, grant) = read_body(body, limits.max_bytes, limits.body_timeout, budget).await?;
    let body = decompress(body, encoding, limits.max_bytes)?;
    Ok(UnaryCall {
        codec,
        body,
        gzip_response,
        timeout,
        body_grant: Some(grant),
    })
}

/// Reads a whole request body of at most `max` bytes within `body_timeout`, its bytes taken from
/// the node's request-body budget until the returned grant is dropped (`budget.rs`); for the
/// Connect and the gRPC side alike.
pub async fn read_body(
    body: Incoming,
    max: usize,
    body_timeout: Duration,
    budget: &super::budget::BodyBudget,
) -> Result<(Bytes, super::budget::BodyGrant), RpcError> {
    let collected =
        tokio::time::timeout(body_timeout, super::budget::collect_body(body, max, budget))
            .await
            .map_err(|_| {
                super::budget::record_refused(&budget.metrics(), "body_timeout");
                RpcError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "request body not received within {} s",
                        body_timeout.as_secs()
                    ),
                )
            })?;
    collected.map_err(RpcError::from)
}

fn parse_content_type(value: Option<&str>) -> Result<Codec, RpcError> {
    let unsupported = |v: &str| {
        RpcError::new(
            Code::Unknown,
            format!(
                "content type {v:?} is not supported; use application/proto or application/json"
            ),
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .with_header(
            header::HeaderName::from_static("accept-post"),
            "application/proto, application/json",
        )
    };
    let value = value.unwrap_or("");
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let codec = match essence.as_str() {
        "application/proto" => Codec::Proto,
        "application/json" => Codec::Json,
        _ => return Err(unsupported(value)),
    };
    for parameter in parts {
        let (name, v) = parameter.split_once('=').unwrap_or((parameter, ""));
        let v = v.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !v.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported(value));
        }
    }
    Ok(codec)
}

/// GET: `?connect=v1&encoding=json&message=...[&base64=1][&compression=gzip]`.
fn parse_get_query(query: &str, max_bytes: usize) -> Result<(Codec, Bytes), RpcError> {
    if query.len() > max_bytes.saturating_mul(2) {
        return Err(too_large("request query", max_bytes));
    }
    let mut message = None;
    let mut encoding = None;
    let mut base64 = false;
    let mut compression = None;
    let mut connect = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_encoding::percent_decode_str(&value.replace('+', " ")).collect::<Vec<u8>>();
        match name {
            "message" => message = Some(value),
            "encoding" => encoding = Some(String::from_utf8_lossy(&value).into_owned()),
            "base64" => base64 = value == b"1",
            "compression" => compression = Some(String::from_utf8_lossy(&value).into_owned()),
            "connect" => connect = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {}
        }
    }
    check_protocol_version(connect.as_deref(), "v1", "connect query parameter")?;
    let codec = match encoding.as_deref() {
        Some("proto") => Codec::Proto,
        Some("json") => Codec::Json,
        Some(other) => {
            return Err(RpcError::invalid(format!(
                "encoding {other:?} is not supported; use proto or json"
            )));
        }
        None => {
            return Err(RpcError::invalid(
                "GET requests need an encoding query parameter",
            ));
        }
    };
    let raw =
        message.ok_or_else(|| RpcError::invalid("GET requests need a message query parameter"))?;
    let raw = if base64 {
        let text = String::from_utf8_lossy(&raw)
            .trim_end_matches('=')
            .to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|e| RpcError::invalid(format!("message is not valid URL-safe base64: {e}")))?
    } else {
        raw
    };
    if raw.len() > max_bytes {
        return Err(too_large("request message", max_bytes));
    }
    let body = decompress(Bytes::from(raw), compression.as_deref(), max_bytes)?;
    Ok((codec, body))
}

/// Decodes the request message with the call's codec.
pub fn decode<M>(call: &UnaryCall, type_name: &str) -> Result<M, RpcError>
where
    M: prost::Message + Default + DeserializeOwned,
{
    match call.codec {
        Codec::Proto => M::decode(call.body.as_ref()).map_err(|e| {
            RpcError::invalid(format!("request is not a valid binary {type_name}: {e}"))
        }),
        Codec::Json => serde_json::from_slice(&call.body).map_err(|e| {
            RpcError::invalid(format!("request is not a valid JSON {type_name}: {e}"))
        }),
    }
}

/// Encodes a successful response with the call's codec, gzipped when the client accepts it.
pub fn encode<M>(call: &UnaryCall, message: &M) -> Response<Full<Bytes>>
where
    M: prost::Message + Serialize,
{
    let body = match call.codec {
        Codec::Proto => message.encode_to_vec(),
        Codec::Json => match serde_json::to_vec(message) {
            Ok(b) => b,
            Err(e) => {
                return RpcError::new(Code::Internal, format!("encoding the response: {e}"))
                    .into_response();
            }
        },
    };
    let mut gzipped = false;
    let body = if call.gzip_response && body.len() >= COMPRESS_MIN_BYTES {
        let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::fast());
        match encoder.write_all(&body).and_then(|_| encoder.finish()) {
            Ok(compressed) => {
                gzipped = true;
                compressed
            }
            Err(_) => body,
        }
    } else {
        body
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(call.codec.content_type()),
    );
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(
            parse_timeout("1500").ok(),
            Some(Duration::from_millis(1500))
        );
        for bad in ["", "0", "-1", "abc", "12345678901", "1.5", " 10"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            parse_content_type(Some("application/proto")).ok(),
            Some(Codec::Proto)
        );
        assert_eq!(
            parse_content_type(Some("application/json; charset=utf-8")).ok(),
            Some(Codec::Json)
        );
        assert_eq!(
            parse_content_type(Some("Application/JSON")).ok(),
            Some(Codec::Json)
        );
        let e = parse_content_type(Some("application/json; charset=latin1")).err();
        assert_eq!(
            e.map(|e| e.status),
            Some(Some(StatusCode::UNSUPPORTED_MEDIA_TYPE))
        );
        assert!(parse_content_type(Some("image/jpeg")).is_err());
        assert!(parse_content_type(None).is_err());
    }

    #[test]
    fn gzip_bombs_are_refused_after_decompression() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![0u8; 1 << 20]).ok();
        let bomb = encoder.finish().unwrap_or_default();
        assert!(bomb.len() < 4096);
        let err = decompress(Bytes::from(bomb), Some("gzip"), 64 * 1024).err();
        assert_eq!(err.map(|e| e.code), Some(Code::ResourceExhausted));
        let garbage = decompress(Bytes::from_static(b"not gzip"), Some("gzip"), 1024).err();
        assert_eq!(garbage.map(|e| e.code), Some(Code::InvalidArgument));
    }

    #[test]
    fn get_queries() {
        let (codec, body) = parse_get_query("connect=v1&encoding=json&message=%7B%7D", 1024)
            .unwrap_or((Codec::Proto, Bytes::new()));
        assert_eq!((codec, body.as_ref()), (Codec::Json, b"{}".as_ref()));
        let (_, body) = parse_get_query("encoding=json&base64=1&message=e30", 1024)
            .unwrap_or((Codec::Proto, Bytes::new()));
        assert_eq!(body.as_ref(), b"{}");
        assert!(parse_get_query("encoding=json", 1024).is_err());
        assert!(parse_get_query("message=e30", 1024).is_err());
        assert!(parse_get_query("encoding=xml&message=e30", 1024).is_err());
        assert!(parse_get_query("connect=v2&encoding=json&message=e30", 1024).is_err());
        assert_eq!(
            parse_get_query("encoding=json&message=e30&compression=br", 1024)
                .err()
                .map(|e| e.code),
            Some(Code::Unimplemented)
        );
    }
}
