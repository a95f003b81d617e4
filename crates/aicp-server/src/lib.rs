//! aicp's front ends: the HTTP ML API ([`ml_api`]) and the Open Inference Protocol over REST
//! ([`v2_rest`]) on one port, and over gRPC ([`grpc`]) on another. Every front end only
//! translates its wire format to the runtime's request and back; validation and execution live in
//! `aicp-runtime`.

pub mod error;
pub mod grpc;
pub mod ml_api;
pub mod oip;
pub mod shed;
pub mod v2_rest;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aicp_runtime::{Batching, Engines, ModelState, Repository, Runtime};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use grpc::{GrpcInferenceServiceServer, InferenceService};
use shed::InFlight;
use tonic_health::ServingStatus;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where HTTP (the ML API and the Open Inference Protocol's REST routes) listens.
    pub addr: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens; `None`: nowhere.
    pub grpc_addr: Option<SocketAddr>,
    pub models: PathBuf,
    /// ONNX Runtime's library, when given explicitly.
    pub ort_library: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Inference requests in flight, HTTP and gRPC together, before new ones are refused.
    pub max_in_flight: usize,
    /// The scheduler's settings for models whose `[batching]` table leaves them out.
    pub batching: Batching,
}

/// The HTTP routes over a runtime. Inference routes count against `in_flight`.
pub fn router(runtime: Arc<Runtime>, max_body_bytes: usize, in_flight: InFlight) -> Router {
    let inference = Router::new()
        .route("/api/v1/ml/classify", post(ml_api::classify))
        .route("/api/v1/ml/inference", post(ml_api::inference))
        .route("/v2/models/{name}/infer", post(v2_rest::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2_rest::infer),
        )
        .route_layer(axum::middleware::from_fn_with_state(in_flight, shed::http));
    Router::new()
        .merge(inference)
        .route("/api/v1/ml/models", get(ml_api::list_models))
        .route("/api/v1/ml/models/{name}", get(ml_api::get_model))
        .route("/healthz", get(ml_api::healthz))
        .route("/readyz", get(ml_api::readyz))
        .route("/v2", get(v2_rest::server_metadata))
        .route("/v2/health/live", get(v2_rest::live))
        .route("/v2/health/ready", get(v2_rest::ready))
        .route("/v2/repository/index", post(v2_rest::repository_index))
        .route("/v2/models/stats", get(v2_rest::all_statistics))
        .merge(v2_model_routes("/v2/models/{name}"))
        .merge(v2_model_routes("/v2/models/{name}/versions/{version}"))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(runtime)
}

/// Any other path, answered in the shape of the API its path belongs to.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let error = aicp_core::Error::not_found(format!("no route for {}", uri.path()));
    if uri.path() == "/v2" || uri.path().starts_with("/v2/") {
        error::V2Error(error).into_response()
    } else {
        error::ApiError(error).into_response()
    }
}

/// The per-model Open Inference Protocol routes under `prefix`.
fn v2_model_routes(prefix: &str) -> Router<Arc<Runtime>> {
    Router::new()
        .route(prefix, get(v2_rest::model_metadata))
        .route(&format!("{prefix}/ready"), get(v2_rest::model_ready))
        .route(&format!("{prefix}/config"), get(v2_rest::model_config))
        .route(&format!("{prefix}/stats"), get(v2_rest::model_statistics))
}

/// Listens, loads the models in the background (readiness turns true when they are loaded), and
/// serves until `shutdown` completes; requests in flight then finish.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !options.models.is_dir() {
        anyhow::bail!(
            "model directory {} does not exist (pass --models DIR)",
            options.models.display()
        );
    }
    let listener = bind(options.addr).await?;
    println!("aicp listening on http://{}", listener.local_addr()?);
    let grpc_listener = match options.grpc_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            println!("aicp gRPC listening on {}", listener.local_addr()?);
            Some(listener)
        }
        None => None,
    };

    let runtime = Arc::new(Runtime::new());
    let in_flight = InFlight::new(options.max_in_flight);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let loading = runtime.clone();
    let models = options.models.clone();
    let ort_library = options.ort_library.clone();
    let batching = options.batching.clone();
    let loaded =
        tokio::task::spawn_blocking(move || load(&loading, &models, ort_library, &batching));
    tokio::spawn(async move {
        if let Ok(true) = loaded.await {
            set_health(&health, ServingStatus::Serving).await;
        }
    });

    // One shutdown signal, heard by both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };

    let app = router(runtime.clone(), options.max_body_bytes, in_flight.clone());
    // Answers go out at once: small request/response exchanges must not wait on Nagle.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http = axum::serve(listener, app).with_graceful_shutdown(until_stopped(stopped.clone()));
    let grpc = async {
        let Some(listener) = grpc_listener else {
            return Ok(());
        };
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let inference = GrpcInferenceServiceServer::new(InferenceService::new(runtime.clone()))
            .max_decoding_message_size(options.max_body_bytes)
            .max_encoding_message_size(usize::MAX);
        let in_flight = in_flight.clone();
        let inference =
            tonic::service::interceptor::InterceptedService::new(inference, move |request| {
                shed::grpc(&in_flight, grpc::stamp_deadline(request))
            });
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(inference)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                until_stopped(stopped.clone()),
            )
            .await
            .map_err(anyhow::Error::from)
    };
    tokio::try_join!(async { http.await.map_err(anyhow::Error::from) }, grpc)?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// The gRPC health of the server as a whole ("") and of the inference service.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
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
    ort_library: Option<PathBuf>,
    batching: &Batching,
) -> bool {
    let engines = Arc::new(Engines::new(ort_library.as_deref()));
    match Repository::load(models, engines, batching) {
        Ok(repository) => {
            for model in repository.models() {
                match (model.state(), model.default_version()) {
                    (ModelState::Ready, Some(served)) => println!(
                        "model {} version {} ready on {}",
                        model.name, served.version, served.engine
                    ),
                    _ => println!(
                        "model {} failed: {}",
                        model.name,
                        model.reason().unwrap_or_default()
                    ),
                }
            }
            runtime.set_repository(repository);
            println!("aicp ready");
            true
        }
        Err(e) => {
            tracing::error!("{e}");
            false
        }
    }
}
