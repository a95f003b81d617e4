//! How errors look on the ML API: a status code from the error's kind (the one mapping for this
//! API) and the body `{"error": {"code", "message"}}`.

use aicp_core::{Error, ErrorKind};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

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
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Error { kind, message } = self.0;
        if kind == ErrorKind::Internal {
            tracing::error!("{message}");
        } else {
            tracing::debug!("{}: {message}", kind.code());
        }
        let body = serde_json::json!({"error": {"code": kind.code(), "message": message}});
        (status(kind), Json(body)).into_response()
    }
}

/// The body of a request, or the error that says why there is none (too large: 413).
pub fn body(
    bytes: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    bytes.map_err(|rejection| {
        let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorKind::BodyTooLarge
        } else {
            ErrorKind::MalformedBody
        };
        ApiError(Error::new(kind, rejection.body_text()))
    })
}

/// Parses a JSON body: broken JSON is a malformed body (400); JSON of the wrong shape is an
/// invalid argument (422) whose message names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError(Error::new(
            ErrorKind::MalformedBody,
            format!("malformed JSON: {e}"),
        ))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            malformed(inner)
        } else if path == "." {
            ApiError(Error::invalid(format!("invalid request: {inner}")))
        } else {
            ApiError(Error::invalid(format!("invalid field `{path}`: {inner}")))
        }
    })?;
    // Anything after the JSON value is as broken as a syntax error inside it.
    deserializer.end().map_err(malformed)?;
    Ok(value)
}
