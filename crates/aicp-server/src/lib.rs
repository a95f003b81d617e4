//! aicp's front ends: the HTTP ML API ([`ml_api`]) and the Open Inference Protocol over REST
//! ([`v2_rest`]) on one port, and over gRPC ([`grpc`]) on another. Every front end only
//! translates its wire format to the runtime's request and back; validation and execution live in
//! `aicp-runtime`.

pub mod admission;
pub mod auth;
pub mod connections;
pub mod error;
pub mod grpc;
pub mod image_api;
pub mod metrics;
pub mod ml_api;
pub mod oip;
pub mod openapi;
pub mod request_id;
pub mod shed;
pub mod text_api;
pub mod tls;
pub mod upload;
pub mod v2_rest;
pub mod web;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use admission::Admission;
use aicp_runtime::{
    Batching, ControlMode, Engines, GpuUse, ModelControl, ModelState, Repository, Runtime,
};
use auth::Access;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use connections::{ConnectionLimits, Connections, Protocols};
use grpc::{GrpcInferenceServiceServer, InferenceService};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use openapi::{Guard, guarded, versioned};
use shed::InFlight;
use tls::{Tls, TlsFiles};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tower::BoxError;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use upload::{GrpcUpload, UploadLimits, Uploads};
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
pub struct Services {
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

/// The HTTP routes, each in its class (see [`auth`]): inference routes need the API key when
/// there is one and count against the in-flight cap once their body is read; admin routes need
/// the admin token; health, readiness, metrics and the API documentation are open. Routes that
/// take a body read it whole, within the upload limits, before their handler runs. The
/// request id, span and body limit are not here: [`serve`] wraps the whole router in them.
pub fn router(services: Services) -> Router {
    router_and_document(services).0
}

/// [`router`], and the OpenAPI document it serves at `/openapi.json`. Every route is registered
/// with its handler's operation (`routes!`), so the document is the router's own.
pub fn router_and_document(services: Services) -> (Router, utoipa::openapi::OpenApi) {
    let Services {
        runtime,
        control,
        access,
        in_flight,
        uploads,
        metrics,
    } = services;

    let inference = OpenApiRouter::new()
        .routes(routes!(ml_api::classify))
        .routes(routes!(image_api::classify_image))
        .routes(routes!(text_api::embed))
        .routes(routes!(text_api::classify_text))
        .routes(routes!(text_api::tokenize))
        .routes(routes!(ml_api::inference))
        .routes(routes!(v2_rest::infer))
        .routes(versioned(routes!(v2_rest::infer)))
        .route_layer(Admission::inference(
            access.clone(),
            uploads.clone(),
            in_flight,
        ));
    let reads = OpenApiRouter::new()
        .routes(routes!(ml_api::list_models))
        .routes(routes!(ml_api::get_model))
        .routes(routes!(v2_rest::server_metadata))
        .routes(routes!(v2_rest::repository_index))
        .routes(routes!(v2_rest::all_statistics))
        .routes(routes!(v2_rest::model_metadata))
        .routes(versioned(routes!(v2_rest::model_metadata)))
        .routes(routes!(v2_rest::model_config))
        .routes(versioned(routes!(v2_rest::model_config)))
        .routes(routes!(v2_rest::model_statistics))
        .routes(versioned(routes!(v2_rest::model_statistics)))
        .route_layer(Admission::reads(access.clone(), uploads.clone()));
    let protected = guarded(inference.merge(reads), Guard::ApiKey);
    let open = OpenApiRouter::new()
        .routes(routes!(web::index))
        .routes(routes!(ml_api::healthz))
        .routes(routes!(ml_api::readyz))
        .routes(routes!(v2_rest::live))
        .routes(routes!(v2_rest::ready))
        .routes(routes!(v2_rest::model_ready))
        .routes(versioned(routes!(v2_rest::model_ready)));
    let admin = OpenApiRouter::new()
        .routes(routes!(v2_rest::load_model))
        .routes(routes!(v2_rest::unload_model))
        .route_layer(Admission::admin(access, uploads))
        .with_state(control);
    let admin = guarded(admin, Guard::AdminToken);

    let mut app = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(protected)
        .merge(open)
        .fallback(not_found)
        .with_state(runtime)
        .merge(admin);
    if let Some(metrics) = metrics {
        app = app.merge(metrics);
    }
    let (app, document) = app.split_for_parts();
    let app = app.merge(openapi::router(document.clone()));
    (app, document)
}

/// The HTTP front end as it is served: [`router`] wrapped once in the layers every request
/// passes through. Outermost first: the request id is set, the span opens with it, the response
/// gets it, and the body limit applies. Added with `Router::layer` instead, they would wrap each
/// route, and axum clones and boxes a route's layers for every request it routes there. Generic
/// over the request body, so that tests can call it without a socket.
pub fn http_service<B>(
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
    tower::ServiceBuilder::new()
        .layer(request_id::set())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_id::trace)
                .on_failure(failure_line()),
        )
        .layer(request_id::propagate())
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .service(router(services))
}

