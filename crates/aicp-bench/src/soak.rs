//! `aicp soak`: a long run against a running server, every protocol at once (the ML API with
//! numbers and with pictures, V2 REST with JSON and binary tensors, gRPC unary and streamed),
//! bad requests mixed in, and a model rewritten every few seconds so that it reloads under
//! load. It reports every request kind's answers (right, refused as expected, or anything else)
//! and the server's resident memory over time. A good answer must also be the same answer:
//! each input's top class is fixed by its first answer and checked on every protocol after.
//! It exits with an error when any request got an answer it should not have.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use aicp_server::proto::{ModelInferRequest, model_infer_request};
use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::http::HttpPool;
use crate::{f32_le_bytes, random_values, v2_binary_body};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,

    /// The server's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    grpc: String,

    /// The model to call (it takes 784 values per sample).
    #[arg(long, default_value = "mnist")]
    model: String,

    /// The server's model directory and a model in it (`DIR/NAME`, a copy of --model) to
    /// rewrite every --reload-every seconds; half the traffic goes to it. None: no reloads.
    #[arg(long)]
    reload: Option<PathBuf>,

    /// Seconds between two rewrites of the --reload model.
    #[arg(long, default_value_t = 5.0)]
    reload_every: f64,

    /// Seconds to run.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,

    /// Seconds after the start before memory counts as warmed up.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,

    /// Requests in flight at any time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,

    /// The server's process id, whose resident memory is sampled every second (Linux).
    #[arg(long)]
    server_pid: Option<u32>,

    /// The largest body the server takes (its --max-body-bytes): the too-large requests send
    /// one byte more.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What was sent, and how it should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Classify,
    ClassifyImage,
    V2Json,
    V2Binary,
    Grpc,
    GrpcStream,
    MalformedJson,
    WrongShape,
    UnknownModel,
    TooLarge,
    BadPicture,
    V2BadBinary,
    GrpcBadShape,
    GrpcUnknownModel,
    NoSuchRoute,
}

impl Kind {
    /// Each kind with its share of the traffic: good requests mostly.
    const MIX: [(Kind, u32); 15] = [
        (Kind::Classify, 20),
        (Kind::ClassifyImage, 6),
        (Kind::V2Json, 12),
        (Kind::V2Binary, 16),
        (Kind::Grpc, 16),
        (Kind::GrpcStream, 6),
        (Kind::MalformedJson, 3),
        (Kind::WrongShape, 3),
        (Kind::UnknownModel, 3),
        (Kind::TooLarge, 1),
        (Kind::BadPicture, 3),
        (Kind::V2BadBinary, 3),
        (Kind::GrpcBadShape, 3),
        (Kind::GrpcUnknownModel, 3),
        (Kind::NoSuchRoute, 2),
    ];

    fn pick(rng: &mut StdRng) -> Kind {
        let total: u32 = Self::MIX.iter().map(|(_, w)| w).sum();
        let mut at = rng.random_range(0..total);
        for (kind, weight) in Self::MIX {
            if at < weight {
                return kind;
            }
            at -= weight;
        }
        Kind::Classify
    }

    /// The answer a bad request must get: an HTTP status, or a gRPC code's name.
    fn refusal(self) -> Option<&'static str> {
        Some(match self {
            Kind::MalformedJson | Kind::BadPicture | Kind::V2BadBinary => "400",
            Kind::WrongShape => "422",
            Kind::UnknownModel | Kind::NoSuchRoute => "404",
            Kind::TooLarge => "413",
            Kind::GrpcBadShape => "InvalidArgument",
            Kind::GrpcUnknownModel => "NotFound",
            _ => return None,
        })
    }
}

/// How one request went.
enum Outcome {
    /// A good request answered with these top classes (one per input sent).
    Answered(Vec<(Input, usize)>),
    /// A bad request refused as it should be.
    Refused(String),
    /// Anything else.
    Unexpected(String),
}

/// Which prepared input a request carried; answers to the same input must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Input {
    Values(usize),
    Picture,
}

/// One kind's tally.
#[derive(Debug, Default, Serialize)]
struct Tally {
    sent: u64,
    answered: u64,
    /// Refusals by status (or gRPC code), for the bad requests.
    refused: BTreeMap<String, u64>,
    unexpected: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_unexpected: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    seconds: f64,
    requests: u64,
    unexpected: u64,
    kinds: BTreeMap<Kind, Tally>,
    /// Rewrites of the reload model, and loads the server counted meanwhile.
    reloads_written: u64,
    model_loads: Option<u64>,
    /// (seconds since the start, resident MiB), one a second.
    rss_mib: Vec<(f64, f64)>,
    rss_after_warmup_mib: Option<f64>,
    rss_max_after_warmup_mib: Option<f64>,
    rss_final_mib: Option<f64>,
}

