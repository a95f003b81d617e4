//! Admission to the guarded HTTP routes, as one middleware layer: the request's credentials
//! ([`crate::auth`]), then its body read whole within the upload limits ([`crate::upload`]),
//! then, on an inference route, its place under the in-flight cap ([`crate::shed`]). Each
//! refusal is answered in the shape of the API the path belongs to.
//!
//! One layer rather than one per step: an axum middleware layer clones and boxes the route
//! behind it for every request, and every inference call went through all three.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

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
}

/// The middleware ([`axum::middleware::from_fn_with_state`]).
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    if let Some(refusal) = admission.access.refusal(admission.class, &request) {
        return refusal;
    }
    // The path's API decides the shape of a refusal after the request is consumed.
    let path = request.uri().clone();
    let request = match admission.uploads.read(request).await {
        Ok(request) => request,
        Err(error) => return for_path(path.path(), error),
    };
    let _permit = match admission
        .in_flight
        .as_ref()
        .map(InFlight::enter)
        .transpose()
    {
        Ok(permit) => permit,
        Err(error) => return for_path(path.path(), error),
    };
    next.run(request).await
}
