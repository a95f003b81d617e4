//! aicp's load tools, beside the product: the `aicp` binary has them as commands when built
//! with its `load-tools` feature (the default), and a serving-only build leaves them out.
//!
//! `aicp bench`: a load generator for a running server, like Triton's perf_analyzer. It sends
//! one model's requests over one protocol (the ML API's classify or embed route, V2 REST with JSON or
//! binary tensors, V2 gRPC), either keeping a number of requests outstanding (a concurrency
//! sweep) or at a fixed rate, and reports throughput, latency percentiles, errors and the
//! server's average batch size (from its V2 statistics), as a table and as JSON.
//!
//! Every level is bounded: a duration, an optional request count, and a timeout per request.

mod http;
pub mod soak;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use aicp_server::proto::{
    ModelInferRequest, ModelMetadataRequest, ModelStatisticsRequest, model_infer_request,
};
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http::HttpPool;
use hyper::Method;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// `POST /api/v1/ml/classify` (784 values per image).
    Classify,
    /// `POST /v2/models/{model}/infer` with the tensor in JSON.
    V2Json,
    /// `POST /v2/models/{model}/infer` with binary tensors in and out.
    V2Binary,
    /// `inference.GRPCInferenceService/ModelInfer` with raw tensor contents.
    Grpc,
    /// `POST /api/v1/ml/classify/image` with a 140x140 PNG of a stroke, dark on white (the
    /// drawing page's kind of picture).
    Picture,
    /// `POST /api/v1/ml/embed` with `--batch` sentences of 8 to 24 words (text-embeddings-
    /// inference's shape; the server's only embedding model answers).
    Embed,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server: http://HOST:PORT. Default: http://127.0.0.1:8000, or :8001 for grpc.
    #[arg(long)]
    url: Option<String>,

    #[arg(long, value_enum, default_value_t = Protocol::Classify)]
    protocol: Protocol,

    /// The model to call.
    #[arg(long, default_value = "mnist")]
    model: String,

    /// Levels of concurrency to sweep, comma-separated: each keeps that many requests
    /// outstanding, each sent as soon as the previous one answers.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Vec<u32>,

    /// Fixed request rates to sweep instead, in requests per second, comma-separated. Requests
    /// are sent on schedule whether or not earlier ones answered (at most 4096 outstanding);
    /// latency counts from the scheduled time.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,

    /// Seconds measured per level.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Stop a level after this many requests, even before --duration.
    #[arg(long)]
    requests: Option<u64>,

    /// Seconds of unmeasured load before each level.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Samples per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,

    /// v2-binary: send the input as 8-bit pixels (UINT8, a quarter of the bytes), which the
    /// server scales into an image model's input range (or, for a quantised model, feeds as
    /// its quantised input).
    #[arg(long)]
    pixels: bool,

    /// A request that takes longer than this many milliseconds counts as an error.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,

    /// Also write the results as JSON to this file ("-": standard output, instead of the table).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One level's figures.
#[derive(Debug, Serialize)]
pub struct LevelResult {
    pub protocol: Protocol,
    pub model: String,
    pub batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub samples_per_s: f64,
    pub latency_us: Latency,
    /// Samples per engine run on the server during the level; absent when the server has no
    /// V2 statistics.
    pub server_avg_batch: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Concurrency(u32),
    Rate(f64),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be more than 0 and at most 3600 seconds");
    }
    if !(0.0..=600.0).contains(&args.warmup) {
        bail!("--warmup must be between 0 and 600 seconds");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if let Some(rate) = args.rate.iter().find(|r| !(**r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of requests per second, got {rate}");
    }
    let levels: Vec<Level> = if args.rate.is_empty() {
        args.concurrency
            .iter()
            .map(|&c| Level::Concurrency(c))
            .collect()
    } else {
        args.rate.iter().map(|&r| Level::Rate(r)).collect()
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let client = Arc::new(Client::connect(&args).await?);
            let mut results = Vec::new();
            let to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
            if !to_stdout {
                println!(
                    "aicp bench: {:?} model {} at {}, batch {}, {} s per level",
                    args.protocol, args.model, client.url, args.batch, args.duration
                );
                print_header();
            }
            for level in levels {
                let result = measure(&client, &args, level).await?;
                if !to_stdout {
                    print_row(&result);
                }
                results.push(result);
            }
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&results)?;
                if to_stdout {
                    println!("{text}");
                } else {
                    std::fs::write(path, text + "\n")
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
            Ok(())
        })
}

