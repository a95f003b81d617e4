//! An aicp server in the test's own process: the runtime over a model directory, on tract or on
//! a fake engine the test holds, with the HTTP front end driven through `oneshot` and the gRPC
//! front end over an in-memory connection. The same services `aicp serve` puts on its
//! listeners ([`crate::http_service`], [`crate::grpc_service`]); no port, no
//! process, no fixed wait.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Access;
use crate::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::shed::InFlight;
use crate::upload::{UploadLimits, Uploads};
use crate::{Services, grpc_service, http_service};
use aicp_core::{ModelSignature, Tensor};
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, EngineKind, LoadOptions, Runnable};
use aicp_runtime::{Batching, ControlMode, Engines, ModelControl, QueueState, Repository, Runtime};
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// How a test server is set up; [`Default`] is `aicp serve`'s defaults on tract.
pub struct Options {
    /// The engine every model runs on.
    pub engine: Box<dyn Engine>,
    pub access: Access,
    pub control: ControlMode,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    /// The scheduler's settings for models whose `[batching]` table leaves them out.
    pub batching: Batching,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            engine: Box::new(TractEngine),
            access: Access::default(),
            control: ControlMode::Poll,
            max_in_flight: 256,
            max_body_bytes: 4 << 20,
            batching: Batching::default(),
        }
    }
}

type Http = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
type Grpc = BoxCloneSyncService<Request<hyper::body::Incoming>, Response<Body>, Infallible>;

/// A server over one model directory.
pub struct Server {
    pub runtime: Arc<Runtime>,
    pub control: Arc<ModelControl>,
    http: Http,
    grpc: Grpc,
}

impl Server {
    /// Serves `models` with `options`, its models loaded and warmed up, and reported serving
    /// by the gRPC health service.
    pub async fn start(models: &Path, options: Options) -> Self {
        let Options {
            engine,
            access,
            control,
            max_in_flight,
            max_body_bytes,
            batching,
        } = options;
        // Installed before the models load, as `aicp serve` does, so /metrics counts what
        // loading does.
        let recorder = crate::metrics::recorder();
        let runtime = Arc::new(Runtime::new());
        let engines = Arc::new(Engines::only(engine));
        let repository = Repository::load(models, engines, &batching).unwrap();
        runtime.set_repository(repository);
        let control = Arc::new(ModelControl::new(runtime.clone(), control));
        let services = Services {
            runtime: runtime.clone(),
            control: control.clone(),
            access,
            in_flight: InFlight::new(max_in_flight),
            // `aicp serve`'s defaults but for the body size.
            uploads: Uploads::new(UploadLimits {
                max_body_bytes,
                memory_bytes: 256 << 20,
                body_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(75),
            }),
            metrics: Some(crate::metrics::router(runtime.clone(), recorder)),
        };
        let http = http_service(services.clone()).map_response(|r| r.map(Body::new));
        let (health, health_service) = tonic_health::server::health_reporter();
        crate::set_health(&health, tonic_health::ServingStatus::Serving).await;
        let grpc = grpc_service(&services, health_service).unwrap();
        let grpc = grpc.map_response(|r| r.map(Body::new));
        Self {
            runtime,
            control,
            http: BoxCloneSyncService::new(http),
            grpc: BoxCloneSyncService::new(grpc),
        }
    }

    /// The bundled model directory on tract.
    pub async fn bundled() -> Self {
        Self::start(&aicp_testkit::bundled_models(), Options::default()).await
    }

    /// Sends `request` through the HTTP front end.
    pub async fn call(&self, request: Request<Body>) -> Response<Body> {
        let Ok(response) = self.http.clone().oneshot(request).await;
        response
    }

    /// Sends `request`; its status, headers and body as JSON (`Null` when it is not JSON).
    pub async fn send(&self, request: Request<Body>) -> (u16, HeaderMap, Value) {
        let response = self.call(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Why model `name` does not serve: its entry's reason in the repository index, which
    /// must say it is unavailable.
    pub async fn failure_reason(&self, name: &str) -> String {
        let (status, index) = self
            .post("/v2/repository/index", &serde_json::json!({}))
            .await;
        assert_eq!(status, 200, "{index}");
        let entry = index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the index: {index}"));
        assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
        entry["reason"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.send(get(path)).await;
        (status, body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// Posts `body` as JSON, whatever it holds.
    pub async fn post_raw(&self, path: &str, body: impl Into<Body>) -> (u16, Value) {
        let (status, _, body) = self.send(post(path, "application/json", body)).await;
        (status, body)
    }

    /// A channel to the gRPC front end: each connection it opens is an in-memory pipe served
    /// by the same service `aicp serve` listens with.
    pub async fn channel(&self) -> Channel {
        let grpc = self.grpc.clone();
        Endpoint::from_static("http://in-process")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let grpc = grpc.clone();
                async move {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            grpc.clone().oneshot(request)
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .http2_only()
                            .serve_connection(TokioIo::new(server), service)
                            .await;
                    });
                    Ok::<_, Infallible>(TokioIo::new(client))
                }
            }))
            .await
            .unwrap()
    }

