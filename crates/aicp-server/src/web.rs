//! `GET /`: the page to draw a digit (or drop a picture) and see the model's top classes as
//! they change. One HTML file with its script and style inline, built into the binary: no
//! build step, no other request than the API's.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;

const PAGE: &str = include_str!("web/index.html");

/// The page only talks to this server, and runs only its own inline script.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; \
                      frame-ancestors 'none'; base-uri 'none'";

/// The page to draw a digit or drop a picture, with the model's top classes as they change.
#[utoipa::path(get, path = "/", tag = "ML API",
    responses((status = 200, description = "The page (HTML)", content_type = "text/html")))]
pub async fn index() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, POLICY),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
