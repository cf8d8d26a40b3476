//! Writing gRPC and gRPC-Web answers: one length-prefixed message then the status trailers
//! (HTTP/2 trailers for gRPC, a final `0x80` frame in the body for gRPC-Web), and refusals as
//! "trailers-only". Never fails: an answer that cannot be encoded becomes an `internal` refusal.

use super::{Flavor, GRPC_ACCEPT_ENCODING, GrpcMode};
use crate::rpc::{
    connect::{COMPRESS_MIN_BYTES, Codec, UnaryCall},
    error::{Code, RpcError},
    protocol::ResponseBody,
};
use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compression, write::GzEncoder};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;
use std::{
    collections::VecDeque,
    convert::Infallible,
    io::Write,
    pin::Pin,
    task::{Context, Poll},
};

/// gRPC percent-encodes `grpc-message` outside printable ASCII, and `%` itself.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE_HEADER: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");

/// A length-prefixed frame.
pub(super) fn frame(flag: u8, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out
}

pub(super) fn status_trailers(code: Option<&RpcError>) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    let (status, message) = match code {
        None => (0, None),
        Some(e) => (e.code.grpc_status(), Some(e.message.as_str())),
    };
    trailers.insert(GRPC_STATUS, HeaderValue::from(u16::from(status)));
    if let Some(message) = message
        && let Ok(value) =
            HeaderValue::from_str(&utf8_percent_encode(message, GRPC_MESSAGE).to_string())
    {
        trailers.insert(GRPC_MESSAGE_HEADER, value);
    }
    trailers
}

/// gRPC-Web trailers: a frame flagged `0x80` holding `name: value\r\n` lines.
pub(super) fn trailer_frame(trailers: &HeaderMap) -> BytesMut {
    let mut text = Vec::new();
    for (name, value) in trailers {
        text.extend_from_slice(name.as_str().as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value.as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    frame(0x80, &text)
}

/// A body of fixed frames: the message, then (gRPC over HTTP/2) the trailers.
struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn response(mode: GrpcMode, status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mode.content_type),
    );
    response
}

/// A successful answer: one message (gzipped when allowed and worth it), then status 0.
pub fn encode<M>(mode: Option<GrpcMode>, call: &UnaryCall, message: &M) -> Response<ResponseBody>
where
    M: prost::Message + Serialize,
{
    let Some(mode) = mode else {
        return refuse(mode, RpcError::new(Code::Internal, "no gRPC mode"));
    };
    let bytes = match mode.codec {
        Codec::Proto => message.encode_to_vec(),
        Codec::Json => match serde_json::to_vec(message) {
            Ok(b) => b,
            Err(e) => {
                let error = RpcError::new(Code::Internal, format!("encoding the response: {e}"));
                return refuse(Some(mode), error);
            }
        },
    };
    let compressed = if call.gzip_response && bytes.len() >= COMPRESS_MIN_BYTES {
        let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::fast());
        encoder
            .write_all(&bytes)
            .and_then(|_| encoder.finish())
            .ok()
    } else {
        None
    };
    let data = match &compressed {
        Some(gzipped) => frame(1, gzipped),
        None => frame(0, &bytes),
    };
    let trailers = status_trailers(None);
    let body = match mode.flavor {
        Flavor::Grpc => Frames(VecDeque::from([
            Frame::data(data.freeze()),
            Frame::trailers(trailers),
        ]))
        .boxed_unsync(),
        Flavor::Web => {
            let mut data = data;
            data.extend_from_slice(&trailer_frame(&trailers));
            Full::new(data.freeze()).boxed_unsync()
        }
    };
    let mut response = response(mode, StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    if compressed.is_some() {
        headers.insert(GRPC_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// A refusal, "trailers-only": in the headers for gRPC, as the only body frame for gRPC-Web.
/// Always HTTP 200, except 415 for a content type this node does not speak.
pub fn refuse(mode: Option<GrpcMode>, error: RpcError) -> Response<ResponseBody> {
    let status = match (mode, error.status) {
        (None, _) | (_, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        _ => StatusCode::OK,
    };
    let mode = mode.unwrap_or(GrpcMode {
        flavor: Flavor::Grpc,
        codec: Codec::Proto,
        content_type: "application/grpc",
    });
    let trailers = status_trailers(Some(&error));
    let mut response = match mode.flavor {
        Flavor::Grpc => {
            let mut r = response(mode, status, Frames(VecDeque::new()).boxed_unsync());
            r.headers_mut().extend(trailers);
            r
        }
        Flavor::Web => {
            let body = Full::new(trailer_frame(&trailers).freeze()).boxed_unsync();
            response(mode, status, body)
        }
    };
    for (name, value) in error.headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}
