//! The Open Inference Protocol (KServe V2) over REST, with Triton's extensions its clients use:
//! binary tensor data, classification, model repository, model configuration and statistics.
//! Handlers only translate between the protocol's JSON (plus raw tensors) and the runtime's
//! request; what they share with gRPC is in [`crate::oip`].

use std::sync::Arc;
use std::time::Instant;

use aicp_core::{Error, ErrorKind, Result, TensorData};
use aicp_runtime::{InferInput, ModelControl, Runtime};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::error::{V2Error, V2ErrorBody, body, parse_json};
use crate::oip::{self, Output, OutputRequest};

/// The binary tensor data extension's header: the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

type V2Result<T> = std::result::Result<T, V2Error>;

/// The path of a model route: a name, and a version when the route has `/versions/{version}`.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    /// Always `aicp`.
    name: &'static str,
    /// aicp's version.
    version: &'static str,
    /// The protocol extensions served.
    #[schema(value_type = Vec<String>)]
    extensions: [&'static str; oip::EXTENSIONS.len()],
}

/// Any other path under `/v2`: the protocol's 404, in its shape.
pub async fn not_found(uri: axum::http::Uri) -> V2Error {
    V2Error(Error::not_found(format!("no route for {}", uri.path())))
}

/// The server's name, version and protocol extensions.
#[utoipa::path(get, path = "/v2", tag = "Open Inference Protocol",
    responses(
        (status = 200, description = "Server metadata", body = ServerMetadata),
    ))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: oip::SERVER_NAME,
        version: oip::SERVER_VERSION,
        extensions: oip::EXTENSIONS,
    })
}

/// `GET /v2/health/live`'s body, as the Open Inference Protocol defines it (KServe's clients
/// read it; Triton's read only the status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always true: a server that answers is alive.
    pub live: bool,
}

