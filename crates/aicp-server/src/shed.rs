//! The server-wide cap on inference requests in flight, over HTTP and gRPC together. It is
//! checked before a request's body is read: past the cap a request is refused at once as
//! overloaded, so memory stays bounded (at most the cap times the body limit) however hard
//! clients push. Health, readiness and metadata routes are never shed.

use std::sync::Arc;

use aicp_core::{Error, ErrorKind};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, V2Error};

/// The cap and the requests holding a place under it.
#[derive(Debug, Clone)]
pub struct InFlight {
    places: Arc<Semaphore>,
    limit: usize,
}

/// A request's place under the cap, held until its response is ready.
#[derive(Debug, Clone)]
pub struct Permit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one more request, or the overloaded error when every place is taken.
    pub fn enter(&self) -> Result<Permit, Error> {
        self.places
            .clone()
            .try_acquire_owned()
            .map(|permit| Permit(Arc::new(permit)))
            .map_err(|_| {
                Error::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the server is overloaded: {} requests are in flight (--max-in-flight); retry later",
                        self.limit
                    ),
                )
            })
    }
}

/// Axum middleware for the inference routes: refuses a request over the cap before its body is
/// read, in the shape of the API its path belongs to.
pub async fn http(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    match in_flight.enter() {
        Ok(_permit) => next.run(request).await,
        Err(error) => {
            let mut response = if request.uri().path().starts_with("/v2/") {
                V2Error(error).into_response()
            } else {
                ApiError(error).into_response()
            };
            // The body stays unread, so the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// For the gRPC inference service's interceptor, which runs before the message is decoded:
/// leaves the request's [`Permit`] in its extensions, where the handler keeps it until it
/// answers, or refuses the call as RESOURCE_EXHAUSTED.
pub fn grpc<T>(
    in_flight: &InFlight,
    mut request: tonic::Request<T>,
) -> Result<tonic::Request<T>, tonic::Status> {
    let permit = in_flight.enter().map_err(crate::grpc::status)?;
    request.extensions_mut().insert(permit);
    Ok(request)
}
