//! The ML API (`/api/v1/ml/*`, the seed project's contract) and the health routes. Each handler
//! only translates: JSON in, a model and an input tensor to the runtime, JSON out.

use std::sync::Arc;
use std::time::Instant;

use aicp_core::{Error, NestedArray, Tensor};
use aicp_runtime::{ModelEntry, ModelState, Runtime, ServedModel, VersionState, top_k};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{ApiError, body, parse_json};

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn default_model() -> String {
    "mnist".into()
}

pub(crate) fn default_top_k() -> usize {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest<'a> {
    /// One image as 784 values, [28][28] or [1][28][28]; or a batch of such images.
    #[serde(borrow)]
    image_data: &'a RawValue,
    #[serde(default = "default_model")]
    model_name: String,
    #[serde(default = "default_top_k")]
    top_k: usize,
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Prediction {
    class: usize,
    label: String,
    confidence: f32,
}

#[derive(Debug, Serialize)]
struct BatchResult {
    predictions: Vec<Prediction>,
}

/// `POST /api/v1/ml/classify`
pub async fn classify(
    State(runtime): State<Arc<Runtime>>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let bytes = body(bytes)?;
    let request: ClassifyRequest = parse_json(&bytes)?;
    let image_data = read_array(request.image_data, "image_data")?;
    if request.top_k == 0 {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = deadline(started, request.timeout_ms)?;
    let model = runtime.model(&request.model_name, None)?;
    let (batch, single) = image_batch(&model, &image_data.shape)
        .inspect_err(|e| model.stats.record_failure(started.elapsed(), e.0.kind))?;
    let input = Tensor {
        shape: vec![batch, image_data.data.len() / batch],
        data: image_data.data,
    };
    let response = runtime.run(model, vec![input.into()], deadline).await?;
    let mut results = predictions(&response.model, &response.outputs, request.top_k)?;
    let mut body = json!({
        "model_name": response.model.name,
        "model_version": response.model.version,
    });
    if single {
        body["predictions"] = json!(results.pop().unwrap_or_default());
    } else {
        let batch: Vec<BatchResult> = results
            .into_iter()
            .map(|predictions| BatchResult { predictions })
            .collect();
        body["results"] = json!(batch);
    }
    body["inference_time_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    Ok(Json(body))
}

/// The shape of `values` inputs for `model`: the request's `input_shape` if it holds exactly
/// that many values, else rows of the model's values per sample.
fn input_shape(
    model: &ServedModel,
    input_shape: Option<Vec<i64>>,
    values: usize,
) -> ApiResult<Vec<usize>> {
    let shape = match input_shape {
        Some(shape) => {
            if let Some((i, d)) = shape.iter().enumerate().find(|(_, d)| **d < 1) {
                return Err(Error::invalid(format!(
                    "input_shape[{i}] is {d}: every dimension must be at least 1"
                ))
                .into());
            }
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let needed = aicp_core::tensor::element_count(&shape)?;
            if needed != values {
                return Err(Error::invalid(format!(
                    "input_shape {shape:?} needs {needed} values, input_data has {values}"
                ))
                .into());
            }
            shape
        }
        None => {
            let per_sample = model.signature.inputs[0]
                .sample_elements()
                .unwrap_or(values)
                .max(1);
            if values == 0 || !values.is_multiple_of(per_sample) {
                return Err(Error::invalid(format!(
                    "input_data has {values} values; model {:?} takes {per_sample} values per sample",
                    model.name
                ))
                .into());
            }
            vec![values / per_sample, per_sample]
        }
    };
    Ok(shape)
}

/// Reads the shape of `image_data`: one image (`[E]`, `[s, s]`, `[1, s, s]`) or a batch (`[n, E]`,
/// `[n, s, s]`, `[n, 1, s, s]`), where E is the model's values per sample and s its side.
/// Returns the batch size and whether it was a single image.
fn image_batch(model: &ServedModel, shape: &[usize]) -> ApiResult<(usize, bool)> {
    let spec = &model.signature.inputs[0];
    let Some(per_image) = spec.sample_elements() else {
        return Err(Error::invalid(format!(
            "model {:?} takes inputs of variable shape {:?}; use /api/v1/ml/inference",
            model.name,
            spec.display_shape()
        ))
        .into());
    };
    let side = (per_image as f64).sqrt().round() as usize;
    let square = side * side == per_image;
    let parsed = match *shape {
        [n] if n == per_image => Some((1, true)),
        [rows, cols] if square && rows == side && cols == side => Some((1, true)),
        [1, rows, cols] if square && rows == side && cols == side => Some((1, true)),
        [n, e] if e == per_image => Some((n, false)),
        [n, rows, cols] if square && rows == side && cols == side => Some((n, false)),
        [n, 1, rows, cols] if square && rows == side && cols == side => Some((n, false)),
        _ => None,
    };
    match parsed {
        Some((0, _)) | None if shape.first() == Some(&0) => {
            Err(Error::invalid("image_data is empty: expected at least one image").into())
        }
        Some(found) => Ok(found),
        None => {
            let got = match shape {
                [n] => format!("got {n}"),
                _ => format!("got shape {shape:?}"),
            };
            let shapes = if square {
                format!(
                    "one image as [{per_image}], [{side}, {side}] or [1, {side}, {side}], or a batch as [N, {per_image}], [N, {side}, {side}] or [N, 1, {side}, {side}]"
                )
            } else {
                format!("one image as [{per_image}] or a batch as [N, {per_image}]")
            };
            Err(Error::invalid(format!(
                "image_data: expected {per_image} values, {got}; accepted shapes: {shapes}"
            ))
            .into())
        }
    }
}

/// Top-k predictions for each row of the first output, as probabilities.
pub(crate) fn predictions(
    model: &ServedModel,
    outputs: &[Tensor],
    k: usize,
) -> ApiResult<Vec<Vec<Prediction>>> {
    let scores = outputs
        .first()
        .filter(|t| t.shape.len() == 2)
        .ok_or_else(|| {
            Error::invalid(format!(
                "model {:?} has no 2-D first output to classify with",
                model.name
            ))
        })?;
    let classes = scores.shape[1].max(1);
    Ok(scores
        .data
        .chunks(classes)
        .map(|row| {
            top_k(&model.probabilities(row), k)
                .into_iter()
                .map(|(class, confidence)| Prediction {
                    class,
                    label: model.label(class),
                    confidence,
                })
                .collect()
        })
        .collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest<'a> {
    #[serde(default = "default_model")]
    model_name: String,
    #[serde(borrow)]
    input_data: &'a RawValue,
    /// The shape of `input_data`, batch first; the model's own when absent.
    input_shape: Option<Vec<i64>>,
    #[serde(default)]
    apply_softmax: bool,
    top_k: Option<usize>,
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    timeout_ms: Option<u64>,
}

/// Reads an array field (kept raw while the request was parsed) into shape and data, with the
/// fast reader: no JSON tree, no per-element bookkeeping.
fn read_array(raw: &RawValue, field: &str) -> ApiResult<NestedArray> {
    NestedArray::from_json(raw.get())
        .map_err(|e| Error::invalid(format!("invalid field `{field}`: {e}")).into())
}

/// When a request with `timeout_ms` that arrived at `started` stops being worth answering.
pub(crate) fn deadline(started: Instant, timeout_ms: Option<u64>) -> ApiResult<Option<Instant>> {
    match timeout_ms {
        None => Ok(None),
        Some(0) => Err(Error::invalid(
            "timeout_ms must be at least 1 (leave it out to wait as long as it takes)",
        )
        .into()),
        Some(ms) => Ok(started.checked_add(std::time::Duration::from_millis(ms))),
    }
}

/// `POST /api/v1/ml/inference`
pub async fn inference(
    State(runtime): State<Arc<Runtime>>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let bytes = body(bytes)?;
    let request: InferenceRequest = parse_json(&bytes)?;
    let input_data = read_array(request.input_data, "input_data")?;
    if request.top_k == Some(0) {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = deadline(started, request.timeout_ms)?;
    let model = runtime.model(&request.model_name, None)?;
    let shape = input_shape(&model, request.input_shape, input_data.data.len())
        .inspect_err(|e| model.stats.record_failure(started.elapsed(), e.0.kind))?;
    let input = Tensor {
        shape,
        data: input_data.data,
    };
    let response = runtime.run(model, vec![input.into()], deadline).await?;
    let model = &response.model;
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .zip(&model.signature.outputs)
        .map(|(tensor, spec)| {
            let data = if request.apply_softmax && tensor.shape.len() == 2 {
                tensor
                    .data
                    .chunks(tensor.shape[1].max(1))
                    .flat_map(|row| model.probabilities(row))
                    .collect()
            } else {
                tensor.data.clone()
            };
            json!({"name": spec.name, "shape": tensor.shape, "data": data})
        })
        .collect();
    let mut body = json!({
        "model_name": model.name,
        "model_version": model.version,
        "outputs": outputs,
    });
    if let Some(k) = request.top_k {
        body["predictions"] = json!(predictions(model, &response.outputs, k)?);
    }
    body["inference_time_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    Ok(Json(body))
}

/// `GET /api/v1/ml/models`
pub async fn list_models(State(runtime): State<Arc<Runtime>>) -> ApiResult<Json<Value>> {
    let repository = runtime.repository()?;
    let models: Vec<Value> = repository.models().map(describe).collect();
    Ok(Json(json!({ "models": models })))
}

/// `GET /api/v1/ml/models/{name}`
pub async fn get_model(
    State(runtime): State<Arc<Runtime>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let repository = runtime.repository()?;
    Ok(Json(describe(repository.model(&name)?)))
}

/// A model as the listing shows it.
pub fn describe(entry: &ModelEntry) -> Value {
    let versions: Vec<Value> = entry
        .versions
        .values()
        .map(|v| match &v.state {
            VersionState::Ready(model) => json!({
                "version": v.version, "state": ModelState::Ready, "engine": model.engine,
                "device": model.device, "queue": model.scheduler.state(), "reload_error": v.reload_error,
            }),
            VersionState::Failed(reason) => json!({
                "version": v.version, "state": ModelState::Failed, "reason": reason,
            }),
        })
        .collect();
    let served = entry.default_version();
    let tensors = |specs: &[aicp_core::TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({"name": s.name, "datatype": s.datatype, "shape": s.display_shape()}))
            .collect()
    };
    json!({
        "name": entry.name,
        "state": entry.state(),
        "reason": entry.reason(),
        "default_version": served.map(|m| m.version),
        "versions": versions,
        "engine": served.map(|m| m.engine),
        "device": served.map(|m| m.device.as_str()),
        "inputs": served.map(|m| tensors(&m.signature.inputs)),
        "outputs": served.map(|m| tensors(&m.signature.outputs)),
        "output": served.map(|m| m.output),
        "labels": entry.metadata.labels,
        "description": entry.metadata.description,
        "task": entry.metadata.task,
        "test_accuracy": entry.metadata.test_accuracy(),
        "source": entry.source.display().to_string(),
    })
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// `GET /readyz`: every model is loaded and warmed up (failed ones included).
pub async fn readyz(State(runtime): State<Arc<Runtime>>) -> impl IntoResponse {
    match runtime.ready() {
        Ok(repository) => {
            let ready = repository
                .models()
                .filter(|m| m.state() == ModelState::Ready)
                .count();
            let failed = repository.models().count() - ready;
            (
                StatusCode::OK,
                Json(json!({"status": "ready", "models_ready": ready, "models_failed": failed})),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": e.message})),
        ),
    }
}