/// `GET /v2/health/ready`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// True once the model directory is loaded, false again once shutdown starts.
    pub ready: bool,
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`'s body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelReadiness {
    /// The model asked about.
    pub name: String,
    /// Whether the model (version) can serve.
    pub ready: bool,
}

/// Liveness, with the Open Inference Protocol's body.
#[utoipa::path(get, path = "/v2/health/live", tag = "Health",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { live: true })
}

/// Readiness, with the Open Inference Protocol's body: the model directory has been loaded.
#[utoipa::path(get, path = "/v2/health/ready", tag = "Health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Loading or shutting down", body = V2ErrorBody),
    ))]
pub async fn ready(State(runtime): State<Arc<Runtime>>) -> V2Result<Json<Readiness>> {
    runtime.ready()?;
    Ok(Json(Readiness { ready: true }))
}

/// Whether a model's default version can serve: 200 when ready, 503 when not (yet).
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "Health",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Ready", body = ModelReadiness),
        (status = 503, description = "Not ready", body = ModelReadiness),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub async fn model_ready(
    State(runtime): State<Arc<Runtime>>,
    Path(path): Path<ModelPath>,
) -> V2Result<Response> {
    let ready = oip::model_ready(&runtime, &path.name, path.version.as_deref())?;
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = ModelReadiness {
        name: path.name,
        ready,
    };
    Ok((status, Json(body)).into_response())
}

/// A model's inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Model metadata", body = oip::ModelMetadata),
        (status = 404, description = "No such model", body = V2ErrorBody),
        (status = 503, description = "Not ready", body = V2ErrorBody),
    ))]
pub async fn model_metadata(
    State(runtime): State<Arc<Runtime>>,
    Path(path): Path<ModelPath>,
) -> V2Result<Json<oip::ModelMetadata>> {
    Ok(Json(oip::model_metadata(
        &runtime,
        &path.name,
        path.version.as_deref(),
    )?))
}

/// A model's configuration (Triton's model configuration extension).
#[utoipa::path(get, path = "/v2/models/{name}/config", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Model configuration", body = oip::ModelConfig),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub async fn model_config(
    State(runtime): State<Arc<Runtime>>,
    Path(path): Path<ModelPath>,
) -> V2Result<Json<oip::ModelConfig>> {
    let model = oip::find(&runtime, &path.name, path.version.as_deref())?;
    Ok(Json(oip::model_config(&model)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatisticsResponse {
    /// One entry per model version.
    model_stats: Vec<oip::ModelStatistics>,
}

/// Every ready model version's statistics.
#[utoipa::path(get, path = "/v2/models/stats", tag = "Open Inference Protocol",
    responses(
        (status = 200, description = "Statistics", body = StatisticsResponse),
    ))]
pub async fn all_statistics(
    State(runtime): State<Arc<Runtime>>,
) -> V2Result<Json<StatisticsResponse>> {
    let model_stats = oip::model_statistics(&runtime, None, None)?;
    Ok(Json(StatisticsResponse { model_stats }))
}

/// A model's statistics (Triton's statistics extension), for each ready version.
#[utoipa::path(get, path = "/v2/models/{name}/stats", tag = "Open Inference Protocol",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Statistics", body = StatisticsResponse),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub async fn model_statistics(
    State(runtime): State<Arc<Runtime>>,
    Path(path): Path<ModelPath>,
) -> V2Result<Json<StatisticsResponse>> {
    let model_stats = oip::model_statistics(&runtime, Some(&path.name), path.version.as_deref())?;
    Ok(Json(StatisticsResponse { model_stats }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct IndexRequest {
    /// Only the ready versions.
    #[serde(default)]
    #[schema(default = false)]
    ready: bool,
}

/// Every model and version in the model directory, with its state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "Model repository",
    request_body(content = Option<IndexRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The index", body = Vec<oip::IndexEntry>),
        (status = 400, description = "A malformed body", body = V2ErrorBody),
    ))]
pub async fn repository_index(
    State(runtime): State<Arc<Runtime>>,
    bytes: std::result::Result<Bytes, BytesRejection>,
) -> V2Result<Json<Vec<oip::IndexEntry>>> {
    let bytes = body(bytes)?;
    let request: IndexRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        parse_json(&bytes)?
    };
    let repository = runtime.repository()?;
    Ok(Json(oip::repository_index(&repository, request.ready)))
}

/// An empty object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Empty {}

/// Load (or reload) a model from the model directory (the repository extension; any body, such
/// as Triton's parameters, is ignored). Needs the admin token; off unless the server has one.
/// Reads only inside the model directory.
#[utoipa::path(post, path = "/v2/repository/models/{name}/load", tag = "Model repository",
    params(("name" = String, Path, description = "The model: a directory or .onnx file in the model directory")),
    responses(
        (status = 200, description = "Loaded", body = Empty),
        (status = 400, description = "Not a valid name, or the model failed to load (the reason)", body = V2ErrorBody),
        (status = 403, description = "Model management is off (no admin token, or --model-control none)", body = V2ErrorBody),
        (status = 404, description = "No such model in the model directory", body = V2ErrorBody),
    ))]
pub async fn load_model(
    State(control): State<Arc<ModelControl>>,
    Path(name): Path<String>,
) -> V2Result<Json<Empty>> {
    blocking(move || control.load(&name)).await?;
    Ok(Json(Empty {}))
}

/// Take a model out of service until it is loaded again; requests in flight finish. Needs the
/// admin token.
#[utoipa::path(post, path = "/v2/repository/models/{name}/unload", tag = "Model repository",
    params(("name" = String, Path, description = "The model")),
    responses(
        (status = 200, description = "Unloaded", body = Empty),
        (status = 400, description = "Not a valid name", body = V2ErrorBody),
        (status = 403, description = "Model management is off", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
    ))]
pub async fn unload_model(
    State(control): State<Arc<ModelControl>>,
    Path(name): Path<String>,
) -> V2Result<Json<Empty>> {
    blocking(move || control.unload(&name)).await?;
    Ok(Json(Empty {}))
}

/// Runs a model-control step (which reads files and loads models) off the async threads.
pub async fn blocking(
    step: impl FnOnce() -> aicp_core::Result<()> + Send + 'static,
) -> aicp_core::Result<()> {
    tokio::task::spawn_blocking(step).await.unwrap_or_else(|e| {
        Err(aicp_core::Error::internal(format!(
            "model control failed: {e}"
        )))
    })
}

/// An infer request's JSON. Fields the protocol may add later are ignored, as it asks.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = InferRequest)]
pub struct InferRequestJson<'a> {
    /// Echoed in the response.
    #[serde(default)]
    id: Option<String>,
    /// `timeout` (microseconds): past it the request fails; `binary_data_output` (bool).
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
    /// One per model input.
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    /// Which outputs, and how; default: every output, as JSON.
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = InferInput)]
pub struct InputJson<'a> {
    /// The model input it feeds.
    name: String,
    /// Batch first.
    shape: Vec<u64>,
    /// `BOOL`, `UINT8`..`UINT64`, `INT8`..`INT64`, `FP16`, `BF16`, `FP32`, `FP64`, `BYTES`:
    /// the model input's own type.
    #[schema(example = "FP32")]
    datatype: String,
    /// `binary_data_size`: the tensor's bytes follow the JSON header instead of `data`.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
    /// The values, flat or nested, in row-major order: numbers, `true`/`false` for BOOL,
    /// strings for BYTES. Read once the datatype is known, without building a JSON tree.
    #[serde(borrow, default)]
    #[schema(value_type = Option<Vec<Value>>)]
    data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RequestedOutput)]
pub struct OutputJson {
    /// The model output.
    name: String,
    /// `binary_data` (bool): return it as binary; `classification` (k): return the top k
    /// classes as `"score:index:label"` strings.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InferResponse)]
pub struct InferResponseJson<'a> {
    /// The model that answered.
    model_name: &'a str,
    /// Its version.
    model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// The outputs asked for.
    outputs: Vec<OutputJsonOut<'a>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = InferOutput)]
pub struct OutputJsonOut<'a> {
    /// The model output.
    name: &'a str,
    /// The output's own element type, as for inputs (`BYTES` for classification).
    datatype: &'static str,
    /// Batch first.
    #[schema(value_type = Vec<u64>)]
    shape: &'a [usize],
    /// `binary_data_size` when the data follows the JSON header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// The values in row-major order (absent when returned as binary): numbers, `true` and
    /// `false`, or strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    data: Option<&'a TensorData>,
}

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
        (InferRequestJson = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs", body = InferResponseJson),
        (status = 400, description = "A bad request: malformed JSON or binary layout, wrong inputs, shapes, types or values", body = V2ErrorBody),
        (status = 404, description = "No such model", body = V2ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = V2ErrorBody),
        (status = 503, description = "Overloaded, or not ready", body = V2ErrorBody),
        (status = 504, description = "The request's timeout passed", body = V2ErrorBody),
        (status = 500, description = "The engine failed", body = V2ErrorBody),
    ))]
pub async fn infer(
    State(runtime): State<Arc<Runtime>>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    bytes: std::result::Result<Bytes, BytesRejection>,
) -> V2Result<Response> {
    let arrived = Instant::now();
    let bytes = body(bytes)?;
    let (request, binary) = read_request(&headers, &bytes)?;
    // From here on, a refusal counts against the model's statistics (see `Ticket`).
    let version = oip::parse_version(path.version.as_deref())?;
    let model = runtime.model(&path.name, version)?;
    let Prepared {
        inputs,
        requested,
        binary_default,
        timeout,
    } = prepare(&request, binary)?;
    oip::check_outputs(&model, &requested)?;
    let deadline = oip::deadline(arrived, timeout);
    let response = runtime.run(model, inputs, deadline).await?;
    let outputs = oip::select_outputs(
        &response.model,
        response.outputs,
        &requested,
        binary_default,
    );
    Ok(encode_response(
        &response.model.name,
        response.model.version,
        request.id,
        &outputs,
    )?)
}

/// An infer request's body read: its JSON, and the raw tensor bytes after it (the binary data
/// extension, as the `Inference-Header-Content-Length` header says).
pub fn read_request<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<(InferRequestJson<'a>, &'a [u8])> {
    let (header, binary) = split_body(headers, body)?;
    Ok((parse_json(header)?, binary))
}

/// What an infer request asks for, read from its JSON and binary data.
#[derive(Debug)]
pub struct Prepared {
    pub inputs: Vec<InferInput>,
    pub requested: Vec<OutputRequest>,
    /// Outputs in binary unless an output says otherwise.
    pub binary_default: bool,
    /// The request's `timeout` parameter, in microseconds.
    pub timeout: Option<u64>,
}

/// Reads every input (JSON data, or its share of `binary`), the requested outputs and the
/// parameters.
pub fn prepare(request: &InferRequestJson, mut binary: &[u8]) -> Result<Prepared> {
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        inputs.push(read_input(input, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(Error::invalid(format!(
            "{} bytes of binary data follow the last input's",
            binary.len()
        )));
    }
    let binary_default = flag(&request.parameters, "binary_data_output")?.unwrap_or(false);
    let requested = request
        .outputs
        .iter()
        .map(|o| {
            Ok(OutputRequest {
                name: o.name.clone(),
                classification: count(&o.parameters, "classification")?,
                binary: flag(&o.parameters, "binary_data")?.unwrap_or(binary_default),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let timeout = count(&request.parameters, "timeout")?.map(|us| us as u64);
    Ok(Prepared {
        inputs,
        requested,
        binary_default,
        timeout,
    })
}

/// Splits a body into its JSON and the raw tensor bytes after it, as the
/// `Inference-Header-Content-Length` header says; all JSON without the header.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8])> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::MalformedBody,
                format!("Inference-Header-Content-Length must be a byte count, got {value:?}"),
            )
        })?;
    if length > body.len() {
        return Err(Error::new(
            ErrorKind::MalformedBody,
            format!(
                "Inference-Header-Content-Length is {length} but the body has only {} bytes",
                body.len()
            ),
        ));
    }
    Ok(body.split_at(length))
}

/// One input: its JSON `data`, or its `binary_data_size` bytes taken from the front of `binary`.
fn read_input(input: &InputJson, binary: &mut &[u8]) -> Result<InferInput> {
    let in_input = oip::about_input(&input.name);
    let shared_memory = input.parameters.contains_key("shared_memory_region");
    let (datatype, shape) =
        oip::input_header(&input.datatype, &input.shape, shared_memory).map_err(&in_input)?;
    let binary_size = count(&input.parameters, "binary_data_size").map_err(&in_input)?;
    let data = match (binary_size, input.data) {
        (Some(_), Some(_)) => {
            return Err(in_input(Error::invalid(
                "has both data and binary_data_size; send one",
            )));
        }
        (None, None) => return Err(in_input(Error::invalid("has no data"))),
        (Some(size), None) => {
            if size > binary.len() {
                return Err(in_input(Error::new(
                    ErrorKind::MalformedBody,
                    format!(
                        "binary_data_size is {size} but only {} bytes of binary data remain",
                        binary.len()
                    ),
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            TensorData::from_le_bytes(datatype, mine).map_err(in_input)?
        }
        (None, Some(raw)) => {
            TensorData::from_json(datatype, raw.get())
                .map_err(in_input)?
                .0
        }
    };
    Ok(InferInput {
        name: Some(input.name.clone()),
        shape,
        data,
    })
}

/// A boolean parameter.
fn flag(parameters: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::invalid(format!(
            "parameter {key:?} must be true or false, got {other}"
        ))),
    }
}

/// A non-negative integer parameter.
fn count(parameters: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match parameters.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "parameter {key:?} must be a non-negative integer, got {value}"
                ))
            }),
    }
}

/// The response: JSON alone, or JSON followed by the binary outputs' raw bytes with the
/// `Inference-Header-Content-Length` header. Fails when an output asked for as JSON holds bytes
/// that are not UTF-8, which JSON cannot carry (as binary data, they can).
fn encode_response(
    model: &str,
    version: u64,
    id: Option<String>,
    outputs: &[Output],
) -> Result<Response> {
    let mut raw = Vec::new();
    let described: Vec<OutputJsonOut> = outputs
        .iter()
        .map(|o| {
            let (parameters, data) = if o.binary {
                let bytes = o.data.to_le_bytes();
                let size = bytes.len();
                raw.extend_from_slice(&bytes);
                (Some(json!({ "binary_data_size": size })), None)
            } else {
                (None, Some(&o.data))
            };
            OutputJsonOut {
                name: &o.name,
                datatype: o.data.datatype().name(),
                shape: &o.shape,
                parameters,
                data,
            }
        })
        .collect();
    let header = InferResponseJson {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: described,
    };
    let mut body = serde_json::to_vec(&header).map_err(|e| Error::invalid(e.to_string()))?;
    if !outputs.iter().any(|o| o.binary) {
        return Ok((
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response());
    }
    let json_length = body.len();
    body.extend_from_slice(&raw);
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                axum::http::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(json_length),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, HeaderValue::from_str(length).unwrap());
        h
    }

    #[test]
    fn the_header_length_splits_json_from_binary() {
        let body = b"{\"a\":1}\x01\x02";
        assert_eq!(split_body(&HeaderMap::new(), body).unwrap().1, b"");
        let (json, raw) = split_body(&headers("7"), body).unwrap();
        assert_eq!((json, raw), (&b"{\"a\":1}"[..], &b"\x01\x02"[..]));
        let err = split_body(&headers("10"), body).unwrap_err();
        assert!(
            err.message.contains("is 10 but the body has only 9 bytes"),
            "{err}"
        );
        let err = split_body(&headers("-1"), body).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MalformedBody);
    }
}
