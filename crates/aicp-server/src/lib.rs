//! aicp's front ends. Today: the HTTP ML API ([`ml_api`]). Every front end only translates its
//! wire format to a model and an input for the runtime and back; validation and execution live in
//! `aicp-runtime`.

pub mod error;
pub mod ml_api;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aicp_runtime::{Engines, Executor, ModelState, Repository, Runtime};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub models: PathBuf,
    /// ONNX Runtime's library, when given explicitly.
    pub ort_library: Option<PathBuf>,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Threads running inference.
    pub inference_threads: usize,
    /// Requests that may wait for an inference thread before new ones are refused.
    pub queue_capacity: usize,
}

/// The HTTP routes over a runtime.
pub fn router(runtime: Arc<Runtime>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/ml/classify", post(ml_api::classify))
        .route("/api/v1/ml/inference", post(ml_api::inference))
        .route("/api/v1/ml/models", get(ml_api::list_models))
        .route("/api/v1/ml/models/{name}", get(ml_api::get_model))
        .route("/healthz", get(ml_api::healthz))
        .route("/readyz", get(ml_api::readyz))
        .fallback(ml_api::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(runtime)
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
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.addr))?;
    let addr = listener.local_addr()?;
    println!("aicp listening on http://{addr}");

    let runtime = Arc::new(Runtime::new(Executor::new(
        options.inference_threads,
        options.queue_capacity,
    )));
    let loading = runtime.clone();
    tokio::task::spawn_blocking(move || {
        let engines = Arc::new(Engines::new(options.ort_library.as_deref()));
        match Repository::load(&options.models, engines) {
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
                loading.set_repository(repository);
                println!("aicp ready");
            }
            Err(e) => tracing::error!("{e}"),
        }
    });

    axum::serve(listener, router(runtime, options.max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
