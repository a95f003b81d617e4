//! The HTTP API's OpenAPI 3.1 document, served at `/openapi.json`, with Swagger UI at `/docs`
//! (built into the binary: it works offline).
//!
//! Each operation is declared here, on a function that only carries its documentation, with the
//! schemas of its bodies and errors; the router (`crate::router`) lists its routes in
//! [`crate::ROUTES`], and a test checks that both agree, route for route.

use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
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
    paths(
        page, classify, classify_image, inference, list_models, get_model, healthz, readyz,
        server_metadata, live, ready, model_ready, model_version_ready, model_metadata,
        model_version_metadata, model_config, model_version_config, model_stats,
        model_version_stats, all_stats, infer, version_infer, repository_index, load, unload,
        metrics, openapi_json, docs,
    ),
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

/// `/openapi.json` and `/docs`.
pub fn router() -> Router {
    SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}

// ---------------------------------------------------------------------------------------------
// Schemas

#[derive(Serialize, ToSchema)]
pub struct ClassifyRequest {
    /// One image as 784 values in [0, 1], `[28][28]` or `[1][28][28]`; or a batch of such
    /// images (`[N][784]`, `[N][28][28]`, `[N][1][28][28]`). Values outside [0, 1], NaN and
    /// infinities are refused.
    #[schema(value_type = Vec<Object>)]
    image_data: Vec<f32>,
    /// The model to use.
    #[schema(default = "mnist")]
    model_name: Option<String>,
    /// How many classes to return, most likely first.
    #[schema(default = 5, minimum = 1)]
    top_k: Option<u32>,
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Prediction {
    /// The class index (the output row's position).
    class: u32,
    /// The class label from the model's metadata, else the index.
    label: String,
    /// The probability, in [0, 1].
    confidence: f32,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    predictions: Vec<Prediction>,
}

/// One image gives `predictions`; a batch gives `results`, one per image.
#[derive(Serialize, ToSchema)]
pub struct ClassifyResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    predictions: Option<Vec<Prediction>>,
    results: Option<Vec<BatchResult>>,
    /// Time in the server, in milliseconds.
    inference_time_ms: f64,
}

