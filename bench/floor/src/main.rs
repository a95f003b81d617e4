//! The floor: what serving the benchmark's requests costs with nothing but the libraries aicp
//! is built on, at the versions aicp uses. A benchmark baseline, not product code.
//!
//! It does the work every server must do for the requests `aicp bench` sends, and nothing
//! else: no model, no queue, no middleware. With `--model`, it also runs the model on each
//! request's images, inline (see [`model`]), and answers with its logits: the floor for serving
//! the model, against which aicp's batching and engine threads must pay their way.
//! - HTTP (axum, hyper): `POST /api/v1/ml/classify` parses the body into a typed struct with
//!   serde_json (straight from the bytes: axum's `Json` extractor would also track each value's
//!   path for its error messages, which costs a fifth of the floor's time) and answers a top-1
//!   prediction (fixed, or the model's), rendered by serde_json, in aicp's shape.
//! - HTTP: `POST /v2/models/{name}/infer` reads the Open Inference Protocol's request, JSON or
//!   with binary tensors (the `Inference-Header-Content-Length` split), checks that the tensor
//!   holds as many values as its shape says, and answers logits the same way (binary
//!   when the request asks for binary outputs). `GET /v2/models/{name}` answers the MNIST
//!   model's metadata, which `aicp bench` reads to shape its requests.
//! - gRPC (tonic): `ModelInfer` with raw contents, checked the same way, answered with raw
//!   logits; `ModelMetadata` as above. Every other method is unimplemented.
//!
//! Each server runs on tokio's multi-threaded runtime with as many workers as the process may
//! use cores, with mimalloc and TCP_NODELAY, as `aicp serve` does.

// The workspace's rule that every route be documented is aicp's; the floor has no document.
#![allow(clippy::disallowed_methods)]

mod model;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use serde::{Deserialize, Serialize};
use tonic::transport::server::TcpIncoming;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod proto {
    tonic::include_proto!("inference");
}

#[derive(Parser)]
#[command(about = "The floor: bare HTTP and gRPC servers answering aicp bench's requests")]
struct Args {
    /// The HTTP port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 18500)]
    http_port: u16,
    /// The gRPC port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 18501)]
    grpc_port: u16,
    /// Also run this model (the bundled MNIST MLP's shapes: 28x28 images in, 10 logits out)
    /// on every request, inline, and answer with its logits.
    #[arg(long)]
    model: Option<PathBuf>,
    /// ONNX Runtime's shared library, for --model.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
}

/// The fixed answer: what the bundled MNIST model gives for some digit.
const LOGITS: [f32; 10] = [
    -0.58, -0.48, -0.44, -0.35, 0.29, 0.6, -0.3, 0.22, -0.74, -0.34,
];

const METADATA: &str = r#"{"name":"mnist","versions":["1"],"platform":"onnx_onnxv1","inputs":[{"name":"input","datatype":"FP32","shape":[-1,1,28,28]}],"outputs":[{"name":"logits","datatype":"FP32","shape":[-1,10]}]}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(path) = &args.model {
        let loaded = match args.ort_lib.as_deref() {
            Some(library) => model::load(path, library),
            None => Err("--model needs ONNX Runtime's library: --ort-lib or ORT_DYLIB_PATH".into()),
        };
        if let Err(e) = loaded {
            eprintln!("aicp-floor: {e}");
            std::process::exit(2);
        }
    }
    let bind = |port| tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)));
    let (http, grpc) = (bind(args.http_port).await?, bind(args.grpc_port).await?);
    println!(
        "floor: http on {}, grpc on {}, {}",
        http.local_addr()?,
        grpc.local_addr()?,
        match &args.model {
            Some(path) => format!("running {}", path.display()),
            None => "fixed answers".to_string(),
        }
    );
    let app = Router::new()
        .route("/api/v1/ml/classify", post(classify))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/infer", post(infer));
    let grpc = tonic::transport::Server::builder()
        .add_service(proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(Grpc))
        .serve_with_incoming(TcpIncoming::from(grpc).with_nodelay(Some(true)));
    tokio::select! {
        served = axum::serve(http.tap_io(|tcp| { let _ = tcp.set_nodelay(true); }), app) => served?,
        served = grpc => served?,
    }
    Ok(())
}

#[derive(Deserialize)]
struct ClassifyRequest {
    model_name: String,
    image_data: Vec<f32>,
    #[serde(default)]
    top_k: Option<usize>,
}

#[derive(Serialize)]
struct ClassifyResponse {
    model_name: String,
    model_version: u64,
    predictions: Vec<Prediction>,
    inference_time_ms: f64,
}

#[derive(Serialize)]
struct Prediction {
    class: usize,
    label: String,
    confidence: f32,
}

async fn classify(body: Bytes) -> Response {
    let request: ClassifyRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return bad(&e.to_string()),
    };
    if request.image_data.len() != 784 || request.top_k.unwrap_or(1) != 1 {
        return (StatusCode::BAD_REQUEST, "expected 784 values and top_k 1").into_response();
    }
    let logits = match logits(model::Pixels::Floats(&request.image_data), 1) {
        Ok(logits) => logits,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let (class, confidence) = top1(&logits);
    Json(ClassifyResponse {
        model_name: request.model_name,
        model_version: 1,
        predictions: vec![Prediction {
            class,
            label: class.to_string(),
            confidence,
        }],
        inference_time_ms: 0.0,
    })
    .into_response()
}

