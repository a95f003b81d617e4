//! The ML API (`/api/v1/ml/*`, the seed project's contract) and the health routes. Each handler
//! only translates: JSON in, a model and an input tensor to the runtime, JSON out.

use std::sync::Arc;
use std::time::Instant;

use aicp_core::{Error, NestedArray, OutputKind, Tensor, TensorData, TensorSpec};
use aicp_runtime::{
    EngineKind, ModelEntry, ModelState, QueueState, Runtime, ServedModel, VersionState, top_k,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiErrorBody, body, parse_json};

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn default_model() -> String {
    "mnist".into()
}

pub(crate) fn default_top_k() -> usize {
    5
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// One image as 784 values in [0, 1], `[28][28]` or `[1][28][28]`; or a batch of such
    /// images (`[N][784]`, `[N][28][28]`, `[N][1][28][28]`). Values outside [0, 1], NaN and
    /// infinities are refused.
    #[schema(value_type = Vec<Value>)]
    image_data: NestedArray,
    /// The model to use.
    #[serde(default = "default_model")]
    #[schema(default = "mnist")]
    model_name: String,
    /// How many classes to return, most likely first.
    #[serde(default = "default_top_k")]
    #[schema(default = 5, minimum = 1)]
    top_k: usize,
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    /// The class index (the output row's position).
    class: usize,
    /// The class label from the model's metadata, else the index.
    label: String,
    /// The probability, in [0, 1].
    confidence: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// The most likely classes of one image, best first.
    predictions: Vec<Prediction>,
}

/// One image gives `predictions`; a batch gives `results`, one per image.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    /// The most likely classes of the one image, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    predictions: Option<Vec<Prediction>>,
    /// One per image of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    results: Option<Vec<BatchResult>>,
    /// Time in the server, in milliseconds.
    inference_time_ms: f64,
}

