//! How errors look on the wire: a status code from the error's kind (one mapping per API) and the
//! API's body: `{"error": {"code", "message"}}` on the ML API, `{"error": "message"}` on the
//! Open Inference Protocol's REST routes, a gRPC status over gRPC. Also the two ways a request body goes wrong before any
//! handler logic: too large, and not the JSON it should be.

use aicp_core::{Error, ErrorKind};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The ML API's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiErrorDetail {
    /// One of `malformed_body`, `invalid_argument`, `not_found`, `body_too_large`,
    /// `unsupported_media_type`, `unauthorized`, `forbidden`, `overloaded`, `unavailable`,
    /// `deadline_exceeded`, `request_timeout`, `internal`.
    #[schema(example = "invalid_argument")]
    pub code: &'static str,
    /// What was expected and what came.
    pub message: String,
}

/// The Open Inference Protocol's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct V2ErrorBody {
    /// What was expected and what came.
    pub error: String,
}

/// An [`Error`] on its way out of an ML API handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The ML API's status for each kind of error.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::MalformedBody => StatusCode::BAD_REQUEST,
        ErrorKind::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        log(&self.0);
        let Error { kind, message } = self.0;
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: kind.code(),
                message,
            },
        };
        with_headers(kind, (status(kind), Json(body)).into_response())
    }
}

/// An [`Error`] on its way out of an Open Inference Protocol route.
#[derive(Debug)]
pub struct V2Error(pub Error);

impl From<Error> for V2Error {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The Open Inference Protocol's status for each kind of error: every bad request is a 400, an
/// overloaded server a 503.
pub fn v2_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::MalformedBody | ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        other => status(other),
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        log(&self.0);
        let Error { kind, message } = self.0;
        let body = V2ErrorBody { error: message };
        with_headers(kind, (v2_status(kind), Json(body)).into_response())
    }
}

/// The HTTP API a route belongs to, which decides the shape of its errors: the router group
/// it is mounted in says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// aicp's ML API, the page, metrics and the documentation.
    Ml,
    /// The Open Inference Protocol's REST routes.
    V2,
}

impl Api {
    /// `error` answered in this API's shape.
    pub fn error(self, error: Error) -> Response {
        match self {
            Self::Ml => ApiError(error).into_response(),
            Self::V2 => V2Error(error).into_response(),
        }
    }
}

/// The gRPC status for each kind of error.
pub fn grpc_status(error: Error) -> tonic::Status {
    use tonic::Code;
    let code = match error.kind {
        ErrorKind::MalformedBody | ErrorKind::InvalidArgument | ErrorKind::UnsupportedMediaType => {
            Code::InvalidArgument
        }
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::BodyTooLarge | ErrorKind::Overloaded => Code::ResourceExhausted,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded | ErrorKind::RequestTimeout => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!("{}", error.message);
    }
    let mut status = tonic::Status::new(code, error.message);
    if error.kind == ErrorKind::Overloaded {
        // gRPC's own retry policy reads this to wait before its next attempt.
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", (RETRY_AFTER_SECS * 1000).into());
    }
    status
}

/// How long an overloaded server asks clients to wait before they retry, in seconds: the
/// `Retry-After` of a 429 or 503 and the gRPC `grpc-retry-pushback-ms` of RESOURCE_EXHAUSTED.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The headers an error's kind calls for. A body too large is left unread, so the connection
/// cannot carry another request: say so (`Connection: close`), or a client that reuses it fails
/// its next request; likewise a body that stopped arriving. An overloaded server says when to
/// come back (`Retry-After`).
fn with_headers(kind: ErrorKind, mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    match kind {
        ErrorKind::BodyTooLarge | ErrorKind::RequestTimeout => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        ErrorKind::Overloaded => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        _ => {}
    }
    response
}

fn log(error: &Error) {
    if error.kind == ErrorKind::Internal {
        tracing::error!("{}", error.message);
    } else {
        tracing::debug!("{}: {}", error.kind.code(), error.message);
    }
}

/// The body of a request, or the error that says why there is none (too large: 413).
pub fn body(
    bytes: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, Error> {
    bytes.map_err(|rejection| {
        let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::BodyTooLarge
        } else {
            ErrorKind::MalformedBody
        };
        Error::new(kind, rejection.body_text())
    })
}

/// Parses a JSON body: broken JSON is a malformed body; JSON of the wrong shape is an invalid
/// argument whose message names the field. The field is found by parsing again, with its path
/// tracked: tracking costs on every value, and only a refused body needs it.
pub fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|_| refusal::<T>(bytes))
}

/// Why `bytes` is not a `T`.
fn refusal<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Error {
    let malformed =
        |e: serde_json::Error| Error::new(ErrorKind::MalformedBody, format!("malformed JSON: {e}"));
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        // Anything after the JSON value is as broken as a syntax error inside it.
        Ok(_) => deserializer.end().map_or_else(malformed, |()| {
            Error::internal("a JSON body parsed on its second try")
        }),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                malformed(inner)
            } else if path == "." {
                Error::invalid(format!("invalid request: {inner}"))
            } else {
                Error::invalid(format!("invalid field `{path}`: {inner}"))
            }
        }
    }
}
