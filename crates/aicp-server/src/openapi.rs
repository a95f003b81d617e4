//! The HTTP API's OpenAPI 3.1 document, served at `/openapi.json`, with Swagger UI at `/docs`
//! (built into the binary: it works offline).
//!
//! The document is made from the code: each handler carries its operation (`#[utoipa::path]`),
//! its request and response types their schemas (`ToSchema`), and the router registers each
//! route with its operation (utoipa-axum's `routes!`), so that a route cannot be served without
//! being documented, nor documented without being served. This module holds what belongs to
//! the whole document: its title, tags and security schemes, the two routes Swagger UI serves,
//! and two facts the router knows better than each handler: which routes sit behind a guard
//! ([`guarded`], from the admission table), and which routes are the version twins of another ([`versioned`]).

use axum::Router;
use utoipa::openapi::path::{Operation, PathItem, Paths};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_swagger_ui::SwaggerUi;

use axum::http::Method;

use crate::admission::table;
use crate::auth::Secret;
use crate::error::{Api, ApiErrorBody, V2ErrorBody};

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

/// Documents each operation of `router`, whose routes belong to `api`, as its class in the
/// admission table says: the credentials it takes and the 401 answered without them. The
/// document then says a route is guarded exactly when the admission layer guards it.
pub fn guarded<S: Clone + Send + Sync + 'static>(
    mut router: OpenApiRouter<S>,
    api: Api,
) -> OpenApiRouter<S> {
    let body = match api {
        Api::Ml => ApiErrorBody::name(),
        Api::V2 => V2ErrorBody::name(),
    };
    for (path, item) in &mut router.get_openapi_mut().paths.paths {
        for (method, operation) in operations_by_method(item) {
            let class = table::http_class(&method, path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the admission table"));
            let (schemes, refusal): (&[&str], _) = match class.secret() {
                None => continue,
                Some(Secret::ApiKey) => (&["bearer", "api_key"], "No or wrong API key"),
                Some(Secret::AdminToken) => (&["bearer"], "No or wrong admin token"),
            };
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(body.clone())))
                .build();
            let response = ResponseBuilder::new()
                .description(refusal)
                .content("application/json", content)
                .build();
            let requirements = schemes
                .iter()
                .map(|scheme| SecurityRequirement::new(*scheme, Vec::<String>::new()));
            operation.security = Some(requirements.collect());
            operation
                .responses
                .responses
                .insert("401".into(), RefOr::T(response));
        }
    }
    router
}

/// A model route of the Open Inference Protocol again under
/// `/v2/models/{name}/versions/{version}`, served by the same handler (which reads the version
/// from its path): the twin takes the version parameter, and may answer 400 for one that is not
/// a number and 404 for one the model does not have.
pub fn versioned<S>((schemas, paths, handler): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    let mut twins = Paths::new();
    for (path, mut item) in paths.paths {
        let twin = path.replacen(
            "/v2/models/{name}",
            "/v2/models/{name}/versions/{version}",
            1,
        );
        assert_ne!(twin, path, "{path} is not a model route");
        for operation in operations(&mut item) {
            operation.summary = Some(format!("`{path}`, for the version in the path."));
            operation.operation_id = operation.operation_id.take().map(|id| id + "_version");
            let parameters = operation.parameters.get_or_insert_default();
            if let Some(RefOr::T(name)) = parameters.first() {
                let mut version = name.clone();
                version.name = "version".into();
                version.description = Some("The version number".into());
                parameters.insert(1, RefOr::T(version));
            }
            let responses = &mut operation.responses.responses;
            if let Some(RefOr::T(not_found)) = responses.get_mut("404") {
                not_found.description = "No such model or version".into();
                let mut bad_version = not_found.clone();
                bad_version.description = "Not a version number".into();
                responses
                    .entry("400".into())
                    .or_insert(RefOr::T(bad_version));
            }
        }
        twins.paths.insert(twin, item);
    }
    (schemas, twins, handler)
}

/// The operations of a path, with their methods.
fn operations_by_method(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    let PathItem {
        get,
        put,
        post,
        delete,
        options,
        head,
        patch,
        trace,
        ..
    } = item;
    [
        (Method::GET, get),
        (Method::PUT, put),
        (Method::POST, post),
        (Method::DELETE, delete),
        (Method::OPTIONS, options),
        (Method::HEAD, head),
        (Method::PATCH, patch),
        (Method::TRACE, trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// The operations of a path, whatever their method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    operations_by_method(item).map(|(_, operation)| operation)
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
#[allow(dead_code)] // Never called: [`ApiDoc`] lists its operation.
pub fn openapi_json() {}

/// Swagger UI over this document.
#[utoipa::path(get, path = "/docs", tag = "Health",
    responses((status = 200, description = "The interactive documentation (redirects to /docs/)", content_type = "text/html", body = String)))]
#[allow(dead_code)] // Never called: [`ApiDoc`] lists its operation.
pub fn docs() {}
