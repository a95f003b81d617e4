//! Admission to the guarded HTTP routes, as one middleware layer: the request's credentials
//! ([`crate::auth`]), then its body read whole within the upload limits ([`crate::upload`]),
//! then, on an inference route, its place under the in-flight cap ([`crate::shed`]). Each
//! refusal is answered in the shape of the API the path belongs to.
//!
//! One layer rather than one per step, and a tower [`Layer`] rather than axum's `from_fn`: an
//! axum middleware layer clones its state and boxes the route behind it for every request, and
//! every inference call went through all three.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};

use crate::auth::{Access, Class};
use crate::error::for_path;
use crate::shed::InFlight;
use crate::upload::Uploads;

/// What a class of routes asks of a request before its handler runs.
#[derive(Debug, Clone)]
pub struct Admission {
    access: Access,
    class: Class,
    uploads: Uploads,
    /// The cap inference routes count against; `None` for routes that are never shed.
    in_flight: Option<InFlight>,
}

impl Admission {
    /// Inference: the API key, the body, a place under the cap.
    pub fn inference(access: Access, uploads: Uploads, in_flight: InFlight) -> Self {
        Self {
            access,
            class: Class::Inference,
            uploads,
            in_flight: Some(in_flight),
        }
    }

    /// Listings, metadata and statistics: the API key and the body, never shed.
    pub fn reads(access: Access, uploads: Uploads) -> Self {
        Self {
            access,
            class: Class::Inference,
            uploads,
            in_flight: None,
        }
    }

    /// Loading and unloading models: the admin token and the body.
    pub fn admin(access: Access, uploads: Uploads) -> Self {
        Self {
            access,
            class: Class::Admin,
            uploads,
            in_flight: None,
        }
    }

    /// Admits `request` and runs it on `route`, or answers the refusal.
    async fn admit<S>(&self, request: Request, mut route: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        if let Some(refusal) = self.access.refusal(self.class, &request) {
            return refusal;
        }
        // The path's API decides the shape of a refusal after the request is consumed.
        let path = request.uri().clone();
        let request = match self.uploads.read(request).await {
            Ok(request) => request,
            Err(error) => return for_path(path.path(), error),
        };
        let _permit = match self.in_flight.as_ref().map(InFlight::enter).transpose() {
            Ok(permit) => permit,
            Err(error) => return for_path(path.path(), error),
        };
        let Ok(response) = route.call(request).await;
        response
    }
}

/// The layer puts the [`Admission`] in front of each route of its class, behind an `Arc` that
/// the route's requests share.
impl<S> Layer<S> for Admission {
    type Service = Admit<S>;

    fn layer(&self, route: S) -> Admit<S> {
        Admit {
            admission: Arc::new(self.clone()),
            route,
        }
    }
}

/// A route behind its [`Admission`].
#[derive(Clone)]
pub struct Admit<S> {
    admission: Arc<Admission>,
    route: S,
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.route.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The route that was polled ready serves this request; a clone stays for the next.
        let clone = self.route.clone();
        let route = std::mem::replace(&mut self.route, clone);
        let admission = self.admission.clone();
        Box::pin(async move { Ok(admission.admit(request, route).await) })
    }
}
