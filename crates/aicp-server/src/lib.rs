//! aicp's front ends: the HTTP ML API and the Open Inference Protocol over REST on one port,
//! and over gRPC on another. Every front end only translates its wire format to the runtime's
//! request and back; validation and execution live in `aicp-runtime`.
//!
//! What the `aicp` binary needs is all there is: [`serve`] with its [`ServeOptions`] (which
//! name [`Access`], [`TlsFiles`] and [`ConnectionLimits`]), the [`Event`]s it reports, and the
//! generated gRPC types ([`proto`]) for clients. The rest is the crate's own; its in-process
//! tests live inside it (`src/tests/`).
//!
//! Inside: `admission` (the table of every route and method, and the layers that read it),
//! `ml_api`, `image_api`, `text_api`, `v2_rest` and `grpc` (the front ends), `oip` (what REST
//! and gRPC share), `connections`, `upload`, `shed`, `auth`, `tls` (the limits), `metrics`,
//! `openapi`, `request_id`, and `startup` ([`serve`]'s stages).

#![deny(missing_docs)]

mod admission;
mod auth;
mod connections;
mod error;
mod grpc;
mod image_api;
mod metrics;
mod ml_api;
mod oip;
mod openapi;
mod request_id;
mod shed;
mod text_api;
mod tls;
mod upload;
mod v2_rest;
mod web;

mod startup;
#[cfg(test)]
mod tests;

pub use auth::Access;
pub use connections::ConnectionLimits;
pub use grpc::proto;
pub use startup::serve;
pub use tls::TlsFiles;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use admission::{Admission, GrpcAdmission};
use aicp_runtime::{
    Batching, ControlMode, Engines, GpuUse, ModelControl, ModelState, Repository, Runtime,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use error::Api;
use grpc::{GrpcInferenceServiceServer, InferenceService};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use openapi::{guarded, versioned};
use shed::InFlight;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tower::BoxError;
use tower_http::trace::TraceLayer;
use upload::Uploads;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where HTTP (the ML API and the Open Inference Protocol's REST routes) listens.
    pub addr: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens; `None`: nowhere.
    pub grpc_addr: Option<SocketAddr>,
    /// The model directory: one subdirectory per model.
    pub models: PathBuf,
    /// ONNX Runtime's library, when given explicitly.
    pub ort_library: Option<PathBuf>,
    /// Whether models may run on a GPU.
    pub gpu: GpuUse,
    /// Per-shape plans a model keeps when its model.toml does not say (`--plan-cache-size`).
    pub plan_cache: usize,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Bytes of request bodies being received, all connections together.
    pub upload_memory_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Open connections and how long they may hold a place unused.
    pub connections: ConnectionLimits,
    /// TLS on the HTTP and gRPC listeners; `None`: plain text.
    pub tls: Option<TlsFiles>,
    /// Inference requests in flight, HTTP and gRPC together, before new ones are refused.
    pub max_in_flight: usize,
    /// The scheduler's settings for models whose `[batching]` table leaves them out.
    pub batching: Batching,
    /// How the served models follow the model directory.
    pub model_control: ControlMode,
    /// How often the directory is polled, in `poll` mode.
    pub poll_interval: std::time::Duration,
    /// Secrets: the API key for inference routes, the admin token for model management.
    pub access: Access,
    /// Where `/metrics` is served on its own; `None`: on the main HTTP port.
    pub metrics_addr: Option<SocketAddr>,
    /// How long the server goes on serving, not ready, once shutdown starts.
    pub shutdown_delay: std::time::Duration,
    /// How long requests in flight may take to finish once the listeners close.
    pub drain_timeout: std::time::Duration,
}

/// What the HTTP routes work with.
#[derive(Clone)]
pub(crate) struct Services {
    pub runtime: Arc<Runtime>,
    pub control: Arc<ModelControl>,
    pub access: Access,
    /// Inference requests in flight, HTTP and gRPC together.
    pub in_flight: InFlight,
    /// Request bodies being received.
    pub uploads: Uploads,
    /// The `/metrics` route, when it is served on the main port.
    pub metrics: Option<OpenApiRouter>,
}

/// The HTTP routes, in one group per API: aicp's ML API (with the page, health, metrics and
/// the documentation) and the Open Inference Protocol's REST routes. Each group sits behind
/// the admission layer ([`admission`]), which gives each route what its class in the
/// admission table asks (credentials, the body read whole, a place in flight) and answers
/// refusals in the group's shape. The request id, span and body limit are not here: [`serve`]
/// wraps the whole router in them.
pub(crate) fn router(services: Services) -> Router {
    router_and_document(services).0
}

/// [`router`], and the OpenAPI document it serves at `/openapi.json`. Every route is registered
/// with its handler's operation (`routes!`), so the document is the router's own.
pub(crate) fn router_and_document(services: Services) -> (Router, utoipa::openapi::OpenApi) {
    let Services {
        runtime,
        control,
        access,
        in_flight,
        uploads,
        metrics,
    } = services;
    let admission = |api| Admission::new(access.clone(), uploads.clone(), in_flight.clone(), api);
    let ml = guarded(ml_routes(runtime.clone(), metrics), Api::Ml);
    let v2 = guarded(v2_routes(runtime, control), Api::V2);
    let app = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ml.route_layer(admission(Api::Ml)))
        .merge(v2.route_layer(admission(Api::V2)))
        .fallback(not_found);
    let (app, document) = app.split_for_parts();
    let docs = openapi::router(document.clone()).route_layer(admission(Api::Ml));
    (app.merge(docs), document)
}