/// The prepared requests, and the clients that send them.
struct Soak {
    http: HttpPool,
    grpc: Channel,
    models: Vec<String>,
    inputs: Vec<Vec<f64>>,
    picture: Bytes,
    max_body_bytes: usize,
    /// Each input's top class, fixed by its first answer.
    expected: Mutex<HashMap<Input, usize>>,
    tallies: Mutex<BTreeMap<Kind, Tally>>,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    if !(args.duration > 0.0 && args.duration <= 7.0 * 86400.0) {
        anyhow::bail!("--duration must be more than 0 seconds and at most a week");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(soak(args))
}

async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let grpc = Channel::from_shared(args.grpc.clone())
        .with_context(|| format!("{} is not a gRPC address", args.grpc))?
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.grpc))?;
    let mut models = vec![args.model.clone()];
    if let Some(reload) = &args.reload {
        let name = reload
            .file_name()
            .and_then(|n| n.to_str())
            .context("--reload must be DIR/NAME")?;
        models.push(name.to_string());
    }
    let mut rng = StdRng::seed_from_u64(11);
    let soak = Arc::new(Soak {
        http: HttpPool::new(&args.url)?,
        grpc,
        models,
        inputs: (0..8).map(|_| random_values(&mut rng, 784)).collect(),
        picture: stroke_bmp(),
        max_body_bytes: args.max_body_bytes,
        expected: Mutex::new(HashMap::new()),
        tallies: Mutex::new(BTreeMap::new()),
    });
    let loads_before = soak.model_loads().await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);

    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let soak = soak.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(u64::from(worker) + 100);
                while Instant::now() < deadline {
                    let kind = Kind::pick(&mut rng);
                    let model = soak.models[rng.random_range(0..soak.models.len())].clone();
                    let input = rng.random_range(0..soak.inputs.len());
                    let outcome = tokio::time::timeout(
                        Duration::from_secs(10),
                        soak.send(kind, &model, input),
                    )
                    .await
                    .unwrap_or_else(|_| Outcome::Unexpected("no answer within 10 s".into()));
                    soak.record(kind, outcome);
                }
            })
        })
        .collect();
    let reloads = tokio::spawn(rewrite_every(
        args.reload.clone(),
        Duration::from_secs_f64(args.reload_every),
        deadline,
    ));
    let sampler = tokio::spawn(sample_rss(args.server_pid, start, deadline));
    for worker in workers {
        worker.await?;
    }
    let reloads_written = reloads.await??;
    let rss_mib = sampler.await?;
    let loads_after = soak.model_loads().await;

    let tallies = std::mem::take(&mut *soak.tallies.lock().unwrap_or_else(|e| e.into_inner()));
    let after_warmup: Vec<f64> = rss_mib
        .iter()
        .filter(|(t, _)| *t >= args.warmup)
        .map(|(_, mib)| *mib)
        .collect();
    let report = Report {
        seconds: start.elapsed().as_secs_f64(),
        requests: tallies.values().map(|t| t.sent).sum(),
        unexpected: tallies.values().map(|t| t.unexpected).sum(),
        kinds: tallies,
        reloads_written,
        model_loads: loads_before
            .zip(loads_after)
            .map(|(b, a)| a.saturating_sub(b)),
        rss_after_warmup_mib: after_warmup.first().copied(),
        rss_max_after_warmup_mib: after_warmup.iter().copied().reduce(f64::max),
        rss_final_mib: rss_mib.last().map(|(_, mib)| *mib),
        rss_mib,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.unexpected > 0 {
        anyhow::bail!(
            "{} requests got an answer they should not have",
            report.unexpected
        );
    }
    Ok(())
}

