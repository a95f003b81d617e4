//! How errors look over HTTP: a status code from the error's kind (one mapping per API) and the
//! API's body: `{"error": {"code", "message"}}` on the ML API, `{"error": "message"}` on the
//! Open Inference Protocol's routes. Also the two ways a request body goes wrong before any
//! handler logic: too large, and not the JSON it should be.

use aicp_core::{Error, ErrorKind};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

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
        let body = serde_json::json!({"error": {"code": kind.code(), "message": message}});
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
        let body = serde_json::json!({"error": self.0.message});
        with_headers(
            self.0.kind,
            (v2_status(self.0.kind), Json(body)).into_response(),
        )
    }
}

/// An error answered in the shape of the API `path` belongs to: the Open Inference Protocol's
/// under `/v2`, the ML API's anywhere else.
pub fn for_path(path: &str, error: Error) -> Response {
    if path == "/v2" || path.starts_with("/v2/") {
        V2Error(error).into_response()
    } else {
        ApiError(error).into_response()
    }
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
/// argument whose message names the field.
pub fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    let malformed =
        |e: serde_json::Error| Error::new(ErrorKind::MalformedBody, format!("malformed JSON: {e}"));
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            malformed(inner)
        } else if path == "." {
            Error::invalid(format!("invalid request: {inner}"))
        } else {
            Error::invalid(format!("invalid field `{path}`: {inner}"))
        }
    })?;
    // Anything after the JSON value is as broken as a syntax error inside it.
    deserializer.end().map_err(malformed)?;
    Ok(value)
}