/// aicp's ML API, with the page, health and `/metrics` (when it is served on this port).
fn ml_routes(runtime: Arc<Runtime>, metrics: Option<OpenApiRouter>) -> OpenApiRouter {
    let routes = OpenApiRouter::new()
        .routes(routes!(web::index))
        .routes(routes!(ml_api::healthz))
        .routes(routes!(ml_api::readyz))
        .routes(routes!(ml_api::classify))
        .routes(routes!(image_api::classify_image))
        .routes(routes!(text_api::embed))
        .routes(routes!(text_api::classify_text))
        .routes(routes!(text_api::tokenize))
        .routes(routes!(ml_api::inference))
        .routes(routes!(ml_api::list_models))
        .routes(routes!(ml_api::get_model))
        .with_state(runtime);
    match metrics {
        Some(metrics) => routes.merge(metrics),
        None => routes,
    }
}

/// Any other path under `/v2`: the protocol's 404, in its shape. Not an operation of the
/// document, so not registered as one.
#[allow(clippy::disallowed_methods)]
fn v2_not_found() -> OpenApiRouter<Arc<Runtime>> {
    OpenApiRouter::new()
        .route("/v2/", axum::routing::any(v2_rest::not_found))
        .route("/v2/{*rest}", axum::routing::any(v2_rest::not_found))
}

/// The Open Inference Protocol's REST routes, model management included.
fn v2_routes(runtime: Arc<Runtime>, control: Arc<ModelControl>) -> OpenApiRouter {
    let admin = OpenApiRouter::new()
        .routes(routes!(v2_rest::load_model))
        .routes(routes!(v2_rest::unload_model))
        .with_state(control);
    OpenApiRouter::new()
        .routes(routes!(v2_rest::live))
        .routes(routes!(v2_rest::ready))
        .routes(routes!(v2_rest::model_ready))
        .routes(versioned(routes!(v2_rest::model_ready)))
        .routes(routes!(v2_rest::infer))
        .routes(versioned(routes!(v2_rest::infer)))
        .routes(routes!(v2_rest::server_metadata))
        .routes(routes!(v2_rest::repository_index))
        .routes(routes!(v2_rest::all_statistics))
        .routes(routes!(v2_rest::model_metadata))
        .routes(versioned(routes!(v2_rest::model_metadata)))
        .routes(routes!(v2_rest::model_config))
        .routes(versioned(routes!(v2_rest::model_config)))
        .routes(routes!(v2_rest::model_statistics))
        .routes(versioned(routes!(v2_rest::model_statistics)))
        .merge(v2_not_found())
        .with_state(runtime)
        .merge(admin)
}

/// The HTTP front end as it is served: [`router`] wrapped once in the layers every request
/// passes through. Outermost first: the request id is set, the span opens with it, the response
/// gets it, and the body limit applies. Added with `Router::layer` instead, they would wrap each
/// route, and axum clones and boxes a route's layers for every request it routes there. Generic
/// over the request body, so that tests can call it without a socket.
pub(crate) fn http_service<B>(
    services: Services,
) -> impl tower::Service<
    Request<B>,
    Response = Response<impl HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let max_body_bytes = services.uploads.limits().max_body_bytes;
    request_id::layers(TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .service(router(services))
}

