//! `GET /metrics` in Prometheus's text format, from the `metrics` facade's recorder.
//!
//! The runtime counts requests, samples, engine runs and durations as they happen (see
//! `aicp_runtime::stats`); what is a state rather than an event (queue depths, models loaded,
//! which engine serves each model, the build) is set from the repository at each scrape. Gauges
//! of a model that is no longer served stop being set and are dropped after a while.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aicp_runtime::{Runtime, VersionState};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use metrics::Label;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Durations from 10 us to 10 s: a small model's requests take tens of microseconds, a large
/// model's or a queued request's take milliseconds to seconds.
const SECONDS_BUCKETS: &[f64] = &[
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    250e-3, 500e-3, 1.0, 2.5, 10.0,
];

/// Samples per engine run, in powers of two up to the default largest batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How long a gauge that is no longer set (a model unloaded) stays in the output.
const GAUGE_IDLE: Duration = Duration::from_secs(300);

/// The process's recorder, installed on first use; every server in the process shares it.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(aicp_runtime::stats::names::BATCH_SIZE.into()),
                        BATCH_BUCKETS,
                    )
                })
                .expect("the bucket lists are not empty")
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE));
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Keeps the recorder's histograms compact: without it, their samples pile up between scrapes.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        handle.run_upkeep();
    }
}

/// The `/metrics` route.
pub fn router(runtime: Arc<Runtime>, handle: PrometheusHandle) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(render))
        .with_state((runtime, handle))
}

/// Prometheus metrics (here unless the server has a separate --metrics-port).
#[utoipa::path(get, path = "/metrics", tag = "Health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn render(State((runtime, handle)): State<(Arc<Runtime>, PrometheusHandle)>) -> Response {
    set_states(&runtime);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// The gauges read from the repository at each scrape.
fn set_states(runtime: &Runtime) {
    metrics::gauge!(
        "aicp_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    let Ok(repository) = runtime.repository() else {
        metrics::gauge!("aicp_models_loaded").set(0.0);
        return;
    };
    let mut loaded = 0;
    for entry in repository.models() {
        for version in entry.versions.values() {
            let VersionState::Ready(model) = &version.state else {
                continue;
            };
            loaded += 1;
            let labels = vec![
                Label::new("model", model.name.clone()),
                Label::new("version", model.version.to_string()),
            ];
            let queue = model.runner.state();
            metrics::gauge!("aicp_queue_waiting", labels.clone()).set(queue.waiting as f64);
            metrics::gauge!("aicp_queue_running", labels).set(queue.running as f64);
            metrics::gauge!(
                "aicp_model_info",
                "model" => model.name.clone(),
                "version" => model.version.to_string(),
                "engine" => model.engine_name(),
                "device" => model.device.clone(),
                "instances" => model.policy.instances.to_string(),
            )
            .set(1.0);
        }
    }
    metrics::gauge!("aicp_models_loaded").set(f64::from(loaded));
}