/// The logits of `batch` images: the model's when the floor runs one, else the fixed answer's.
fn logits(pixels: model::Pixels<'_>, batch: usize) -> Result<Cow<'static, [f32]>, String> {
    match model::get() {
        Some(model) => model.logits(pixels, batch).map(Cow::Owned),
        None if batch == 1 => Ok(Cow::Borrowed(&LOGITS)),
        None => Ok(Cow::Owned(LOGITS.repeat(batch))),
    }
}

/// The most likely class of one image's logits, and its softmax probability.
fn top1(logits: &[f32]) -> (usize, f32) {
    let (class, &best) = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("ten logits");
    let total: f32 = logits.iter().map(|v| (v - best).exp()).sum();
    (class, 1.0 / total)
}

async fn metadata() -> Response {
    ([(CONTENT_TYPE, "application/json")], METADATA).into_response()
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<RequestParameters>,
    inputs: Vec<InferInput>,
}

#[derive(Deserialize)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: bool,
}

#[derive(Deserialize)]
struct InferInput {
    #[allow(dead_code)]
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    data: Vec<f32>,
    #[serde(default)]
    parameters: Option<InputParameters>,
}

#[derive(Deserialize)]
struct InputParameters {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    model_name: &'a str,
    model_version: &'static str,
    outputs: [OutputTensor<'a>; 1],
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: [u64; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Cow<'a, [f32]>>,
}

#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
}

const HEADER_LENGTH: &str = "inference-header-content-length";

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_string()).into_response()
}

async fn infer(Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let header_length = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(value) => match value.to_str().ok().and_then(|v| v.parse().ok()) {
            Some(length) if length <= body.len() => length,
            _ => return bad("a bad Inference-Header-Content-Length"),
        },
    };
    let request: InferRequest = match serde_json::from_slice(&body[..header_length]) {
        Ok(request) => request,
        Err(e) => return bad(&e.to_string()),
    };
    let binary = &body[header_length..];
    let [input] = &request.inputs[..] else {
        return bad("expected one input");
    };
    let values = input.shape.iter().product::<u64>() as usize;
    let sent = match &input.parameters {
        Some(parameters) if parameters.binary_data_size == binary.len() => binary.len() / 4,
        Some(_) => return bad("binary_data_size does not match the body"),
        None => input.data.len(),
    };
    if input.datatype != "FP32" || sent != values || !values.is_multiple_of(784) {
        return bad("expected FP32 values of whole 28x28 images");
    }
    let binary_out = request
        .parameters
        .is_some_and(|parameters| parameters.binary_data_output);
    let batch = (values / 784) as u64;
    let pixels = match input.parameters {
        Some(_) => model::Pixels::Bytes(binary),
        None => model::Pixels::Floats(&input.data),
    };
    let logits = match logits(pixels, batch as usize) {
        Ok(logits) => logits,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let response = InferResponse {
        id: request.id,
        model_name: &name,
        model_version: "1",
        outputs: [OutputTensor {
            name: "logits",
            datatype: "FP32",
            shape: [batch, 10],
            parameters: binary_out.then_some(OutputParameters {
                binary_data_size: 40 * batch as usize,
            }),
            data: (!binary_out).then_some(Cow::Borrowed(&logits[..])),
        }],
    };
    let mut out = serde_json::to_vec(&response).expect("serialisable");
    if !binary_out {
        return ([(CONTENT_TYPE, "application/json")], out).into_response();
    }
    let json_length = out.len();
    out.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
    let mut response = ([(CONTENT_TYPE, "application/octet-stream")], out).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(json_length));
    response
}

struct Grpc;

#[tonic::async_trait]
impl proto::grpc_inference_service_server::GrpcInferenceService for Grpc {
    async fn model_metadata(
        &self,
        request: tonic::Request<proto::ModelMetadataRequest>,
    ) -> Result<tonic::Response<proto::ModelMetadataResponse>, tonic::Status> {
        let tensor = |name: &str, shape: Vec<i64>| proto::model_metadata_response::TensorMetadata {
            name: name.to_string(),
            datatype: "FP32".to_string(),
            shape,
        };
        Ok(tonic::Response::new(proto::ModelMetadataResponse {
            name: request.into_inner().name,
            versions: vec!["1".to_string()],
            platform: "onnx_onnxv1".to_string(),
            inputs: vec![tensor("input", vec![-1, 1, 28, 28])],
            outputs: vec![tensor("logits", vec![-1, 10])],
        }))
    }

    async fn model_infer(
        &self,
        request: tonic::Request<proto::ModelInferRequest>,
    ) -> Result<tonic::Response<proto::ModelInferResponse>, tonic::Status> {
        let request = request.into_inner();
        let (Some(input), Some(raw)) = (request.inputs.first(), request.raw_input_contents.first())
        else {
            return Err(tonic::Status::invalid_argument(
                "expected one input, as raw contents",
            ));
        };
        let values = input.shape.iter().product::<i64>() as usize;
        if input.datatype != "FP32" || raw.len() != values * 4 || !values.is_multiple_of(784) {
            return Err(tonic::Status::invalid_argument(
                "expected FP32 values of whole 28x28 images",
            ));
        }
        let batch = values / 784;
        let logits = logits(model::Pixels::Bytes(raw), batch).map_err(tonic::Status::internal)?;
        Ok(tonic::Response::new(proto::ModelInferResponse {
            model_name: request.model_name,
            model_version: "1".to_string(),
            id: request.id,
            parameters: Default::default(),
            outputs: vec![proto::model_infer_response::InferOutputTensor {
                name: "logits".to_string(),
                datatype: "FP32".to_string(),
                shape: vec![batch as i64, 10],
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![logits.iter().flat_map(|v| v.to_le_bytes()).collect()],
        }))
    }
}