/// Classify one image or a batch of images.
#[utoipa::path(post, path = "/api/v1/ml/classify", tag = "ML API",
    request_body = ClassifyRequest,
    responses(
        (status = 200, description = "The most likely classes", body = ClassifyResponse),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, shape or values (the message says what was expected and what came)", body = ApiErrorBody),
        (status = 429, description = "Overloaded: the model's queue or the in-flight cap is full", body = ApiErrorBody),
        (status = 503, description = "Model not ready, or the server is loading or shutting down", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub async fn classify(
    State(runtime): State<Arc<Runtime>>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ClassifyResponse>> {
    let started = Instant::now();
    let bytes = body(bytes)?;
    let request: ClassifyRequest = parse_json(&bytes)?;
    let image_data = request.image_data;
    if request.top_k == 0 {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = deadline(started, request.timeout_ms)?;
    let model = runtime.model(&request.model_name, None)?;
    let (batch, single) = image_batch(&model, &image_data.shape)?;
    classifies(&model)?;
    let input = Tensor {
        shape: vec![batch, image_data.data.len() / batch],
        data: floats_for(&model, image_data.data)?,
    };
    let response = runtime.run(model, vec![input.into()], deadline).await?;
    let mut results = predictions(&response.model, &response.outputs, request.top_k);
    let (predictions, results) = if single {
        (Some(results.pop().unwrap_or_default()), None)
    } else {
        let batch = results
            .into_iter()
            .map(|predictions| BatchResult { predictions })
            .collect();
        (None, Some(batch))
    };
    Ok(Json(ClassifyResponse {
        model_name: response.model.name.clone(),
        model_version: response.model.version,
        predictions,
        results,
        inference_time_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
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

/// The ML API's float arrays as the model's first input takes them: the one conversion this
/// API makes, to the input's own floating-point type. A model whose first input is not
/// floating-point is refused, and pointed to the Open Inference Protocol, which takes any type.
fn floats_for(model: &ServedModel, values: Vec<f32>) -> ApiResult<TensorData> {
    let spec = model.signature.inputs.first().ok_or_else(|| {
        Error::invalid(format!(
            "model {:?} takes no inputs; run it with POST /v2/models/{}/infer",
            model.name, model.name
        ))
    })?;
    TensorData::float_as(values, spec.datatype).map_err(|e| {
        Error::invalid(format!(
            "model {:?} input {:?}: {}; the ML API sends numbers as floats, so send this model's \
             tensors with the Open Inference Protocol (POST /v2/models/{}/infer)",
            model.name, spec.name, e.message, model.name
        ))
        .into()
    })
}

/// Checks, before a request runs, that `model` has what [`predictions`] reads: a numeric 2-D
/// first output, one row of class scores per sample.
pub(crate) fn classifies(model: &ServedModel) -> ApiResult<()> {
    match model.signature.outputs.get(model.transforms.post.output) {
        Some(output)
            if output.shape.as_ref().is_some_and(|dims| dims.len() == 2)
                && output.datatype != aicp_core::DataType::Bytes =>
        {
            Ok(())
        }
        _ => Err(Error::invalid(format!(
            "model {:?} has no numeric 2-D output to classify with ([postprocess] output names \
             which, the first by default)",
            model.name
        ))
        .into()),
    }
}

/// A numeric output's values as float32, for scoring classes.
pub(crate) fn scores(tensor: &Tensor) -> Vec<f32> {
    tensor.data.to_f32().unwrap_or_default()
}

/// Top-k predictions for each row of the first output (which [`classifies`] checked), as
/// probabilities.
pub(crate) fn predictions(
    model: &ServedModel,
    outputs: &[Tensor],
    k: usize,
) -> Vec<Vec<Prediction>> {
    let Some(first) = outputs.get(model.transforms.post.output) else {
        return Vec::new();
    };
    let classes = first.shape.last().copied().unwrap_or(1).max(1);
    scores(first)
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
        .collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The model to run.
    #[serde(default = "default_model")]
    #[schema(default = "mnist")]
    model_name: String,
    /// The input values, flat or nested.
    #[schema(value_type = Vec<Value>)]
    input_data: NestedArray,
    /// The input's shape, batch first (`[1, 1, 28, 28]`); it must hold exactly the values
    /// given. Default: rows of the model's values per sample.
    input_shape: Option<Vec<i64>>,
    /// Apply softmax to 2-D outputs (never twice: a model that outputs probabilities is left
    /// alone).
    #[serde(default)]
    #[schema(default = false)]
    apply_softmax: bool,
    /// Also return the top k classes of the first output.
    #[schema(minimum = 1)]
    top_k: Option<usize>,
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    /// The model output.
    name: String,
    /// Its element type: `FP32`, `INT64`, `BYTES`, ...
    #[schema(value_type = String, example = "FP32")]
    datatype: aicp_core::DataType,
    /// Batch first.
    shape: Vec<usize>,
    /// The values, row-major (probabilities with `apply_softmax`), as JSON numbers, `true` and
    /// `false`, or strings.
    #[schema(value_type = Vec<Value>)]
    data: TensorData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferenceResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    /// Every output of the model, in its order.
    outputs: Vec<OutputTensor>,
    /// With `top_k`: one list per sample, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    predictions: Option<Vec<Vec<Prediction>>>,
    /// Time in the server, in milliseconds.
    inference_time_ms: f64,
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

/// Run a model on raw input values.
#[utoipa::path(post, path = "/api/v1/ml/inference", tag = "ML API",
    request_body = InferenceRequest,
    responses(
        (status = 200, description = "The outputs", body = InferenceResponse),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, shape or values", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub async fn inference(
    State(runtime): State<Arc<Runtime>>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<InferenceResponse>> {
    let started = Instant::now();
    let bytes = body(bytes)?;
    let request: InferenceRequest = parse_json(&bytes)?;
    let input_data = request.input_data;
    if request.top_k == Some(0) {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = deadline(started, request.timeout_ms)?;
    let model = runtime.model(&request.model_name, None)?;
    let shape = input_shape(&model, request.input_shape, input_data.data.len())?;
    if request.top_k.is_some() {
        classifies(&model)?;
    }
    let input = Tensor {
        shape,
        data: floats_for(&model, input_data.data)?,
    };
    let response = runtime.run(model, vec![input.into()], deadline).await?;
    let model = &response.model;
    let outputs = response
        .outputs
        .iter()
        .zip(&model.signature.outputs)
        .map(|(tensor, spec)| {
            let softmax = request.apply_softmax
                && tensor.shape.len() == 2
                && tensor.datatype() != aicp_core::DataType::Bytes;
            let data = if softmax {
                let values: Vec<f32> = scores(tensor)
                    .chunks(tensor.shape[1].max(1))
                    .flat_map(|row| model.probabilities(row))
                    .collect();
                TensorData::F32(values)
            } else {
                tensor.data.clone()
            };
            OutputTensor {
                name: spec.name.clone(),
                datatype: data.datatype(),
                shape: tensor.shape.clone(),
                data,
            }
        })
        .collect();
    let predictions = match request.top_k {
        Some(k) => Some(predictions(model, &response.outputs, k)),
        None => None,
    };
    Ok(Json(InferenceResponse {
        model_name: model.name.clone(),
        model_version: model.version,
        outputs,
        predictions,
        inference_time_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Every model in the model directory, by name.
    models: Vec<ModelInfo>,
}

/// Every model in the model directory, with its versions, state, engine and queue.
#[utoipa::path(get, path = "/api/v1/ml/models", tag = "ML API",
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 503, description = "Still loading", body = ApiErrorBody),
    ))]
pub async fn list_models(State(runtime): State<Arc<Runtime>>) -> ApiResult<Json<ModelList>> {
    let repository = runtime.repository()?;
    let models = repository.models().map(describe).collect();
    Ok(Json(ModelList { models }))
}

/// One model.
#[utoipa::path(get, path = "/api/v1/ml/models/{name}", tag = "ML API",
    params(("name" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "The model", body = ModelInfo),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 422, description = "Not a valid model name", body = ApiErrorBody),
    ))]
pub async fn get_model(
    State(runtime): State<Arc<Runtime>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ModelInfo>> {
    let repository = runtime.repository()?;
    Ok(Json(describe(repository.model(&name)?)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorInfo {
    /// The tensor's name in the model.
    name: String,
    /// The element type: `FP32`, `INT64`, ...
    #[schema(value_type = String, example = "FP32")]
    datatype: aicp_core::DataType,
    /// `-1` for a dimension that varies (the batch).
    shape: Vec<i64>,
}

impl From<&TensorSpec> for TensorInfo {
    fn from(spec: &TensorSpec) -> Self {
        Self {
            name: spec.name.clone(),
            datatype: spec.datatype,
            shape: spec.display_shape(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    /// The version number.
    version: u64,
    /// `ready` or `failed`.
    #[schema(value_type = String, example = "ready")]
    state: ModelState,
    /// The engine serving it (ready versions): `cuda`, `onnxruntime` or `tract`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    engine: Option<EngineKind>,
    /// Where the engine runs it: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    /// How busy its queue is (ready versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueState>,
    /// Why it failed to load (failed versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Why its changed files failed to load again; the previous load still serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    reload_error: Option<String>,
    /// What to know about how it serves (ready versions): the engine it fell back from and why,
    /// a warm-up that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// The model's name: its directory or file name.
    name: String,
    /// `ready` when a version serves, else `failed`.
    #[schema(value_type = String, example = "ready")]
    state: ModelState,
    /// Why nothing serves.
    reason: Option<String>,
    /// The highest ready version, which requests without a version get.
    default_version: Option<u64>,
    /// Every version found, ready or failed.
    versions: Vec<VersionInfo>,
    /// The engine serving the default version: `cuda`, `onnxruntime` or `tract`.
    #[schema(value_type = Option<String>)]
    engine: Option<EngineKind>,
    /// Where the engine runs the default version: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    device: Option<String>,
    /// The default version's inputs.
    inputs: Option<Vec<TensorInfo>>,
    /// The default version's outputs.
    outputs: Option<Vec<TensorInfo>>,
    /// `logits` or `probabilities`.
    #[schema(value_type = Option<String>)]
    output: Option<OutputKind>,
    /// Class labels, by output index, from model.toml.
    labels: Vec<String>,
    /// From the model's metadata (model.toml).
    description: Option<String>,
    /// From model.toml, for example `classification`.
    task: Option<String>,
    /// The accuracy its training reported on held-out data (`[training] test_accuracy` in
    /// model.toml); the drawing page offers the most accurate model first.
    test_accuracy: Option<f64>,
    /// Its file or directory in the model directory.
    source: String,
}

/// A model as the listing shows it.
fn describe(entry: &ModelEntry) -> ModelInfo {
    let versions = entry
        .versions
        .values()
        .map(|v| {
            let (state, served, reason) = match &v.state {
                VersionState::Ready(model) => (ModelState::Ready, Some(model), None),
                VersionState::Failed(reason) => (ModelState::Failed, None, Some(reason.clone())),
            };
            VersionInfo {
                version: v.version,
                state,
                engine: served.and_then(|m| m.engine),
                device: served.map(|m| m.device.clone()),
                queue: served.map(|m| m.runner.state()),
                reason,
                reload_error: v.reload_error.clone(),
                notes: served.map(|m| m.notes.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let served = entry.default_version();
    let tensors = |specs: &[TensorSpec]| specs.iter().map(TensorInfo::from).collect();
    ModelInfo {
        name: entry.name.clone(),
        state: entry.state(),
        reason: entry.reason(),
        default_version: served.map(|m| m.version),
        versions,
        engine: served.and_then(|m| m.engine),
        device: served.map(|m| m.device.clone()),
        inputs: served.map(|m| tensors(&m.signature.inputs)),
        outputs: served.map(|m| tensors(&m.signature.outputs)),
        output: served.map(|m| m.output),
        labels: entry.metadata.labels.clone(),
        description: entry.metadata.description.clone(),
        task: entry.metadata.task.clone(),
        test_accuracy: entry.metadata.test_accuracy(),
        source: entry.source.display().to_string(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthzBody {
    /// Always `alive`.
    #[schema(example = "alive")]
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "Health",
    responses((status = 200, description = "Alive", body = HealthzBody)))]
pub async fn healthz() -> Json<HealthzBody> {
    Json(HealthzBody { status: "alive" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyzBody {
    /// `ready`, or `not ready` with the `reason` (loading, shutting down).
    status: &'static str,
    /// Models with a version serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    models_ready: Option<usize>,
    /// Models that failed to load (listed with their reasons in /api/v1/ml/models).
    #[serde(skip_serializing_if = "Option::is_none")]
    models_failed: Option<usize>,
    /// Why the server is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Every model is loaded and warmed up (failed ones included), and the server is not shutting
/// down.
#[utoipa::path(get, path = "/readyz", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = ReadyzBody),
        (status = 503, description = "Loading or shutting down", body = ReadyzBody),
    ))]
pub async fn readyz(State(runtime): State<Arc<Runtime>>) -> (StatusCode, Json<ReadyzBody>) {
    match runtime.ready() {
        Ok(repository) => {
            let ready = repository
                .models()
                .filter(|m| m.state() == ModelState::Ready)
                .count();
            let failed = repository.models().count() - ready;
            let body = ReadyzBody {
                status: "ready",
                models_ready: Some(ready),
                models_failed: Some(failed),
                reason: None,
            };
            (StatusCode::OK, Json(body))
        }
        Err(e) => {
            let body = ReadyzBody {
                status: "not ready",
                models_ready: None,
                models_failed: None,
                reason: Some(e.message),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