/// The picture as it came.
#[derive(Serialize, ToSchema)]
pub struct PictureInfo {
    /// Its width in pixels.
    width: u32,
    /// Its height in pixels.
    height: u32,
    /// Whether it was dark ink on light paper, and was inverted (MNIST's digits are light on
    /// dark).
    inverted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ClassifyImageResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    /// The most likely classes, best first.
    predictions: Vec<Prediction>,
    /// The picture as it came.
    picture: PictureInfo,
    /// With `debug=true`: the 28 rows of 28 pixels the model saw, 0 (background) to 255 (ink);
    /// the model gets `low + pixel * (high - low) / 255` for its declared input range.
    preprocessed: Option<Vec<Vec<u8>>>,
    /// Time in the server, in milliseconds, decoding and preprocessing included.
    inference_time_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub struct InferenceRequest {
    /// The input values, flat or nested.
    #[schema(value_type = Vec<Object>)]
    input_data: Vec<f32>,
    /// The input's shape, batch first (`[1, 1, 28, 28]`); it must hold exactly the values
    /// given. Default: rows of the model's values per sample.
    input_shape: Option<Vec<i64>>,
    #[schema(default = "mnist")]
    /// The model to run.
    model_name: Option<String>,
    /// Apply softmax to 2-D outputs (never twice: a model that outputs probabilities is left
    /// alone).
    #[schema(default = false)]
    apply_softmax: Option<bool>,
    /// Also return the top k classes of the first output.
    #[schema(minimum = 1)]
    top_k: Option<u32>,
    #[schema(minimum = 1)]
    /// How long the client waits, in milliseconds; past it the request fails with 504.
    timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct OutputTensor {
    /// The model output.
    name: String,
    /// Batch first.
    shape: Vec<u64>,
    /// The values, row-major (probabilities with `apply_softmax`).
    data: Vec<f32>,
}

#[derive(Serialize, ToSchema)]
pub struct InferenceResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    outputs: Vec<OutputTensor>,
    /// With `top_k`: one list per sample.
    predictions: Option<Vec<Vec<Prediction>>>,
    /// Time in the server, in milliseconds.
    inference_time_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub struct TensorInfo {
    /// The tensor's name in the model.
    name: String,
    /// The element type: `FP32`, `INT64`, ...
    datatype: String,
    /// `-1` for a dimension that varies (the batch).
    shape: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueState {
    /// Requests waiting for an engine instance.
    waiting: u64,
    /// Requests in an engine run.
    running: u64,
    /// Requests that may wait before more are refused as overloaded.
    max_queue_size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    /// The version number.
    version: u64,
    #[schema(example = "ready")]
    /// `ready` or `failed`.
    state: String,
    /// The engine serving it (ready versions): `cuda`, `onnxruntime` or `tract`.
    engine: Option<String>,
    /// Where the engine runs it: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    device: Option<String>,
    queue: Option<QueueState>,
    /// Why it failed to load (failed versions).
    reason: Option<String>,
    /// Why its changed files failed to load again; the previous load still serves.
    reload_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    /// The model's name: its directory or file name.
    name: String,
    /// `ready` when a version serves, else `failed`.
    state: String,
    /// Why nothing serves.
    reason: Option<String>,
    /// The highest ready version, which requests without a version get.
    default_version: Option<u64>,
    versions: Vec<VersionInfo>,
    /// The engine serving the default version: `cuda`, `onnxruntime` or `tract`.
    engine: Option<String>,
    /// Where the engine runs the default version: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    device: Option<String>,
    inputs: Option<Vec<TensorInfo>>,
    outputs: Option<Vec<TensorInfo>>,
    /// `logits` or `probabilities`.
    output: Option<String>,
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

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    models: Vec<ModelInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiErrorBody {
    error: ApiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ApiErrorDetail {
    /// One of `malformed_body`, `invalid_argument`, `not_found`, `body_too_large`,
    /// `unsupported_media_type`, `unauthorized`, `forbidden`, `overloaded`, `unavailable`,
    /// `deadline_exceeded`, `internal`.
    code: String,
    /// What was expected and what came.
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "alive")]
    /// Always `alive`.
    status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `not ready` with the `reason` (loading, shutting down).
    status: String,
    /// Models with a version serving.
    models_ready: Option<u64>,
    /// Models that failed to load (listed with their reasons in /api/v1/ml/models).
    models_failed: Option<u64>,
    /// Why the server is not ready.
    reason: Option<String>,
}

/// The Open Inference Protocol's error body.
#[derive(Serialize, ToSchema)]
pub struct V2ErrorBody {
    /// What was expected and what came.
    error: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    /// Always `aicp`.
    name: String,
    /// aicp's version.
    version: String,
    /// The protocol extensions served.
    extensions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelMetadata {
    /// The model.
    name: String,
    /// Its ready versions.
    versions: Vec<String>,
    #[schema(example = "onnxruntime_onnx")]
    /// The model format, in Triton's names.
    platform: String,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigTensor {
    /// The tensor's name in the model.
    name: String,
    #[schema(example = "TYPE_FP32")]
    /// The element type, in Triton's names.
    data_type: String,
    /// Per sample (without the batch dimension when `max_batch_size` > 0).
    dims: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct InstanceGroup {
    /// The group's name.
    name: String,
    #[schema(example = "KIND_CPU")]
    /// Where they run: `KIND_CPU` or `KIND_GPU`.
    kind: String,
    /// Engine instances, each on its own thread.
    count: u32,
}

#[derive(Serialize, ToSchema)]
pub struct DynamicBatching {
    /// Batch sizes a batch stops growing at.
    preferred_batch_size: Vec<u64>,
    /// How long a request may wait for others to join its batch.
    max_queue_delay_microseconds: u64,
}

/// Triton's model configuration, as far as it applies.
#[derive(Serialize, ToSchema)]
pub struct ModelConfig {
    /// The model.
    name: String,
    /// The model format, in Triton's names.
    platform: String,
    /// The engine: `cuda`, `onnxruntime` or `tract`.
    backend: String,
    /// 0 when the model does not batch.
    max_batch_size: u64,
    input: Vec<ConfigTensor>,
    output: Vec<ConfigTensor>,
    instance_group: Vec<InstanceGroup>,
    dynamic_batching: Option<DynamicBatching>,
}

#[derive(Serialize, ToSchema)]
pub struct CountAndDuration {
    /// How many times.
    count: u64,
    /// Total nanoseconds.
    ns: u64,
}

#[derive(Serialize, ToSchema)]
pub struct InferStatistics {
    success: CountAndDuration,
    fail: CountAndDuration,
    queue: CountAndDuration,
    compute_input: CountAndDuration,
    compute_infer: CountAndDuration,
    compute_output: CountAndDuration,
    cache_hit: CountAndDuration,
    cache_miss: CountAndDuration,
}

#[derive(Serialize, ToSchema)]
pub struct BatchStatistics {
    /// Samples per engine run.
    batch_size: u64,
    compute_input: CountAndDuration,
    compute_infer: CountAndDuration,
    compute_output: CountAndDuration,
}

#[derive(Serialize, ToSchema)]
pub struct ModelStatistics {
    /// The model.
    name: String,
    /// The version.
    version: String,
    /// Milliseconds since the Unix epoch.
    last_inference: u64,
    /// Samples inferred.
    inference_count: u64,
    /// Engine runs; `inference_count / execution_count` is the average batch size.
    execution_count: u64,
    inference_stats: InferStatistics,
    batch_stats: Vec<BatchStatistics>,
}

#[derive(Serialize, ToSchema)]
pub struct StatisticsResponse {
    model_stats: Vec<ModelStatistics>,
}

#[derive(Serialize, ToSchema)]
pub struct InferInput {
    /// The model input it feeds.
    name: String,
    /// Batch first.
    shape: Vec<u64>,
    /// `BOOL`, `UINT8`..`UINT64`, `INT8`..`INT64`, `FP16`, `BF16`, `FP32`, `FP64`.
    #[schema(example = "FP32")]
    datatype: String,
    /// `binary_data_size`: the tensor's bytes follow the JSON header instead of `data`.
    #[schema(value_type = Object)]
    parameters: Option<serde_json::Value>,
    /// The values, flat or nested, in row-major order.
    #[schema(value_type = Vec<Object>)]
    data: Option<Vec<f32>>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestedOutput {
    /// The model output.
    name: String,
    /// `binary_data` (bool): return it as binary; `classification` (k): return the top k
    /// classes as `"score:index:label"` strings.
    #[schema(value_type = Object)]
    parameters: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    id: Option<String>,
    /// `timeout` (microseconds): past it the request fails; `binary_data_output` (bool).
    #[schema(value_type = Object)]
    parameters: Option<serde_json::Value>,
    inputs: Vec<InferInput>,
    /// Which outputs, and how; default: every output, as JSON.
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Serialize, ToSchema)]
pub struct InferOutput {
    /// The model output.
    name: String,
    /// Batch first.
    shape: Vec<u64>,
    /// The element type, as for inputs.
    datatype: String,
    /// `binary_data_size` when the data follows the JSON header.
    #[schema(value_type = Object)]
    parameters: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    /// The values in row-major order (absent when returned as binary).
    data: Option<Vec<f32>>,
}

#[derive(Serialize, ToSchema)]
pub struct InferResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: String,
    /// The request's id, if it had one.
    id: Option<String>,
    outputs: Vec<InferOutput>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexRequest {
    /// Only the ready versions.
    #[schema(default = false)]
    ready: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct IndexEntry {
    /// The model.
    name: String,
    /// The version (absent when the model has none that loads).
    version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    state: String,
    /// Why it is not ready, or why a reload failed while its previous load serves.
    reason: Option<String>,
}

/// An empty object.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

// ---------------------------------------------------------------------------------------------
// Operations: each function only carries its operation's documentation.

/// Classify one image or a batch of images.
#[utoipa::path(post, path = "/api/v1/ml/classify", tag = "ML API",
    request_body = ClassifyRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The most likely classes", body = ClassifyResponse),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 401, description = "No or wrong API key", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, shape or values (the message says what was expected and what came)", body = ApiErrorBody),
        (status = 429, description = "Overloaded: the model's queue or the in-flight cap is full", body = ApiErrorBody),
        (status = 503, description = "Model not ready, or the server is loading or shutting down", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub fn classify() {}

/// Classify a picture of a digit (PNG, JPEG, GIF, BMP or WebP): the raw body with its media
/// type, or the multipart/form-data field `image`. It is made MNIST-like first: grayscale, dark
/// ink on light paper inverted, cropped to the ink, its longer side scaled to 20 pixels and
/// centred by its centre of mass in 28x28.
#[utoipa::path(post, path = "/api/v1/ml/classify/image", tag = "ML API",
    params(
        ("model_name" = Option<String>, Query, description = "The model (default `mnist`)"),
        ("top_k" = Option<u32>, Query, description = "How many classes to return (default 5)"),
        ("debug" = Option<bool>, Query, description = "Also return the 28x28 picture the model saw"),
        ("timeout_ms" = Option<u64>, Query, description = "How long the client waits; past it, 504"),
    ),
    request_body(content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/gif"),
        (Vec<u8> = "image/bmp"), (Vec<u8> = "image/webp"), (Vec<u8> = "multipart/form-data"),
    ), description = "The picture"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The most likely classes", body = ClassifyImageResponse),
        (status = 400, description = "Not a picture, or a broken or truncated one", body = ApiErrorBody),
        (status = 401, description = "No or wrong API key", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes, or more than 8192 pixels a side", body = ApiErrorBody),
        (status = 415, description = "Not one of the picture media types, nor a multipart form", body = ApiErrorBody),
        (status = 422, description = "A blank picture, a model that does not take 28x28 pictures, or a bad query", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub fn classify_image() {}

/// The page to draw a digit or drop a picture, with the model's top classes as they change.
#[utoipa::path(get, path = "/", tag = "ML API",
    responses((status = 200, description = "The page (HTML)", content_type = "text/html")))]
pub fn page() {}

/// Run a model on raw input values.
#[utoipa::path(post, path = "/api/v1/ml/inference", tag = "ML API",
    request_body = InferenceRequest,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The outputs", body = InferenceResponse),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 401, description = "No or wrong API key", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, shape or values", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub fn inference() {}

/// Every model in the model directory, with its versions, state, engine and queue.
#[utoipa::path(get, path = "/api/v1/ml/models", tag = "ML API",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "No or wrong API key", body = ApiErrorBody),
        (status = 503, description = "Still loading", body = ApiErrorBody),
    ))]
pub fn list_models() {}

/// One model.
#[utoipa::path(get, path = "/api/v1/ml/models/{name}", tag = "ML API",
    params(("name" = String, Path, description = "The model's name")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The model", body = ModelInfo),
        (status = 401, description = "No or wrong API key", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 422, description = "Not a valid model name", body = ApiErrorBody),
    ))]
pub fn get_model() {}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "Health",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub fn healthz() {}

/// Every model is loaded and warmed up, and the server is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Loading or shutting down", body = Readiness),
    ))]