    /// A client of the inference service over [`Server::channel`].
    pub async fn grpc(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(self.channel().await)
    }

    /// The queue of `model`'s default version now.
    pub fn queue(&self, model: &str) -> QueueState {
        let repository = self.runtime.repository().unwrap();
        repository.get(model, None).unwrap().runner.state()
    }

    /// Waits until `model`'s queue holds `waiting` requests and runs `running`.
    pub async fn wait_for_queue(&self, model: &str, waiting: usize, running: usize) {
        eventually(
            &format!("{model}'s queue at ({waiting}, {running})"),
            || {
                let state = self.queue(model);
                (state.waiting, state.running) == (waiting, running)
            },
        )
        .await;
    }

    /// `model`'s default version's counts: (samples inferred, engine runs).
    pub fn counts(&self, model: &str) -> (u64, u64) {
        let repository = self.runtime.repository().unwrap();
        let stats = repository.get(model, None).unwrap().stats.snapshot();
        (stats.inference_count, stats.execution_count)
    }
}

/// Yields to the runtime until `condition` holds; fails the test after 20 s (a generous bound:
/// the conditions waited for follow from work the test has already started, with no timer).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::task::yield_now().await;
    }
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

/// A V2 REST request with a JSON header and raw bytes after it (the binary extension);
/// `length` overrides the `Inference-Header-Content-Length` the header's size gives.
pub fn binary_request(
    path: &str,
    header: &Value,
    raw: &[u8],
    length: Option<usize>,
) -> Request<Body> {
    let json = header.to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(raw);
    Request::post(path)
        .header("content-type", "application/octet-stream")
        .header(
            "inference-header-content-length",
            length.unwrap_or(json.len()).to_string(),
        )
        .body(Body::from(body))
        .unwrap()
}

/// Float32 values from little-endian bytes.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The bundled MLP's logits from tract in this process, for images of 784 values: what every
/// answer must match.
pub fn engine_logits(images: &[Vec<f32>]) -> Vec<f32> {
    let file = aicp_testkit::bundled_model("mnist");
    let info = aicp_engine::onnx::inspect(&file).unwrap();
    let mut model = TractEngine
        .load(&file, &info.signature, &Default::default())
        .unwrap();
    let input = Tensor::new(vec![images.len(), 1, 28, 28], images.concat()).unwrap();
    let logits = model.run(vec![input.into()]).unwrap().remove(0);
    logits.as_f32().unwrap().to_vec()
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let worst = aicp_core::max_difference(got, want);
    assert!(worst < 1e-4, "max difference {worst}");
}

/// A fake engine whose runs the test holds: once [`Gate::close`]d, every run is counted and
/// then waits until the test opens the gate again ([`Gate::open`]), so a test can fill a queue
/// behind a busy instance without a slow model or a timer. Its one output echoes its first
/// input. Warm-up runs pass while the gate is open, as it is at first.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    /// Whether runs wait.
    closed: Mutex<bool>,
    changed: Condvar,
    /// Runs started, and samples in them.
    runs: AtomicUsize,
    samples: AtomicUsize,
}

impl Gate {
    /// An engine whose every instance runs behind this gate.
    pub fn engine(&self) -> Box<dyn Engine> {
        Box::new(self.clone())
    }

    /// From now on, each run waits until the gate opens.
    pub fn close(&self) {
        *self.inner.closed.lock().unwrap() = true;
    }

    /// Lets every run through from now on.
    pub fn open(&self) {
        *self.inner.closed.lock().unwrap() = false;
        self.inner.changed.notify_all();
    }

    /// Runs started so far (warm-up included), and the samples in them.
    pub fn started(&self) -> (usize, usize) {
        (
            self.inner.runs.load(Ordering::SeqCst),
            self.inner.samples.load(Ordering::SeqCst),
        )
    }

    fn pass(&self, samples: usize) {
        self.inner.runs.fetch_add(1, Ordering::SeqCst);
        self.inner.samples.fetch_add(samples, Ordering::SeqCst);
        let closed = self.inner.closed.lock().unwrap();
        drop(
            self.inner
                .changed
                .wait_while(closed, |closed| *closed)
                .unwrap(),
        );
    }
}

impl Engine for Gate {
    fn kind(&self) -> EngineKind {
        aicp_engine::tract::KIND
    }

    fn load(
        &self,
        _: &Path,
        _: &ModelSignature,
        _: &LoadOptions,
    ) -> aicp_core::Result<Box<dyn Runnable>> {
        Ok(Box::new(self.clone()))
    }
}

impl Runnable for Gate {
    fn run(&mut self, inputs: Vec<aicp_core::Input>) -> aicp_core::Result<Vec<Tensor>> {
        let first = inputs.into_iter().next().unwrap().into_tensor();
        self.pass(first.shape[0]);
        Ok(vec![first])
    }
}

/// Opens the gate when a test ends however it ends, so no engine thread waits forever.
pub struct OpenOnDrop(pub Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// One question to the server's reflection service on `channel`, and its answer.
pub async fn reflect(
    channel: &Channel,
    question: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    };
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    answers
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .expect("an answer")
}
