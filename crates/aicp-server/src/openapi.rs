//! The HTTP API's OpenAPI 3.1 document, served at `/openapi.json`, with Swagger UI at `/docs`
//! (built into the binary: it works offline).
//!
//! The document is made from the code: each handler carries its operation (`#[utoipa::path]`),
//! its request and response types their schemas (`ToSchema`), and the router registers each
//! route with its operation (utoipa-axum's `routes!`), so that a route cannot be served without
//! being documented, nor documented without being served. This module holds what belongs to
//! the whole document: its title, tags and security schemes, and the two routes Swagger UI
//! serves.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aicp",
        description = "The AI Compute Platform's HTTP API: the ML API (`/api/v1/ml`), the Open \
            Inference Protocol (KServe V2) over REST with Triton's extensions (binary tensors, \
            classification, repository, configuration, statistics), health, metrics. \
            Inference, listing and metadata routes need the API key when the server has one; \
            loading and unloading need the admin token; health, readiness, metrics and these \
            docs are open."
    ),
    paths(openapi_json, docs),
    modifiers(&Security),
    tags(
        (name = "ML API", description = "Classification and raw inference in aicp's own JSON."),
        (name = "Open Inference Protocol", description = "KServe V2 over REST, as Triton serves it."),
        (name = "Model repository", description = "What the model directory holds; loading and unloading (admin token)."),
        (name = "Health", description = "Liveness, readiness and metrics: always open."),
    )
)]
pub struct ApiDoc;

/// The credentials: a bearer token (the API key, or the admin token for model management), or
/// the API key in `X-API-Key`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API key (inference routes, when the server has one) or the admin \
                         token (load and unload).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The API key, instead of a bearer token.",
            ))),
        );
    }
}

/// `/openapi.json` and `/docs`, serving `document`: [`ApiDoc`] merged with the router's
/// operations.
pub fn router(document: utoipa::openapi::OpenApi) -> Router {
    SwaggerUi::new("/docs")
        .url("/openapi.json", document)
        .into()
}

// The two routes utoipa-swagger-ui serves, which it does not document itself.

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "Health",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub fn openapi_json() {}

/// Swagger UI over this document.
#[utoipa::path(get, path = "/docs", tag = "Health",
    responses((status = 200, description = "The interactive documentation (redirects to /docs/)", content_type = "text/html", body = String)))]
pub fn docs() {}
