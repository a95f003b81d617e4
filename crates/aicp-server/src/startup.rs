//! [`serve`]: start-up in stages, each a function with one job. Bind the listeners; build the
//! state the front ends share; build the HTTP and gRPC stacks; load the models in the
//! background; hear the shutdown signal; serve until it comes, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aicp_runtime::{ModelControl, Runtime};
use axum::Router;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use utoipa_axum::router::OpenApiRouter;

use crate::connections::{Connections, Protocols};
use crate::shed::InFlight;
use crate::tls::Tls;
use crate::upload::{UploadLimits, Uploads};
use crate::{Event, ServeOptions, Services, grpc_service, http_service, metrics, set_health};

/// Where [`serve`] tells its caller what happens.
type Report = Arc<dyn Fn(Event) + Send + Sync>;

/// Listens, loads the models in the background (readiness turns true when they are loaded), and
/// serves until `shutdown` completes, telling `report` where it listens and how its models
/// loaded. Readiness then turns false, the listeners close, and requests in flight get up to
/// the drain timeout to finish.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    report: impl Fn(Event) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let report: Report = Arc::new(report);
    let listeners = Listeners::bind(&options, &report).await?;
    let state = State::new(&options, listeners.tls.clone(), listeners.metrics.is_some());
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let http = http_service(state.services.clone());
    let grpc = grpc_service(&state.services, health_service)?;
    let loaded = load_in_background(&options, &state.services, health.clone(), &report);
    let stopped = stop_on(
        shutdown,
        &state.services.runtime,
        health,
        options.shutdown_delay,
    );
    let connections = &state.connections;
    let servers = async {
        tokio::try_join!(
            async {
                let serving =
                    connections.serve(listeners.http, Protocols::Http, http, stopped.clone());
                serving.await.map_err(anyhow::Error::from)
            },
            serve_grpc(
                listeners.grpc,
                connections,
                grpc,
                loaded,
                stopped.clone(),
                &report
            ),
            serve_metrics(listeners.metrics, &state, stopped.clone()),
        )
    };
    tokio::select! {
        finished = servers => finished.map(drop),
        () = drain_deadline(stopped.clone(), options.drain_timeout) => {
            eprintln!(
                "shutting down: requests still in flight after the drain timeout ({} s) are \
                 abandoned",
                options.drain_timeout.as_secs_f64()
            );
            Ok(())
        }
    }
}

/// What start-up binds before anything else, so that a taken port fails it at once.
struct Listeners {
    tls: Option<Arc<Tls>>,
    http: TcpListener,
    /// gRPC's port, taken now, listening only once the models are loaded ([`serve_grpc`]).
    grpc: Option<TcpSocket>,
    /// `/metrics` on its own port, when it has one.
    metrics: Option<TcpListener>,
}

impl Listeners {
    async fn bind(options: &ServeOptions, report: &Report) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.models.is_dir(),
            "model directory {} does not exist (pass --models DIR)",
            options.models.display()
        );
        let tls = match &options.tls {
            Some(files) => Some(Tls::load(files.clone())?),
            None => None,
        };
        let http = bind(options.addr).await?;
        report(Event::Listening {
            scheme: if tls.is_some() { "https" } else { "http" },
            addr: http.local_addr()?,
        });
        let grpc = options.grpc_addr.map(reserve).transpose()?;
        let metrics = match options.metrics_addr {
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
        Ok(Self {
            tls,
            http,
            grpc,
            metrics,
        })
    }
}

/// What the front ends share.
struct State {
    services: Services,
    connections: Connections,
    /// The `/metrics` route for its own port, when it has one (else it is in `services`).
    metrics_only: Option<OpenApiRouter>,
}

impl State {
    fn new(options: &ServeOptions, tls: Option<Arc<Tls>>, metrics_apart: bool) -> Self {
        let runtime = Arc::new(Runtime::new());
        let recorder = metrics::recorder();
        tokio::spawn(metrics::upkeep(recorder.clone()));
        let metrics = metrics::router(runtime.clone(), recorder);
        let (metrics_only, metrics) = match metrics_apart {
            true => (Some(metrics), None),
            false => (None, Some(metrics)),
        };
        let uploads = Uploads::new(UploadLimits {
            max_body_bytes: options.max_body_bytes,
            memory_bytes: options.upload_memory_bytes,
            body_timeout: options.body_timeout,
            idle_timeout: options.connections.idle_timeout,
        });
        let control = Arc::new(ModelControl::new(runtime.clone(), options.model_control));
        Self {
            services: Services {
                runtime,
                control,
                access: options.access.clone(),
                in_flight: InFlight::new(options.max_in_flight),
                uploads,
                metrics,
            },
            connections: Connections::new(options.connections, tls),
            metrics_only,
        }
    }
}