/// Warms up, then runs one level and reads the server's counters around it.
async fn measure(
    client: &Arc<Client>,
    args: &BenchArgs,
    level: Level,
) -> anyhow::Result<LevelResult> {
    if args.warmup > 0.0 {
        drive(client, level, Duration::from_secs_f64(args.warmup), None).await;
    }
    let before = client.server_counts().await;
    let run = drive(
        client,
        level,
        Duration::from_secs_f64(args.duration),
        args.requests,
    )
    .await;
    let after = client.server_counts().await;
    let server_avg_batch = match (before, after) {
        (Some((inf0, exe0)), Some((inf1, exe1))) if exe1 > exe0 => {
            Some((inf1 - inf0) as f64 / (exe1 - exe0) as f64)
        }
        _ => None,
    };
    let ok = run.latencies.len();
    let seconds = run.elapsed.as_secs_f64();
    Ok(LevelResult {
        protocol: args.protocol,
        model: args.model.clone(),
        batch: args.batch,
        concurrency: match level {
            Level::Concurrency(c) => Some(c),
            Level::Rate(_) => None,
        },
        rate: match level {
            Level::Rate(r) => Some(r),
            Level::Concurrency(_) => None,
        },
        requests: ok + run.errors,
        errors: run.errors,
        seconds,
        throughput: ok as f64 / seconds,
        samples_per_s: (ok as f64 * args.batch as f64) / seconds,
        latency_us: Latency {
            p50: run.latencies.value_at_quantile(0.50),
            p90: run.latencies.value_at_quantile(0.90),
            p99: run.latencies.value_at_quantile(0.99),
            max: run.latencies.max(),
            mean: run.latencies.mean(),
        },
        server_avg_batch,
        first_error: run.first_error,
    })
}

