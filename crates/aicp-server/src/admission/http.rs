//! Admission to the HTTP routes, as one middleware layer on each API's router group: the
//! route's class from the [admission table](super::table) (a route it does not list is
//! refused), then the request's credentials ([`crate::auth`]), then its body read whole within
//! the upload limits ([`crate::upload`]), then, for inference, its place under the in-flight
//! cap ([`crate::shed`]). Each refusal is answered in the shape of the group's API.
//!
//! One layer rather than one per step, and a tower [`Layer`] rather than axum's `from_fn`: an
//! axum middleware layer clones its state and boxes the route behind it for every request, and
//! every inference call went through all three.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aicp_core::{Error, ErrorKind};
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use super::table::{self, Class};
use crate::auth::Access;
use crate::error::Api;
use crate::shed::InFlight;
use crate::upload::Uploads;

/// What the routes of one API ask of a request before their handlers run.
#[derive(Debug, Clone)]
pub struct Admission {
    access: Access,
    uploads: Uploads,
    in_flight: InFlight,
    api: Api,
}

impl Admission {
    /// Admission to the routes of `api`.
    pub fn new(access: Access, uploads: Uploads, in_flight: InFlight, api: Api) -> Self {
        Self {
            access,
            uploads,
            in_flight,
            api,
        }
    }

    /// Admits `request` and runs it on `route`, or answers the refusal.
    async fn admit<S>(&self, request: Request, mut route: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        let Some(class) = table::http_class(request.method(), path) else {
            tracing::error!(
                "{} {path} is not in the admission table: refused",
                request.method()
            );
            return self.api.error(Error::new(
                ErrorKind::Forbidden,
                format!("{} {path} is not open to anyone", request.method()),
            ));
        };
        if let Some(secret) = class.secret()
            && let Some(refusal) = self.access.refusal(secret, &request, self.api)
        {
            return refusal;
        }
        if class == Class::Open {
            let Ok(response) = route.call(request).await;
            return response;
        }
        let request = match self.uploads.read(request).await {
            Ok(request) => request,
            Err(error) => return self.api.error(error),
        };
        let _permit = match (class == Class::Inference)
            .then(|| self.in_flight.enter())
            .transpose()
        {
            Ok(permit) => permit,
            Err(error) => return self.api.error(error),
        };
        let Ok(response) = route.call(request).await;
        response
    }
}

/// The layer puts the [`Admission`] in front of each route of its group, behind an `Arc` that
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