/// The gRPC front end as it is served: the inference service (each call's deadline stamped
/// as it arrives), `health` (the standard health service, whose reporter says what it
/// answers) and server reflection, behind the same request id and span layers as HTTP, each
/// message held to the upload limits as it arrives.
pub(crate) fn grpc_service(
    services: &Services,
    health: HealthServer<impl Health>,
) -> anyhow::Result<
    impl tower::Service<
        Request<Incoming>,
        Response = Response<impl HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static,
> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let inference = GrpcInferenceServiceServer::new(InferenceService::new(
        services.runtime.clone(),
        services.control.clone(),
        services.in_flight.clone(),
    ))
    .max_decoding_message_size(services.uploads.limits().max_body_bytes)
    .max_encoding_message_size(usize::MAX);
    let admission = GrpcAdmission::new(
        services.access.clone(),
        services.uploads.clone(),
        services.in_flight.clone(),
    );
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection)
        .add_service(inference)
        .prepare();
    let service = request_id::layers(TraceLayer::new_for_grpc())
        .layer(admission)
        .service(routes);
    Ok(service)
}

/// Any other path outside the Open Inference Protocol's, answered in the ML API's shape.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let error = aicp_core::Error::not_found(format!("no route for {}", uri.path()));
    Api::Ml.error(error)
}

/// What a starting server tells its caller: where it listens (ports given as 0 are chosen by
/// the system), and how its models loaded. The caller decides how to show it; `aicp serve`
/// prints one line each.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// HTTP listens here.
    Listening {
        /// `https` with TLS, else `http`.
        scheme: &'static str,
        /// The address, its port chosen by the system if given as 0.
        addr: SocketAddr,
    },
    /// `/metrics` is served on its own port, at this address.
    Metrics(SocketAddr),
    /// The listeners speak TLS.
    Tls {
        /// The certificate chain's file.
        cert: PathBuf,
        /// Whether clients must show a certificate of their own.
        mutual: bool,
    },
    /// How the served models follow the model directory.
    ModelControl {
        /// The mode: follow the directory (`poll`), load only as an operator asks
        /// (`explicit`), or never change (`none`).
        mode: ControlMode,
        /// The model directory.
        models: PathBuf,
        /// How often `poll` looks.
        poll_interval: std::time::Duration,
    },
    /// A model serves its default version on an engine and device.
    ModelReady {
        /// The model's name.
        name: String,
        /// The version it serves by default.
        version: u64,
        /// Its engine's name, or `chain`.
        engine: &'static str,
        /// Where it runs: `cpu`, or the GPU.
        device: String,
    },
    /// A model has no version that serves.
    ModelFailed {
        /// The model's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Every model is loaded: the server is ready.
    Ready,
    /// gRPC listens here, once the models are loaded.
    GrpcListening {
        /// The address, its port chosen by the system if given as 0.
        addr: SocketAddr,
        /// Whether it speaks TLS.
        tls: bool,
    },
}

/// The gRPC health of the server as a whole ("") and of the inference service.
pub(crate) async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <GrpcInferenceServiceServer<InferenceService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Loads the model directory into `runtime`, reporting each model. Returns whether it loaded.
fn load(
    runtime: &Runtime,
    models: &Path,
    (ort_library, gpu, plan_cache): (Option<PathBuf>, GpuUse, usize),
    batching: &Batching,
    report: &dyn Fn(Event),
) -> bool {
    let engines =
        Arc::new(Engines::with_gpu(ort_library.as_deref(), gpu).with_plan_cache(plan_cache));
    match Repository::load(models, engines, batching) {
        Ok(repository) => {
            for model in repository.models() {
                report(match (model.state(), model.default_version()) {
                    (ModelState::Ready, Some(served)) => Event::ModelReady {
                        name: model.name.clone(),
                        version: served.version,
                        engine: served.engine_name(),
                        device: served.device.clone(),
                    },
                    _ => Event::ModelFailed {
                        name: model.name.clone(),
                        reason: model.reason().unwrap_or_default(),
                    },
                });
            }
            runtime.set_repository(repository);
            report(Event::Ready);
            true
        }
        Err(e) => {
            tracing::error!("{e}");
            false
        }
    }
}