pub fn readyz() {}

/// The server's name, version and protocol extensions.
#[utoipa::path(get, path = "/v2", tag = "Open Inference Protocol",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Server metadata", body = ServerMetadata),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
    ))]
pub fn server_metadata() {}

/// Liveness, with the Open Inference Protocol's body.
#[utoipa::path(get, path = "/v2/health/live", tag = "Health",
    responses((status = 200, description = "Alive", body = crate::v2_rest::Liveness)))]
pub fn live() {}

/// Readiness, with the Open Inference Protocol's body.
#[utoipa::path(get, path = "/v2/health/ready", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = crate::v2_rest::Readiness),
        (status = 503, description = "Loading or shutting down", body = V2ErrorBody),
    ))]
pub fn ready() {}

/// Whether a model's default version can serve.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "Health",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Ready", body = crate::v2_rest::ModelReadiness),
        (status = 503, description = "Not ready", body = crate::v2_rest::ModelReadiness),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub fn model_ready() {}

/// Whether a model version can serve.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "Health",
    params(("name" = String, Path, description = "The model"), ("version" = String, Path, description = "The version number")),
    responses(
        (status = 200, description = "Ready", body = crate::v2_rest::ModelReadiness),
        (status = 503, description = "Not ready", body = crate::v2_rest::ModelReadiness),
        (status = 400, description = "Not a version number", body = V2ErrorBody),
        (status = 404, description = "No such model or version", body = V2ErrorBody),
    ))]
