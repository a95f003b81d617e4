//! Admission to the gRPC methods, as one tower layer over every service the gRPC port serves
//! (inference, health, reflection): the method's class from the
//! [admission table](super::table) (a method it does not list is refused), the call's deadline
//! stamped as it arrives, its credentials ([`crate::auth`]), its messages held to the upload
//! limits as they arrive ([`crate::upload`]), and, for a unary inference call, its place under
//! the in-flight cap ([`crate::shed`]) once its message is whole. A streaming inference call's
//! messages each take their place in its handler, as they come: an open stream waiting for its
//! next message holds none.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aicp_core::{Error, ErrorKind};
use axum::body::Bytes;
use axum::http::{Request, Response};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tower::{Layer, Service};

use super::table::{self, Class, Streaming};
use crate::auth::{Access, Credentials};
use crate::error::grpc_status;
use crate::shed::InFlight;
use crate::upload::{GrpcUpload, Uploads};

/// What every gRPC method asks of a call before its handler runs.
#[derive(Debug, Clone)]
pub struct GrpcAdmission {
    access: Access,
    uploads: Uploads,
    in_flight: InFlight,
}

impl GrpcAdmission {
    pub fn new(access: Access, uploads: Uploads, in_flight: InFlight) -> Self {
        Self {
            access,
            uploads,
            in_flight,
        }
    }

    /// Admits `request` and runs it on `services`, or answers the refusal as a gRPC status.
    async fn admit<B, S>(&self, mut request: Request<B>, mut services: S) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        let Some((class, streaming)) = table::grpc_method(request.uri().path()) else {
            let path = request.uri().path();
            tracing::error!("gRPC method {path} is not in the admission table: refused");
            return refused(Error::new(
                ErrorKind::Forbidden,
                format!("the method {path} is not open to anyone"),
            ));
        };
        crate::grpc::stamp_deadline(&mut request);
        if let Some(secret) = class.secret()
            && let Err(error) = self
                .access
                .check(secret, Credentials::from_headers(request.headers()))
        {
            return refused(error);
        }
        let (parts, body) = request.into_parts();
        let body = GrpcUpload::new(body, self.uploads.clone(), streaming == Streaming::Stream);
        if class != Class::Inference || streaming == Streaming::Stream {
            let Ok(response) = services
                .call(Request::from_parts(parts, Body::new(body)))
                .await;
            return response;
        }
        // A unary inference call: its message whole, then its place.
        let message = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(status) => return status.into_http(),
        };
        let _permit = match self.in_flight.enter() {
            Ok(permit) => permit,
            Err(error) => return refused(error),
        };
        let request = Request::from_parts(parts, Body::new(Full::new(message)));
        let Ok(response) = services.call(request).await;
        response
    }
}

fn refused(error: Error) -> Response<Body> {
    grpc_status(error).into_http()
}

impl<S> Layer<S> for GrpcAdmission {
    type Service = GrpcAdmit<S>;

    fn layer(&self, services: S) -> GrpcAdmit<S> {
        GrpcAdmit {
            admission: Arc::new(self.clone()),
            services,
        }
    }
}

/// The gRPC services behind their [`GrpcAdmission`].
#[derive(Clone)]
pub struct GrpcAdmit<S> {
    admission: Arc<GrpcAdmission>,
    services: S,
}

impl<B, S> Service<Request<B>> for GrpcAdmit<S>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.services.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The services that were polled ready serve this call; a clone stays for the next.
        let clone = self.services.clone();
        let services = std::mem::replace(&mut self.services, clone);
        let admission = self.admission.clone();
        Box::pin(async move { Ok(admission.admit(request, services).await) })
    }
}