/// The gRPC front end as it is served: the inference service (each call's deadline stamped
/// as it arrives), `health` (the standard health service, whose reporter says what it
/// answers) and server reflection, behind the same request id and span layers as HTTP, each
/// message held to the upload limits as it arrives.
pub fn grpc_service(
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
    let uploads = services.uploads.clone();
    let inference = GrpcInferenceServiceServer::new(InferenceService::new(
        services.runtime.clone(),
        services.control.clone(),
        services.access.clone(),
        services.in_flight.clone(),
    ))
    .max_decoding_message_size(uploads.limits().max_body_bytes)
    .max_encoding_message_size(usize::MAX);
    let inference = tonic::service::interceptor::InterceptedService::new(inference, |request| {
        Ok(grpc::stamp_deadline(request))
    });
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection)
        .add_service(inference)
        .prepare();
    let service = tower::ServiceBuilder::new()
        .layer(request_id::set())
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(request_id::trace)
                .on_failure(failure_line()),
        )
        .layer(request_id::propagate())
        .map_request(move |request: Request<Incoming>| {
            let streaming = upload::is_streaming(request.uri().path());
            request.map(|body| GrpcUpload::new(body, uploads.clone(), streaming))
        })
        .service(routes);
    Ok(service)
}

/// The trace layers' line for a response that failed (a 5xx, a gRPC status other than OK), at
/// debug level: each error is logged where it is answered, at error level when it is the
/// server's fault, at debug when it is the client's or the load's (a bad shape, an unknown
/// model, a shed request), so a misbehaving client or an overload does not flood the log with
/// errors.
fn failure_line() -> DefaultOnFailure {
    DefaultOnFailure::new().level(tracing::Level::DEBUG)
}

/// Any other path, answered in the shape of the API its path belongs to.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    let error = aicp_core::Error::not_found(format!("no route for {}", uri.path()));
    error::for_path(uri.path(), error)
}

/// What a starting server tells its caller: where it listens (ports given as 0 are chosen by
/// the system), and how its models loaded. The caller decides how to show it; `aicp serve`
/// prints one line each.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// HTTP listens here (`https` with TLS).
    Listening {
        scheme: &'static str,
        addr: SocketAddr,
    },
    /// `/metrics` is served on its own port.
    Metrics(SocketAddr),
    /// The listeners speak TLS with this certificate; `mutual`: clients must show theirs.
    Tls { cert: PathBuf, mutual: bool },
    /// How the served models follow the model directory (`poll` with its interval).
    ModelControl {
        mode: ControlMode,
        models: PathBuf,
        poll_interval: std::time::Duration,
    },
    /// A model serves its default version on an engine and device.
    ModelReady {
        name: String,
        version: u64,
        /// Its engine's name, or `chain`.
        engine: &'static str,
        device: String,
    },
    /// A model has no version that serves, and why.
    ModelFailed { name: String, reason: String },
    /// Every model is loaded: the server is ready.
    Ready,
    /// gRPC listens here, once the models are loaded.
    GrpcListening { addr: SocketAddr, tls: bool },
}