pub fn model_version_ready() {}

/// A model's inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
        (status = 503, description = "Not ready", body = V2ErrorBody),
    ))]
pub fn model_metadata() {}

/// A model version's inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model"), ("version" = String, Path, description = "The version number")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 400, description = "Not a version number", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model or version", body = V2ErrorBody),
    ))]
pub fn model_version_metadata() {}

/// A model's configuration (Triton's model configuration extension).
#[utoipa::path(get, path = "/v2/models/{name}/config", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Model configuration", body = ModelConfig),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub fn model_config() {}

/// A model version's configuration.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/config", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model"), ("version" = String, Path, description = "The version number")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Model configuration", body = ModelConfig),
        (status = 400, description = "Not a version number", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model or version", body = V2ErrorBody),
    ))]
pub fn model_version_config() {}

/// A model's statistics (Triton's statistics extension), for each ready version.
#[utoipa::path(get, path = "/v2/models/{name}/stats", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Statistics", body = StatisticsResponse),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub fn model_stats() {}

/// A model version's statistics.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/stats", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model"), ("version" = String, Path, description = "The version number")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Statistics", body = StatisticsResponse),
        (status = 400, description = "Not a version number", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model or version", body = V2ErrorBody),
    ))]
pub fn model_version_stats() {}

