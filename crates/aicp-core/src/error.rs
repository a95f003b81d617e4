//! The one error type of the serving path. Its kind decides the status code of every front end
//! (mapped in one place per protocol); its message says what was expected and what came.

use std::fmt;

/// What went wrong, as a caller needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The body is not what the protocol says (not JSON, a bad binary header).
    MalformedBody,
    /// A field, shape, type or value is wrong.
    InvalidArgument,
    /// No such model or version.
    NotFound,
    BodyTooLarge,
    UnsupportedMediaType,
    /// No credentials, or the wrong ones.
    Unauthorized,
    /// Not allowed on this server, whoever asks (a route its configuration turns off).
    Forbidden,
    /// A queue or in-flight cap is full.
    Overloaded,
    /// The model is not ready, or the server is shutting down.
    Unavailable,
    DeadlineExceeded,
    /// The client did not send its request (its body) in the time allowed.
    RequestTimeout,
    /// An engine failed or panicked.
    Internal,
}

impl ErrorKind {
    /// The stable machine-readable code used in error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::MalformedBody => "malformed_body",
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::RequestTimeout => "request_timeout",
            Self::Internal => "internal",
        }
    }
}

/// An error with its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// What a caught panic said: its message when it was a string (as `panic!` makes), else a
/// placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