/// What one level's requests did.
struct Run {
    /// Microseconds, successful requests only.
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Run {
    fn new() -> Self {
        Self {
            // 1 us to 1 hour at 3 significant digits: fixed-size, never reallocated.
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latencies.saturating_record(us.max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Run) {
        let _ = self.latencies.add(&other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Sends requests at `level` for `duration` or until `cap` requests, whichever comes first.
async fn drive(client: &Arc<Client>, level: Level, duration: Duration, cap: Option<u64>) -> Run {
    let started = Instant::now();
    let end = started + duration;
    let issued = Arc::new(AtomicU64::new(0));
    let cap = cap.unwrap_or(u64::MAX);
    let mut run = Run::new();
    match level {
        Level::Concurrency(n) => {
            let workers: Vec<_> = (0..n as usize)
                .map(|worker| {
                    let (client, issued) = (client.clone(), issued.clone());
                    tokio::spawn(async move {
                        let mut run = Run::new();
                        let mut next = worker;
                        while Instant::now() < end && issued.fetch_add(1, Ordering::Relaxed) < cap {
                            let sent = Instant::now();
                            let outcome = client.send(next).await;
                            run.record(sent.elapsed(), outcome);
                            next += 1;
                        }
                        run
                    })
                })
                .collect();
            for worker in workers {
                if let Ok(done) = worker.await {
                    run.merge(done);
                }
            }
        }
        Level::Rate(rate) => {
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
            let outstanding = Arc::new(tokio::sync::Semaphore::new(4096));
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut next = 0;
            loop {
                let scheduled = ticks.tick().await.into_std();
                if scheduled >= end || issued.fetch_add(1, Ordering::Relaxed) >= cap {
                    break;
                }
                let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                    run.record(
                        Duration::ZERO,
                        Err("4096 requests outstanding: the server falls behind this rate".into()),
                    );
                    continue;
                };
                let (client, sender) = (client.clone(), sender.clone());
                tokio::spawn(async move {
                    let outcome = client.send(next).await;
                    let _ = sender.send((scheduled.elapsed(), outcome));
                    drop(permit);
                });
                next += 1;
            }
            drop(sender);
            while let Some((latency, outcome)) = receiver.recv().await {
                run.record(latency, outcome);
            }
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// How many distinct inputs the requests cycle through.
const INPUTS: usize = 16;

/// A connection to the server and the requests it sends, prepared in advance.
struct Client {
    url: String,
    model: String,
    timeout: Duration,
    transport: Transport,
}

enum Transport {
    Http {
        pool: HttpPool,
        infer_path: String,
        /// Each body with its headers.
        bodies: Vec<(Bytes, Vec<(HeaderName, HeaderValue)>)>,
    },
    Grpc {
        channel: Channel,
        requests: Vec<ModelInferRequest>,
    },
}

/// The same random inputs every run: the prepared requests differ, the runs do not.
fn seeded() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// A JSON body with its media type.
fn json_body(body: &Value) -> (Bytes, Vec<(HeaderName, HeaderValue)>) {
    let headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (Bytes::from(body.to_string()), headers)
}

impl Transport {
    /// `ModelInfer` with raw contents, shaped as the model's metadata says.
    async fn grpc(url: &str, timeout: Duration, args: &BenchArgs) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_string())
            .with_context(|| format!("{url} is not a gRPC address"))?
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let metadata = GrpcInferenceServiceClient::new(channel.clone())
            .model_metadata(ModelMetadataRequest {
                name: args.model.clone(),
                version: String::new(),
            })
            .await
            .with_context(|| format!("model {} metadata", args.model))?
            .into_inner();
        let input = metadata
            .inputs
            .first()
            .context("the model declares no input")?;
        let shape = request_shape(&input.shape, args.batch)?;
        let mut rng = seeded();
        let requests = (0..INPUTS)
            .map(|_| {
                let values = random_values(&mut rng, shape.iter().product::<i64>() as usize);
                ModelInferRequest {
                    model_name: args.model.clone(),
                    inputs: vec![model_infer_request::InferInputTensor {
                        name: input.name.clone(),
                        datatype: "FP32".into(),
                        shape: shape.clone(),
                        ..Default::default()
                    }],
                    raw_input_contents: vec![f32_le_bytes(&values)],
                    ..Default::default()
                }
            })
            .collect();
        Ok(Self::Grpc { channel, requests })
    }

    /// The ML API's classify: `--batch` images of 784 values, in JSON.
    fn classify(url: &str, args: &BenchArgs) -> anyhow::Result<Self> {
        let mut rng = seeded();
        let bodies = (0..INPUTS)
            .map(|_| {
                let values = random_values(&mut rng, 784 * args.batch);
                let image_data = if args.batch == 1 {
                    json!(values)
                } else {
                    json!(values.chunks(784).collect::<Vec<_>>())
                };
                json_body(&json!({"model_name": args.model, "image_data": image_data, "top_k": 1}))
            })
            .collect();
        Ok(Self::Http {
            pool: HttpPool::new(url)?,
            infer_path: "/api/v1/ml/classify".to_string(),
            bodies,
        })
    }

    /// Pictures to classify: a ring of random size and place, dark on white, as PNG.
    fn picture(url: &str, args: &BenchArgs) -> anyhow::Result<Self> {
        let mut rng = seeded();
        let bodies = (0..INPUTS)
            .map(|_| {
                let (cx, cy) = (
                    rng.random_range(50..90) as f32,
                    rng.random_range(50..90) as f32,
                );
                let radius = rng.random_range(20..40) as f32;
                let picture = image::GrayImage::from_fn(140, 140, |x, y| {
                    let distance = (x as f32 - cx).hypot(y as f32 - cy);
                    image::Luma([if (distance - radius).abs() < 5.0 {
                        20
                    } else {
                        250
                    }])
                });
                let mut png = std::io::Cursor::new(Vec::new());
                picture.write_to(&mut png, image::ImageFormat::Png)?;
                let headers = vec![(CONTENT_TYPE, HeaderValue::from_static("image/png"))];
                Ok((Bytes::from(png.into_inner()), headers))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Http {
            pool: HttpPool::new(url)?,
            infer_path: format!(
                "/api/v1/ml/classify/image?model_name={}&top_k=1",
                args.model
            ),
            bodies,
        })
    }

    /// Texts to embed: sentences of common English words, different in every body.
    fn embed(url: &str, args: &BenchArgs) -> anyhow::Result<Self> {
        const WORDS: [&str; 24] = [
            "the", "model", "serves", "a", "request", "in", "time", "and", "every", "answer", "is",
            "measured", "on", "one", "machine", "with", "two", "cores", "for", "people", "who",
            "run", "it", "today",
        ];
        let mut rng = seeded();
        let bodies = (0..INPUTS)
            .map(|_| {
                let texts: Vec<String> = (0..args.batch)
                    .map(|_| {
                        let words = rng.random_range(8..=24);
                        let picked: Vec<&str> = (0..words)
                            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                            .collect();
                        picked.join(" ")
                    })
                    .collect();
                json_body(&json!({ "inputs": texts }))
            })
            .collect();
        Ok(Self::Http {
            pool: HttpPool::new(url)?,
            infer_path: "/api/v1/ml/embed".to_string(),
            bodies,
        })
    }

    /// The Open Inference Protocol's infer, shaped as the model's metadata says: the tensor in
    /// JSON, in binary, or as binary UINT8 pixels (`--pixels`).
    async fn v2(url: &str, args: &BenchArgs) -> anyhow::Result<Self> {
        let pool = HttpPool::new(url)?;
        let metadata = pool
            .get(&format!("/v2/models/{}", args.model))
            .await
            .map_err(|e| anyhow::anyhow!("model {} metadata: {e}", args.model))?;
        let metadata: Value = serde_json::from_slice(&metadata)?;
        let input = &metadata["inputs"][0];
        let name = input["name"]
            .as_str()
            .context("the model declares no input")?;
        let dims: Vec<i64> = serde_json::from_value(input["shape"].clone())?;
        let shape = request_shape(&dims, args.batch)?;
        let count = shape.iter().product::<i64>() as usize;
        let mut rng = seeded();
        let bodies = (0..INPUTS)
            .map(|_| {
                let values = random_values(&mut rng, count);
                match (args.protocol, args.pixels) {
                    (Protocol::V2Binary, true) => v2_pixels_body(name, &shape, &values),
                    (Protocol::V2Binary, false) => v2_binary_body(name, &shape, &values),
                    _ => json_body(&json!({"inputs": [{"name": name, "shape": shape,
                        "datatype": "FP32", "data": values}]})),
                }
            })
            .collect();
        Ok(Self::Http {
            pool,
            infer_path: format!("/v2/models/{}/infer", args.model),
            bodies,
        })
    }
}

impl Client {
    async fn connect(args: &BenchArgs) -> anyhow::Result<Self> {
        if args.pixels && args.protocol != Protocol::V2Binary {
            bail!("--pixels goes with --protocol v2-binary");
        }
        let default_port = if args.protocol == Protocol::Grpc {
            8001
        } else {
            8000
        };
        let url = args
            .url
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{default_port}"))
            .trim_end_matches('/')
            .to_string();
        let timeout = Duration::from_millis(args.request_timeout_ms);
        let transport = match args.protocol {
            Protocol::Grpc => Transport::grpc(&url, timeout, args).await?,
            Protocol::Classify => Transport::classify(&url, args)?,
            Protocol::V2Json | Protocol::V2Binary => Transport::v2(&url, args).await?,
            Protocol::Embed => Transport::embed(&url, args)?,
            Protocol::Picture => Transport::picture(&url, args)?,
        };
        let client = Self {
            url,
            model: args.model.clone(),
            timeout,
            transport,
        };
        // Fail now, with the server's words, rather than count every request as an error.
        client
            .send(0)
            .await
            .map_err(|e| anyhow::anyhow!("the first request failed: {e}"))?;
        Ok(client)
    }

    /// Sends request `i` (cycling through the prepared inputs) and reads the whole answer, in
    /// at most the request timeout.
    async fn send(&self, i: usize) -> Result<(), String> {
        tokio::time::timeout(self.timeout, self.send_once(i))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", self.timeout.as_millis())))
    }

    async fn send_once(&self, i: usize) -> Result<(), String> {
        match &self.transport {
            Transport::Http {
                pool,
                infer_path,
                bodies,
            } => {
                let (body, headers) = &bodies[i % bodies.len()];
                let (status, answer) = pool
                    .send(Method::POST, infer_path, headers, body.clone())
                    .await?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}: {}", String::from_utf8_lossy(&answer)))
                }
            }
            Transport::Grpc { channel, requests } => {
                let mut grpc = GrpcInferenceServiceClient::new(channel.clone())
                    .max_decoding_message_size(usize::MAX);
                let request = requests[i % requests.len()].clone();
                grpc.model_infer(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }

    /// The model's (samples inferred, engine runs) so far, summed over its versions; `None`
    /// when the server does not say.
    async fn server_counts(&self) -> Option<(u64, u64)> {
        tokio::time::timeout(self.timeout, self.read_counts())
            .await
            .ok()
            .flatten()
    }

    async fn read_counts(&self) -> Option<(u64, u64)> {
        let stats: Vec<(u64, u64)> = match &self.transport {
            Transport::Http { pool, .. } => {
                let body = pool
                    .get(&format!("/v2/models/{}/stats", self.model))
                    .await
                    .ok()?;
                let body: Value = serde_json::from_slice(&body).ok()?;
                body["model_stats"]
                    .as_array()?
                    .iter()
                    .map(|m| {
                        Some((
                            m["inference_count"].as_u64()?,
                            m["execution_count"].as_u64()?,
                        ))
                    })
                    .collect::<Option<_>>()?
            }
            Transport::Grpc { channel, .. } => GrpcInferenceServiceClient::new(channel.clone())
                .model_statistics(ModelStatisticsRequest {
                    name: self.model.clone(),
                    version: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .model_stats
                .iter()
                .map(|m| (m.inference_count, m.execution_count))
                .collect(),
        };
        Some(stats.iter().fold((0, 0), |(i, e), (a, b)| (i + a, e + b)))
    }
}

/// The model's declared input shape with the batch filled in.
fn request_shape(dims: &[i64], batch: usize) -> anyhow::Result<Vec<i64>> {
    let mut shape = dims.to_vec();
    match shape.first_mut() {
        Some(first) if *first == -1 => *first = batch as i64,
        _ if batch != 1 => {
            bail!("the model has no batch dimension (shape {dims:?}); use --batch 1")
        }
        _ => {}
    }
    if shape.iter().any(|&d| d < 0) {
        bail!("the model's input shape {dims:?} varies after the batch; aicp bench needs it fixed");
    }
    Ok(shape)
}

/// Pixel-like values: in [0, 1] with three decimals, as the MNIST JSON digits are. Kept as f64
/// so that JSON shows them as written ("0.123"), not as the f32 nearest ("0.12300000339746475").
fn random_values(rng: &mut StdRng, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| f64::from(rng.random_range(0..=1000u16)) / 1000.0)
        .collect()
}

fn f32_le_bytes(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect()
}

/// A V2 infer body with binary tensors in and out, and its headers.
fn v2_binary_body(
    name: &str,
    shape: &[i64],
    values: &[f64],
) -> (Bytes, Vec<(HeaderName, HeaderValue)>) {
    binary_body(name, shape, "FP32", f32_le_bytes(values))
}

/// As [`v2_binary_body`], with values in [0, 1] sent as 8-bit pixels.
fn v2_pixels_body(
    name: &str,
    shape: &[i64],
    values: &[f64],
) -> (Bytes, Vec<(HeaderName, HeaderValue)>) {
    let pixels = values
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    binary_body(name, shape, "UINT8", pixels)
}

fn binary_body(
    name: &str,
    shape: &[i64],
    datatype: &str,
    data: Vec<u8>,
) -> (Bytes, Vec<(HeaderName, HeaderValue)>) {
    let header = json!({
        "inputs": [{"name": name, "shape": shape, "datatype": datatype,
                    "parameters": {"binary_data_size": data.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let headers = vec![
        (
            HeaderName::from_static("inference-header-content-length"),
            HeaderValue::from(header.len()),
        ),
        (
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
    ];
    let mut body = header.into_bytes();
    body.extend(data);
    (Bytes::from(body), headers)
}

fn print_header() {
    println!(
        "{:>11} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "level", "requests", "errors", "req/s", "p50 us", "p90 us", "p99 us", "max us", "avg batch"
    );
}

fn print_row(r: &LevelResult) {
    let level = match (r.concurrency, r.rate) {
        (Some(c), _) => format!("c={c}"),
        (_, Some(rate)) => format!("{rate}/s"),
        _ => "-".into(),
    };
    let batch = r
        .server_avg_batch
        .map_or_else(|| "-".to_string(), |b| format!("{b:.1}"));
    println!(
        "{:>11} {:>9} {:>7} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9}",
        level,
        r.requests,
        r.errors,
        r.throughput,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.max,
        batch
    );
    if let Some(e) = &r.first_error {
        println!("{:>11} first error: {e}", "");
    }
}