/// Every ready model version's statistics.
#[utoipa::path(get, path = "/v2/models/stats", tag = "Open Inference Protocol",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Statistics", body = StatisticsResponse),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
    ))]
pub fn all_stats() {}

/// Inference on a model's default version. The body is the JSON request, or with binary
/// tensors, the JSON header followed by the tensors' bytes (little-endian, row-major), its
/// length in the `Inference-Header-Content-Length` header; binary outputs come back the same
/// way.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "Open Inference Protocol",
    params(
        ("name" = String, Path, description = "The model"),
        ("Inference-Header-Content-Length" = Option<u64>, Header, description = "With binary tensors: the length of the JSON header at the start of the body"),
    ),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The outputs", body = InferResponse),
        (status = 400, description = "A bad request: malformed JSON or binary layout, wrong inputs, shapes, types or values", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = V2ErrorBody),
        (status = 503, description = "Overloaded, or not ready", body = V2ErrorBody),
        (status = 504, description = "The request's timeout passed", body = V2ErrorBody),
        (status = 500, description = "The engine failed", body = V2ErrorBody),
    ))]
pub fn infer() {}

/// Inference on one model version (the body as for the default version).
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "Open Inference Protocol",
    params(
        ("name" = String, Path, description = "The model"),
        ("version" = String, Path, description = "The version number"),
        ("Inference-Header-Content-Length" = Option<u64>, Header, description = "With binary tensors: the length of the JSON header"),
    ),
    request_body(content(
        (InferRequest = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The outputs", body = InferResponse),
        (status = 400, description = "A bad request", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
        (status = 404, description = "No such model or version", body = V2ErrorBody),
        (status = 413, description = "Body too large", body = V2ErrorBody),
        (status = 503, description = "Overloaded, or not ready", body = V2ErrorBody),
        (status = 504, description = "The request's timeout passed", body = V2ErrorBody),
        (status = 500, description = "The engine failed", body = V2ErrorBody),
    ))]
pub fn version_infer() {}

/// Every model and version in the model directory, with its state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "Model repository",
    request_body(content = Option<IndexRequest>, description = "Optional"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The index", body = Vec<IndexEntry>),
        (status = 400, description = "A malformed body", body = V2ErrorBody),
        (status = 401, description = "No or wrong API key", body = V2ErrorBody),
    ))]
pub fn repository_index() {}

/// Load (or reload) a model from the model directory. Needs the admin token; off unless the
/// server has one. Reads only inside the model directory.
#[utoipa::path(post, path = "/v2/repository/models/{name}/load", tag = "Model repository",
    params(("name" = String, Path, description = "The model: a directory or .onnx file in the model directory")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Loaded", body = Empty),
        (status = 400, description = "Not a valid name, or the model failed to load (the reason)", body = V2ErrorBody),
        (status = 401, description = "No or wrong admin token", body = V2ErrorBody),
        (status = 403, description = "Model management is off (no admin token, or --model-control none)", body = V2ErrorBody),
        (status = 404, description = "No such model in the model directory", body = V2ErrorBody),
    ))]
pub fn load() {}

/// Take a model out of service until it is loaded again; requests in flight finish. Needs the
/// admin token.
#[utoipa::path(post, path = "/v2/repository/models/{name}/unload", tag = "Model repository",
    params(("name" = String, Path, description = "The model")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Unloaded", body = Empty),
        (status = 400, description = "Not a valid name", body = V2ErrorBody),
        (status = 401, description = "No or wrong admin token", body = V2ErrorBody),
        (status = 403, description = "Model management is off", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub fn unload() {}

/// Prometheus metrics (here unless the server has a separate --metrics-port).
#[utoipa::path(get, path = "/metrics", tag = "Health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "Health",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
pub fn openapi_json() {}

/// Swagger UI over this document.
#[utoipa::path(get, path = "/docs", tag = "Health",
    responses((status = 200, description = "The interactive documentation (redirects to /docs/)", content_type = "text/html", body = String)))]
pub fn docs() {}