impl Soak {
    fn record(&self, kind: Kind, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Answered(answers) => self.check_answers(answers),
            other => other,
        };
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies.entry(kind).or_default();
        tally.sent += 1;
        match outcome {
            Outcome::Answered(_) => tally.answered += 1,
            Outcome::Refused(status) => *tally.refused.entry(status).or_default() += 1,
            Outcome::Unexpected(what) => {
                tally.unexpected += 1;
                tally.first_unexpected.get_or_insert(what);
            }
        }
    }

    /// The answers, or what makes them wrong: a top class that differs from the first answer
    /// given for the same input.
    fn check_answers(&self, answers: Vec<(Input, usize)>) -> Outcome {
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        for (input, class) in &answers {
            let first = *expected.entry(*input).or_insert(*class);
            if first != *class {
                return Outcome::Unexpected(format!(
                    "input {input:?} answered class {class}, first answered {first}"
                ));
            }
        }
        Outcome::Answered(answers)
    }

    async fn send(&self, kind: Kind, model: &str, input: usize) -> Outcome {
        let values = &self.inputs[input];
        let json_headers = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        match kind {
            Kind::Classify | Kind::WrongShape | Kind::UnknownModel => {
                let (model, data) = match kind {
                    Kind::WrongShape => (model, &values[..783]),
                    Kind::UnknownModel => ("no-such-model", &values[..]),
                    _ => (model, &values[..]),
                };
                let body = json!({"model_name": model, "image_data": data, "top_k": 1});
                self.post(
                    kind,
                    "/api/v1/ml/classify",
                    &json_headers,
                    body.to_string(),
                    |v| top_class(&v["predictions"][0]["class"], Input::Values(input)),
                )
                .await
            }
            Kind::MalformedJson => {
                let body = r#"{"image_data": [0.1, 0.2,"#;
                self.post(kind, "/api/v1/ml/classify", &json_headers, body, |_| None)
                    .await
            }
            Kind::TooLarge => match self.too_large().await {
                Ok(status) => refusal(kind, &status, b""),
                Err(e) => Outcome::Unexpected(e),
            },
            Kind::ClassifyImage | Kind::BadPicture => {
                let picture = match kind {
                    Kind::BadPicture => Bytes::from_static(b"\x89PNG\r\n\x1a\n broken"),
                    _ => self.picture.clone(),
                };
                let headers = [(CONTENT_TYPE, HeaderValue::from_static("image/bmp"))];
                let path = format!("/api/v1/ml/classify/image?model_name={model}&top_k=1");
                self.post(kind, &path, &headers, picture, |v| {
                    top_class(&v["predictions"][0]["class"], Input::Picture)
                })
                .await
            }
            Kind::V2Json => {
                let body = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": values}]});
                let path = format!("/v2/models/{model}/infer");
                self.post(kind, &path, &json_headers, body.to_string(), |v| {
                    let logits: Vec<f32> =
                        serde_json::from_value(v["outputs"][0]["data"].clone()).ok()?;
                    Some(vec![(Input::Values(input), argmax(&logits))])
                })
                .await
            }
            Kind::V2Binary | Kind::V2BadBinary => {
                let (body, mut headers) = v2_binary_body("input", &[1, 784], values);
                if kind == Kind::V2BadBinary {
                    headers[0].1 = HeaderValue::from(body.len() + 1);
                }
                let path = format!("/v2/models/{model}/infer");
                let status_and_body = self.http.send(Method::POST, &path, &headers, body).await;
                match status_and_body {
                    Err(e) => Outcome::Unexpected(e),
                    Ok((status, answer)) if status.is_success() && kind == Kind::V2Binary => {
                        match binary_logits(&answer) {
                            Some(logits) => {
                                Outcome::Answered(vec![(Input::Values(input), argmax(&logits))])
                            }
                            None => Outcome::Unexpected("an unreadable binary answer".into()),
                        }
                    }
                    Ok((status, answer)) => refusal(kind, status.as_str(), &answer),
                }
            }
            Kind::Grpc | Kind::GrpcBadShape | Kind::GrpcUnknownModel => {
                let (model, data) = match kind {
                    Kind::GrpcBadShape => (model, &values[..783]),
                    Kind::GrpcUnknownModel => ("no-such-model", &values[..]),
                    _ => (model, &values[..]),
                };
                let request = infer_request(model, data);
                let mut client = GrpcInferenceServiceClient::new(self.grpc.clone());
                match client.model_infer(request).await {
                    Ok(response) => match raw_logits(&response.into_inner().raw_output_contents) {
                        Some(logits) if kind == Kind::Grpc => {
                            Outcome::Answered(vec![(Input::Values(input), argmax(&logits))])
                        }
                        _ => Outcome::Unexpected(format!("{kind:?} was answered")),
                    },
                    Err(status) => refusal(
                        kind,
                        &format!("{:?}", status.code()),
                        status.message().as_bytes(),
                    ),
                }
            }
            Kind::GrpcStream => self.stream(model, input).await,
            Kind::NoSuchRoute => match self
                .http
                .send(Method::GET, "/api/v1/ml/nothing", &[], Bytes::new())
                .await
            {
                Ok((status, answer)) => refusal(kind, status.as_str(), &answer),
                Err(e) => Outcome::Unexpected(e),
            },
        }
    }

    /// A POST over HTTP: a good request's answer read by `read`, a bad one's status checked.
    async fn post(
        &self,
        kind: Kind,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: impl Into<Bytes>,
        read: impl FnOnce(Value) -> Option<Vec<(Input, usize)>>,
    ) -> Outcome {
        match self
            .http
            .send(Method::POST, path, headers, body.into())
            .await
        {
            Err(e) => Outcome::Unexpected(e),
            Ok((status, answer)) if status.is_success() && kind.refusal().is_none() => {
                match serde_json::from_slice(&answer).ok().and_then(read) {
                    Some(answers) => Outcome::Answered(answers),
                    None => Outcome::Unexpected(format!(
                        "an answer without a top class: {}",
                        String::from_utf8_lossy(&answer)
                    )),
                }
            }
            Ok((status, answer)) => refusal(kind, status.as_str(), &answer),
        }
    }

    /// A classify request that announces one byte more than the server takes and sends the
    /// first kilobyte, on a connection of its own: the server must refuse it at once. Its
    /// status. (A client that wrote the whole body first would see the connection closed under
    /// it instead of the answer.)
    async fn too_large(&self) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let authority = self.http.authority();
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let head = format!(
            "POST /api/v1/ml/classify HTTP/1.1\r\nHost: {authority}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.max_body_bytes + 1
        );
        let write = [head.as_bytes(), &[b' '; 1024]].concat();
        stream.write_all(&write).await.map_err(|e| e.to_string())?;
        let mut answer = vec![0u8; 12];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let answer = String::from_utf8_lossy(&answer);
        match answer.strip_prefix("HTTP/1.1 ") {
            Some(status) => Ok(status.to_string()),
            None => Err(format!("not an HTTP answer: {answer:?}")),
        }
    }

    /// Four inputs over one ModelStreamInfer stream, each answered in order.
    async fn stream(&self, model: &str, first: usize) -> Outcome {
        let picks: Vec<usize> = (0..4).map(|i| (first + i) % self.inputs.len()).collect();
        let requests: Vec<ModelInferRequest> = picks
            .iter()
            .map(|&i| infer_request(model, &self.inputs[i]))
            .collect();
        let mut client = GrpcInferenceServiceClient::new(self.grpc.clone());
        let mut responses = match client
            .model_stream_infer(tokio_stream::iter(requests))
            .await
        {
            Ok(responses) => responses.into_inner(),
            Err(status) => {
                return Outcome::Unexpected(format!("{:?}: {}", status.code(), status.message()));
            }
        };
        let mut answers = Vec::new();
        for &input in &picks {
            match responses.message().await {
                Ok(Some(reply)) => match reply.infer_response {
                    Some(response) => match raw_logits(&response.raw_output_contents) {
                        Some(logits) => answers.push((Input::Values(input), argmax(&logits))),
                        None => {
                            return Outcome::Unexpected("a stream answer without logits".into());
                        }
                    },
                    None => {
                        return Outcome::Unexpected(format!(
                            "a stream answer failed: {}",
                            reply.error_message
                        ));
                    }
                },
                Ok(None) => return Outcome::Unexpected("the stream ended early".into()),
                Err(status) => {
                    return Outcome::Unexpected(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
        Outcome::Answered(answers)
    }

    /// Model loads the server has counted (its `aicp_model_loads_total{result="success"}`).
    async fn model_loads(&self) -> Option<u64> {
        let metrics = self.http.get("/metrics").await.ok()?;
        String::from_utf8_lossy(&metrics)
            .lines()
            .filter(|l| {
                l.starts_with("aicp_model_loads_total") && l.contains(r#"result="success""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|n| n as u64)
            .reduce(|a, b| a + b)
    }
}

/// How a request that was not answered with a success went: refused as its kind should be, or
/// not.
fn refusal(kind: Kind, status: &str, answer: &[u8]) -> Outcome {
    match kind.refusal() {
        Some(expected) if expected == status => Outcome::Refused(status.to_string()),
        _ => Outcome::Unexpected(format!("{status}: {}", String::from_utf8_lossy(answer))),
    }
}

fn top_class(class: &Value, input: Input) -> Option<Vec<(Input, usize)>> {
    Some(vec![(input, usize::try_from(class.as_u64()?).ok()?)])
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn infer_request(model: &str, values: &[f64]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_string(),
        inputs: vec![model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, values.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![f32_le_bytes(values)],
        ..Default::default()
    }
}

fn raw_logits(raw: &[Vec<u8>]) -> Option<Vec<f32>> {
    let bytes = raw.first()?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// The logits of a V2 answer with binary outputs: the JSON's length is in its header, so this
/// reads the JSON for `binary_data_size` and takes that many bytes after it.
fn binary_logits(answer: &[u8]) -> Option<Vec<f32>> {
    let mut stream = serde_json::Deserializer::from_slice(answer).into_iter::<Value>();
    let header = stream.next()?.ok()?;
    let size =
        usize::try_from(header["outputs"][0]["parameters"]["binary_data_size"].as_u64()?).ok()?;
    let raw = answer.get(stream.byte_offset()..stream.byte_offset() + size)?;
    raw_logits(&[raw.to_vec()])
}

/// A 28x28 BMP (24-bit) of a vertical stroke, dark on light, as a phone picture of a "1" is.
fn stroke_bmp() -> Bytes {
    const SIDE: u32 = 28;
    let row = (SIDE * 3).div_ceil(4) * 4;
    let size = 54 + row * SIDE;
    let mut bmp = Vec::with_capacity(size as usize);
    bmp.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40, SIDE, SIDE] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * SIDE, 2835, 2835, 0, 0] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    for _y in 0..SIDE {
        let mut line: Vec<u8> = (0..SIDE)
            .flat_map(|x| {
                let ink = (12..16).contains(&x);
                [if ink { 20 } else { 240 }; 3]
            })
            .collect();
        line.resize(row as usize, 0);
        bmp.extend_from_slice(&line);
    }
    Bytes::from(bmp)
}

/// Rewrites `DIR/NAME`'s model file every `every` until `deadline`, the way an operator ships
/// a new version of the file: written beside it, then moved over it. Returns the rewrites done.
async fn rewrite_every(
    model: Option<PathBuf>,
    every: Duration,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let Some(model) = model else { return Ok(0) };
    let file = model.join("1/model.onnx");
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let staged = model.join("1/model.onnx.next");
    let mut written = 0;
    loop {
        tokio::time::sleep(every).await;
        if Instant::now() + Duration::from_secs(1) >= deadline {
            return Ok(written);
        }
        std::fs::write(&staged, &bytes)?;
        std::fs::rename(&staged, &file)?;
        written += 1;
    }
}

/// The server's resident memory once a second until `deadline`: (seconds since `start`, MiB).
async fn sample_rss(pid: Option<u32>, start: Instant, deadline: Instant) -> Vec<(f64, f64)> {
    let Some(pid) = pid else { return Vec::new() };
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < deadline {
        ticks.tick().await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
        if let Some(kib) = kib {
            samples.push((start.elapsed().as_secs_f64().round(), kib / 1024.0));
        }
    }
    samples
}

fn print_report(report: &Report) {
    println!(
        "{:<20} {:>9} {:>9} {:>24} {:>11}",
        "kind", "sent", "answered", "refused (as expected)", "unexpected"
    );
    for (kind, tally) in &report.kinds {
        let refused: Vec<String> = tally
            .refused
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "{:<20} {:>9} {:>9} {:>24} {:>11}",
            name,
            tally.sent,
            tally.answered,
            refused.join(", "),
            tally.unexpected
        );
        if let Some(what) = &tally.first_unexpected {
            println!("    first unexpected: {what}");
        }
    }
    println!(
        "{} requests in {:.0} s ({:.0}/s), {} unexpected; model rewritten {} times, {} loads counted by the server",
        report.requests,
        report.seconds,
        report.requests as f64 / report.seconds,
        report.unexpected,
        report.reloads_written,
        report.model_loads.map_or("no".into(), |n| n.to_string()),
    );
    if let (Some(warm), Some(max), Some(last)) = (
        report.rss_after_warmup_mib,
        report.rss_max_after_warmup_mib,
        report.rss_final_mib,
    ) {
        println!(
            "server RSS: {warm:.1} MiB after warm-up, at most {max:.1} MiB after, {last:.1} MiB at the end"
        );
    }
}
