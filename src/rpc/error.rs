//! Connect error codes and the one place where every failure becomes a wire status (the
//! linkerd2-proxy `errors/respond.rs` habit): store, validation and protocol errors all pass
//! through [`RpcError`] and [`RpcError::into_response`] (Connect); `grpc.rs` turns the same
//! [`RpcError`] into gRPC trailers with [`Code::grpc_status`].

use crate::{fact::FactError, store::StoreError};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The gRPC status number of each code (the Connect codes are gRPC's, by name).
    pub fn grpc_status(self) -> u8 {
        match self {
            Code::Canceled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }

    /// The HTTP status the Connect protocol assigns to each code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A failed call: a Connect code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RpcError {
    pub code: Code,
    pub message: String,
    /// Extra response headers (e.g. `Allow`, `Accept-Encoding`).
    pub headers: Vec<(header::HeaderName, &'static str)>,
    /// Overrides the code's HTTP status (405, 415 for the Connect protocol's own refusals).
    pub status: Option<StatusCode>,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            headers: Vec::new(),
            status: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The Connect unary error: JSON `{"code", "message"}` with the code's HTTP status.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status.unwrap_or_else(|| self.code.http_status());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

impl From<FactError> for RpcError {
    fn from(e: FactError) -> Self {
        RpcError::invalid(e.to_string())
    }
}

impl From<super::budget::BodyError> for RpcError {
    fn from(e: super::budget::BodyError) -> Self {
        use super::budget::BodyError;
        match e {
            BodyError::TooLarge { max } => RpcError::new(
                Code::ResourceExhausted,
                format!("request body is larger than the server's limit of {max} bytes"),
            ),
            BodyError::BudgetExhausted { .. } => {
                RpcError::new(Code::ResourceExhausted, e.to_string())
            }
            BodyError::Read(_) => RpcError::new(Code::Canceled, e.to_string()),
        }
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Conflict { .. } | StoreError::ObjectExists { .. } => Code::AlreadyExists,
            StoreError::Full { .. } => Code::ResourceExhausted,
            StoreError::UnknownConsumer(_) | StoreError::ObjectNotFound { .. } => Code::NotFound,
            StoreError::BeyondFetched { .. } => Code::FailedPrecondition,
            StoreError::Gap { .. } => Code::DataLoss,
            StoreError::ObjectOffset { .. } => Code::OutOfRange,
            StoreError::InFlight { .. } | StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt(_) => Code::DataLoss,
            // Only the pull streams puts; a PutObject's bytes are whole before the store sees them.
            StoreError::ObjectMismatch { .. } => Code::InvalidArgument,
            StoreError::ObjectSource { .. } => Code::Unavailable,
        };
        RpcError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_connect_protocol() {
        assert_eq!(Code::InvalidArgument.http_status().as_u16(), 400);
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
        assert_eq!(Code::ResourceExhausted.http_status().as_u16(), 429);
        assert_eq!(Code::Unimplemented.http_status().as_u16(), 501);
        assert_eq!(Code::DeadlineExceeded.http_status().as_u16(), 504);
        assert_eq!(Code::Unauthenticated.http_status().as_u16(), 401);
    }

    #[test]
    fn grpc_status_numbers() {
        assert_eq!(Code::Canceled.grpc_status(), 1);
        assert_eq!(Code::InvalidArgument.grpc_status(), 3);
        assert_eq!(Code::PermissionDenied.grpc_status(), 7);
        assert_eq!(Code::ResourceExhausted.grpc_status(), 8);
        assert_eq!(Code::Unimplemented.grpc_status(), 12);
        assert_eq!(Code::DataLoss.grpc_status(), 15);
        assert_eq!(Code::Unauthenticated.grpc_status(), 16);
    }

    #[test]
    fn store_errors_map_to_the_spec_codes() {
        let code = |e: StoreError| RpcError::from(e).code;
        assert_eq!(
            code(StoreError::Conflict {
                message_id: "m".into(),
                category: crate::fact::Category::Operational,
                offset: 1
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(StoreError::Gap {
                consumer: "c".into(),
                from: 1,
                to: 2
            }),
            Code::DataLoss
        );
        assert_eq!(
            code(StoreError::BeyondFetched {
                consumer: "c".into(),
                offset: 9,
                fetched: 1
            }),
            Code::FailedPrecondition
        );
        assert_eq!(code(StoreError::Unavailable("x".into())), Code::Unavailable);
    }
}