/// Listens, loads the models in the background (readiness turns true when they are loaded), and
/// serves until `shutdown` completes, telling `report` where it listens and how its models
/// loaded. Readiness then turns false, the listeners close, and requests in flight get up to
/// the drain timeout to finish.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    report: impl Fn(Event) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let report = Arc::new(report);
    if !options.models.is_dir() {
        anyhow::bail!(
            "model directory {} does not exist (pass --models DIR)",
            options.models.display()
        );
    }
    let tls = match &options.tls {
        Some(files) => Some(Tls::load(files.clone())?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = bind(options.addr).await?;
    report(Event::Listening {
        scheme,
        addr: listener.local_addr()?,
    });
    // gRPC's port is taken now but listens only once the models are loaded (see below).
    let grpc_socket = match options.grpc_addr {
        Some(addr) => Some(reserve(addr)?),
        None => None,
    };

    let metrics_listener = match options.metrics_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            report(Event::Metrics(listener.local_addr()?));
            Some(listener)
        }
        None => None,
    };
    if let (Some(tls), Some(files)) = (&tls, &options.tls) {
        report(Event::Tls {
            cert: files.cert.clone(),
            mutual: tls.mutual(),
        });
        tokio::spawn(tls.clone().watch());
    }

    let runtime = Arc::new(Runtime::new());
    let recorder = metrics::recorder();
    tokio::spawn(metrics::upkeep(recorder.clone()));
    let metrics_routes = metrics::router(runtime.clone(), recorder);
    let in_flight = InFlight::new(options.max_in_flight);
    let uploads = Uploads::new(UploadLimits {
        max_body_bytes: options.max_body_bytes,
        memory_bytes: options.upload_memory_bytes,
        body_timeout: options.body_timeout,
        idle_timeout: options.connections.idle_timeout,
    });
    let connections = Connections::new(options.connections, tls);
    let control = Arc::new(ModelControl::new(runtime.clone(), options.model_control));
    // `/metrics` on its own port when it has one, else beside the API.
    let (metrics_only, metrics) = match metrics_listener {
        Some(listener) => (Some((listener, metrics_routes)), None),
        None => (None, Some(metrics_routes)),
    };
    let services = Services {
        runtime: runtime.clone(),
        control: control.clone(),
        access: options.access.clone(),
        in_flight,
        uploads,
        metrics,
    };
    let app = http_service(services.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let grpc_service = grpc_service(&services, health_service)?;

    let loading = runtime.clone();
    let models = options.models.clone();
    let engines = (options.ort_library.clone(), options.gpu, options.plan_cache);
    let batching = options.batching.clone();
    let loading_report = report.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load(&loading, &models, engines, &batching, &*loading_report)
    });
    let watcher = control.clone();
    let poll_interval = options.poll_interval;
    let loaded_health = health.clone();
    let loaded_runtime = runtime.clone();
    let (load_done, mut loading_over) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let loaded = loaded.await;
        let _ = load_done.send(true);
        if let Ok(true) = loaded {
            if loaded_runtime.ready().is_ok() {
                set_health(&loaded_health, ServingStatus::Serving).await;
            }
            // Watching starts from what start-up loaded.
            watcher.watch(poll_interval).await;
        }
    });
    report(Event::ModelControl {
        mode: options.model_control,
        models: options.models.clone(),
        poll_interval,
    });

    // One shutdown signal, heard by every server. Readiness turns false first, so that load
    // balancers stop sending requests; then the listeners close and requests in flight finish.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let draining = runtime.clone();
    let shutdown_delay = options.shutdown_delay;
    tokio::spawn(async move {
        shutdown.await;
        draining.start_draining();
        set_health(&health, ServingStatus::NotServing).await;
        // Still serving, but not ready: time for load balancers to take this server out.
        tokio::time::sleep(shutdown_delay).await;
        let _ = stop.send(true);
    });
    let drain_timeout = options.drain_timeout;
    let mut drained = stopped.clone();
    let drain_deadline = async move {
        let _ = drained.wait_for(|s| *s).await;
        tokio::time::sleep(drain_timeout).await;
    };

    let metrics_server = async {
        match metrics_only {
            // Plain HTTP: the metrics port is for scrapers on an internal network.
            Some((listener, routes)) => connections
                .without_tls()
                .serve(
                    listener,
                    Protocols::Http,
                    Router::from(routes),
                    stopped.clone(),
                )
                .await
                .map_err(anyhow::Error::from),
            None => Ok(()),
        }
    };
    let http = connections.serve(listener, Protocols::Http, app, stopped.clone());
    let grpc = async {
        let Some(socket) = grpc_socket else {
            return Ok(());
        };
        // Until the models are loaded, connections to the gRPC port are refused rather than
        // answered UNAVAILABLE: a proxy in front of several replicas (nginx) can try another
        // replica after a refused connection, but not after it has passed a call's message on,
        // which it does not keep. HTTP listens at once: its health routes answer during
        // loading, and proxies keep HTTP bodies to resend.
        let mut stop = stopped.clone();
        tokio::select! {
            _ = loading_over.wait_for(|done| *done) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let listener = socket
            .listen(1024)
            .map_err(|e| anyhow::anyhow!("cannot listen for gRPC: {e}"))?;
        report(Event::GrpcListening {
            addr: listener.local_addr()?,
            tls: connections.tls(),
        });
        connections
            .serve(listener, Protocols::Http2, grpc_service, stopped.clone())
            .await
            .map_err(anyhow::Error::from)
    };
    let servers = async {
        tokio::try_join!(
            async { http.await.map_err(anyhow::Error::from) },
            grpc,
            metrics_server
        )
    };
    tokio::select! {
        finished = servers => {
            finished?;
        }
        () = drain_deadline => {
            eprintln!(
                "shutting down: requests still in flight after the drain timeout ({} s) are abandoned",
                drain_timeout.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// A socket bound to `addr` that does not listen yet: the address is taken (and a clash reported
/// at start-up), but connections to it are refused until [`tokio::net::TcpSocket::listen`].
fn reserve(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpSocket> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot listen on {addr}: {e}");
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(cannot)?;
    // As the standard library's listeners do: a restarted server may take its port back at
    // once, whatever connections of its previous life linger.
    socket.set_reuseaddr(true).map_err(cannot)?;
    socket.bind(addr).map_err(cannot)?;
    Ok(socket)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// The gRPC health of the server as a whole ("") and of the inference service.
pub async fn set_health(health: &HealthReporter, status: ServingStatus) {
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