/// Loads the model directory on a blocking thread; once it is loaded, the health service says
/// so and the model control starts watching. Returns a signal that turns true when loading is
/// over, however it went.
fn load_in_background(
    options: &ServeOptions,
    services: &Services,
    health: HealthReporter,
    report: &Report,
) -> watch::Receiver<bool> {
    let runtime = services.runtime.clone();
    let models = options.models.clone();
    let engines = (options.ort_library.clone(), options.gpu, options.plan_cache);
    let batching = options.batching.clone();
    let loading_report = report.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        crate::load(&runtime, &models, engines, &batching, &*loading_report)
    });
    let (done, over) = watch::channel(false);
    let (watcher, poll_interval) = (services.control.clone(), options.poll_interval);
    let loaded_runtime = services.runtime.clone();
    tokio::spawn(async move {
        let loaded = loaded.await;
        let _ = done.send(true);
        if let Ok(true) = loaded {
            if loaded_runtime.ready().is_ok() {
                set_health(&health, ServingStatus::Serving).await;
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
    over
}

/// One shutdown signal, heard by every server: when `shutdown` completes, readiness turns
/// false first, so that load balancers stop sending requests; `delay` later, the returned
/// signal turns true, the listeners close and requests in flight finish.
fn stop_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
    runtime: &Arc<Runtime>,
    health: HealthReporter,
    delay: Duration,
) -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    let draining = runtime.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.start_draining();
        set_health(&health, ServingStatus::NotServing).await;
        // Still serving, but not ready: time for load balancers to take this server out.
        tokio::time::sleep(delay).await;
        let _ = stop.send(true);
    });
    stopped
}

/// Completes `timeout` after the stop signal: requests still in flight then are abandoned.
async fn drain_deadline(mut stopped: watch::Receiver<bool>, timeout: Duration) {
    let _ = stopped.wait_for(|s| *s).await;
    tokio::time::sleep(timeout).await;
}

/// Serves gRPC on `socket` once the models are loaded. Until then, connections to the port are
/// refused rather than answered UNAVAILABLE: a proxy in front of several replicas (nginx) can
/// try another replica after a refused connection, but not after it has passed a call's
/// message on, which it does not keep. HTTP listens at once: its health routes answer during
/// loading, and proxies keep HTTP bodies to resend.
async fn serve_grpc<S, B>(
    socket: Option<TcpSocket>,
    connections: &Connections,
    service: S,
    mut loaded: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
    report: &Report,
) -> anyhow::Result<()>
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(socket) = socket else {
        return Ok(());
    };
    tokio::select! {
        _ = loaded.wait_for(|done| *done) => {}
        _ = stopped.wait_for(|s| *s) => return Ok(()),
    }
    let listener = socket
        .listen(1024)
        .map_err(|e| anyhow::anyhow!("cannot listen for gRPC: {e}"))?;
    report(Event::GrpcListening {
        addr: listener.local_addr()?,
        tls: connections.tls(),
    });
    connections
        .serve(listener, Protocols::Http2, service, stopped)
        .await
        .map_err(anyhow::Error::from)
}

/// Serves `/metrics` on its own port, when it has one: in plain HTTP, since that port is for
/// scrapers on an internal network.
async fn serve_metrics(
    listener: Option<TcpListener>,
    state: &State,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (Some(listener), Some(routes)) = (listener, state.metrics_only.clone()) else {
        return Ok(());
    };
    let connections = state.connections.without_tls();
    let serving = connections.serve(listener, Protocols::Http, Router::from(routes), stopped);
    serving.await.map_err(anyhow::Error::from)
}

/// A socket bound to `addr` that does not listen yet: the address is taken (and a clash reported
/// at start-up), but connections to it are refused until [`TcpSocket::listen`].
fn reserve(addr: SocketAddr) -> anyhow::Result<TcpSocket> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot listen on {addr}: {e}");
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(cannot)?;
    // As the standard library's listeners do: a restarted server may take its port back at
    // once, whatever connections of its previous life linger.
    socket.set_reuseaddr(true).map_err(cannot)?;
    socket.bind(addr).map_err(cannot)?;
    Ok(socket)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
