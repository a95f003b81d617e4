//! `aicp serve`, `aicp models` and `aicp predict`: the command line over the server and runtime.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aicp_core::{NestedArray, PostprocessKind, Tensor};
use aicp_runtime::{
    Batching, ControlMode, Engines, GpuMinBatch, GpuUse, InferInput, ModelState, Repository,
    Runtime, ServedModel, VersionState, preprocessing,
};
use aicp_server::Access;
use aicp_server::ConnectionLimits;
use aicp_server::TlsFiles;
use aicp_server::{Event, ServeOptions};
use aicp_transform::Sample;
use clap::Args;

/// Where the models are and which engines may run them.
#[derive(Debug, Args)]
pub struct RepositoryArgs {
    /// The model directory.
    #[arg(long, env = "AICP_MODELS", default_value = "models")]
    models: PathBuf,

    /// ONNX Runtime's shared library (libonnxruntime.so.1.*, version 1.31 or newer). Default:
    /// ORT_DYLIB_PATH, else an onnxruntime Python package found on this machine.
    #[arg(long, env = "AICP_ORT_LIB")]
    ort_lib: Option<PathBuf>,

    /// Whether models may run on an NVIDIA GPU: `auto` looks for one at start-up (models on
    /// backend `auto` or `cuda` then run there); `off` never touches it.
    #[arg(long, env = "AICP_GPU", value_enum, default_value_t = Gpu::Auto)]
    gpu: Gpu,

    /// Batches smaller than this run on the CPU (tract) instead of the GPU, where a small batch
    /// is faster than the GPU's transfers and kernel launches: `auto` measures, for each model
    /// as it loads, the smallest batch the GPU runs faster; `1` sends every batch to the GPU.
    #[arg(long, env = "AICP_GPU_MIN_BATCH", default_value_t = GpuMinBatch::Measured)]
    gpu_min_batch: GpuMinBatch,

    /// Where the GPU engine keeps its compiled kernels, so a restart does not compile them
    /// again (tens of seconds). Default: $XDG_CACHE_HOME, else ~/.cache.
    #[arg(long, env = "AICP_CUDA_CACHE_DIR")]
    cuda_cache_dir: Option<PathBuf>,

    /// For a model tract cannot analyse with its dimensions left open, tract builds a plan for
    /// each input shape at its first request; this many are kept per model instance, the least
    /// recently used going first (a model.toml's plan_cache_size wins).
    #[arg(long, env = "AICP_PLAN_CACHE_SIZE", default_value_t = aicp_engine::DEFAULT_PLAN_CACHE as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    plan_cache_size: u64,
}

/// `--gpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Gpu {
    Auto,
    Off,
}

impl RepositoryArgs {
    /// The engines these arguments allow.
    pub(crate) fn engines(&self) -> Engines {
        self.set_cuda_cache_dir();
        Engines::with_gpu(self.ort_lib.as_deref(), self.gpu_use())
            .with_plan_cache(self.plan_cache_size as usize)
    }

    /// tract-cuda keeps its kernels under `$XDG_CACHE_HOME` (it reads nothing else): point it
    /// at `--cuda-cache-dir`. Called before any other thread starts.
    pub(crate) fn set_cuda_cache_dir(&self) {
        if let Some(dir) = &self.cuda_cache_dir {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            // SAFETY: the process has one thread yet, so nothing reads the environment now.
            unsafe { std::env::set_var("XDG_CACHE_HOME", dir) };
        }
    }

    /// The model directory.
    pub(crate) fn models(&self) -> &std::path::Path {
        &self.models
    }

    fn gpu_use(&self) -> GpuUse {
        match self.gpu {
            Gpu::Auto => GpuUse::Auto {
                min_batch: self.gpu_min_batch,
            },
            Gpu::Off => GpuUse::Off,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings, named as these flags are (`port = 8000`, `max_in_flight =
    /// 512`). A flag or its environment variable wins over the file.
    #[arg(long, env = "AICP_CONFIG")]
    config: Option<PathBuf>,

    /// Print the settings in effect, each with where it came from (flag, environment, file or
    /// default), as a file --config reads, and exit.
    #[arg(long)]
    print_config: bool,

    /// The address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, env = "AICP_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// The port; 0 picks a free one (printed at start-up).
    #[arg(long, env = "AICP_PORT", default_value_t = 8000)]
    port: u16,

    /// The port of the Open Inference Protocol's gRPC service, on the same address; 0 picks a
    /// free one (printed at start-up).
    #[arg(long, env = "AICP_GRPC_PORT", default_value_t = 8001)]
    grpc_port: u16,

    /// On SIGTERM or Ctrl-C, readiness turns false at once, and the server goes on serving for
    /// this many seconds (so that load balancers take it out first) before it closes its
    /// listeners.
    #[arg(long, env = "AICP_SHUTDOWN_DELAY_SECS", default_value_t = 0)]
    shutdown_delay_secs: u64,

    /// Once the listeners close, requests in flight get this many seconds to finish before the
    /// server exits anyway.
    #[arg(long, env = "AICP_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    drain_timeout_secs: u64,

    /// Serve `/metrics` on this port (same address) instead of the main one; 0 picks a free
    /// one (printed at start-up).
    #[arg(long, env = "AICP_METRICS_PORT")]
    metrics_port: Option<u16>,

    #[command(flatten)]
    repository: RepositoryArgs,

    /// The largest request body (and gRPC message) accepted, in bytes.
    #[arg(long, env = "AICP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Bytes of request bodies being received at once, all connections together: a body that
    /// would go past it is refused as overloaded. Counts bytes that arrived, not what headers
    /// announce.
    #[arg(long, env = "AICP_UPLOAD_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024)]
    upload_memory_bytes: usize,

    /// A request body (a gRPC message) must arrive whole within this many seconds of its start,
    /// or the request fails with 408 (gRPC: DEADLINE_EXCEEDED).
    #[arg(long, env = "AICP_BODY_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,

    /// An HTTP/1 request head must arrive whole within this many seconds of its first byte,
    /// and a TLS handshake must end within it; else the connection is closed.
    #[arg(long, env = "AICP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,

    /// A connection with no request in progress (HTTP/1 keep-alive, HTTP/2 with no stream, a
    /// gRPC stream between messages) is closed after this many seconds.
    #[arg(long, env = "AICP_IDLE_TIMEOUT_SECS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,

    /// Open connections, HTTP, gRPC and metrics together; past it, new connections wait to be
    /// accepted. The open-files limit is raised to fit when the system allows.
    #[arg(long, env = "AICP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Concurrent streams (requests) on one HTTP/2 connection.
    #[arg(long, env = "AICP_HTTP2_MAX_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,

    /// How often an HTTP/2 connection with requests in progress pings its peer, in seconds; a
    /// peer that does not answer within 20 s is dropped.
    #[arg(long, env = "AICP_HTTP2_KEEPALIVE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    http2_keepalive_secs: u64,

    /// Serve HTTP and gRPC over TLS with this certificate chain (PEM, leaf first). Read again
    /// when the file changes.
    #[arg(long, env = "AICP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AICP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates that chain to these CA certificates (PEM): mutual TLS on
    /// the HTTP and gRPC ports.
    #[arg(long, env = "AICP_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Inference requests in flight (HTTP and gRPC together) before new ones are refused as
    /// overloaded. A request takes its place once its body has arrived whole.
    #[arg(long, env = "AICP_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,

    #[command(flatten)]
    batching: BatchingArgs,

    /// How the served models follow the model directory: `poll` watches it (new models and
    /// versions load, removed ones unload, changed files reload, without a restart);
    /// `explicit` loads what is there at start-up, then only on a load request; `none` never
    /// changes what start-up loaded.
    #[arg(long, env = "AICP_MODEL_CONTROL", value_enum, default_value_t = ModelControlArg::Poll)]
    model_control: ModelControlArg,

    /// How often `poll` looks at the model directory, in milliseconds. A new or changed file is
    /// loaded once it looks the same at two looks in a row (a copy in progress is not a model).
    #[arg(long, env = "AICP_POLL_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    poll_interval_ms: u64,

    /// Turns on model management over the API (`POST /v2/repository/models/{name}/load` and
    /// `/unload`, and the same over gRPC), for requests that send `Authorization: Bearer
    /// <token>`. Off without it. Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "AICP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Requires this key on inference, model listing and metadata routes (`Authorization:
    /// Bearer <key>` or `X-API-Key: <key>`); health, readiness, metrics and docs stay open.
    /// Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "AICP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// `--model-control`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelControlArg {
    Poll,
    Explicit,
    None,
}

impl From<ModelControlArg> for ControlMode {
    fn from(arg: ModelControlArg) -> Self {
        match arg {
            ModelControlArg::Poll => Self::Poll,
            ModelControlArg::Explicit => Self::Explicit,
            ModelControlArg::None => Self::None,
        }
    }
}

/// The scheduler's settings for models whose model.toml `[batching]` table leaves them out. Each
/// is `None` unless given, so that a model on a GPU gets the GPU's defaults for the rest (see
/// [`aicp_runtime::policy`], where every default is resolved).
#[derive(Debug, Args)]
pub struct BatchingArgs {
    /// Merge concurrent requests to a model into one engine run [default: true].
    #[arg(long, env = "AICP_DYNAMIC_BATCHING", action = clap::ArgAction::Set)]
    dynamic_batching: Option<bool>,

    /// How long a request may wait for others to join its batch, in microseconds. 0 never
    /// waits: a batch holds the requests already waiting [default: 0; 100 on a GPU].
    #[arg(long, env = "AICP_MAX_QUEUE_DELAY_US")]
    max_queue_delay_us: Option<u64>,

    /// How long an idle engine instance polls its queue (yielding its core to any thread that
    /// wants it) before it sleeps, in microseconds; a request arriving meanwhile skips a thread
    /// wake-up. 0 sleeps at once [default: 500].
    #[arg(long, env = "AICP_IDLE_POLL_US")]
    idle_poll_us: Option<u64>,

    /// Engine instances per model, each on its own thread with one intra-op thread [default:
    /// one per two cores; 2 on a GPU].
    #[arg(long, env = "AICP_INSTANCES", value_parser = clap::value_parser!(u32).range(1..))]
    instances: Option<u32>,

    /// Requests that may wait in a model's queue; more are refused as overloaded [default:
    /// 1024].
    #[arg(long, env = "AICP_MAX_QUEUE_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    max_queue_size: Option<u32>,
}

impl BatchingArgs {
    /// The flags given, as a `[batching]` table.
    fn given(&self) -> Batching {
        Batching {
            max_batch_size: None,
            dynamic: self.dynamic_batching,
            max_queue_delay_us: self.max_queue_delay_us,
            preferred_batch_sizes: Vec::new(),
            idle_poll_us: self.idle_poll_us,
            instances: self.instances.map(|n| n as usize),
            max_queue_size: self.max_queue_size.map(|n| n as usize),
        }
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.repository.set_cuda_cache_dir();
    let secs = std::time::Duration::from_secs;
    // Every connection is a file descriptor, and listeners, models and logs need some more.
    raise_open_files_limit(u64::from(args.max_connections) + 256);
    let options = ServeOptions {
        addr: SocketAddr::new(args.host, args.port),
        grpc_addr: Some(SocketAddr::new(args.host, args.grpc_port)),
        gpu: args.repository.gpu_use(),
        models: args.repository.models,
        ort_library: args.repository.ort_lib,
        plan_cache: args.repository.plan_cache_size as usize,
        max_body_bytes: args.max_body_bytes,
        upload_memory_bytes: args.upload_memory_bytes,
        body_timeout: secs(args.body_timeout_secs),
        connections: ConnectionLimits {
            max_connections: args.max_connections as usize,
            header_timeout: secs(args.header_timeout_secs),
            idle_timeout: secs(args.idle_timeout_secs),
            http2_max_streams: args.http2_max_streams,
            http2_keepalive: secs(args.http2_keepalive_secs),
        },
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca,
        }),
        max_in_flight: args.max_in_flight as usize,
        batching: args.batching.given(),
        model_control: args.model_control.into(),
        poll_interval: std::time::Duration::from_millis(args.poll_interval_ms),
        access: Access::new(args.api_key, args.admin_token),
        metrics_addr: args
            .metrics_port
            .map(|port| SocketAddr::new(args.host, port)),
        shutdown_delay: secs(args.shutdown_delay_secs),
        drain_timeout: secs(args.drain_timeout_secs),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(aicp_server::serve(options, shutdown_signal(), print_event))
}

/// Raises the soft limit on open files towards `wanted` (as far as the hard limit allows), and
/// warns when the connection cap cannot be reached.
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= wanted
    {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 || raised.rlim_cur < wanted {
        eprintln!(
            "warning: the open-files limit is {} (ulimit -n); --max-connections needs about {wanted}",
            raised.rlim_cur.max(limit.rlim_cur)
        );
    }
}

/// A start-up event as its line on standard output (the lines scripts and tests read).
fn print_event(event: Event) {
    match event {
        Event::Listening { scheme, addr } => println!("aicp listening on {scheme}://{addr}"),
        Event::Metrics(addr) => println!("aicp metrics on http://{addr}/metrics"),
        Event::Tls { cert, mutual } => {
            let mutual = if mutual {
                ", client certificates required"
            } else {
                ""
            };
            println!("TLS with {}{mutual}", cert.display());
        }
        Event::ModelControl {
            mode: ControlMode::Poll,
            models,
            poll_interval,
        } => println!(
            "model control: poll (watching {} every {} ms)",
            models.display(),
            poll_interval.as_millis()
        ),
        Event::ModelControl { mode, .. } => println!("model control: {}", mode.name()),
        Event::ModelReady {
            name,
            version,
            engine,
            device,
        } => println!("model {name} version {version} ready on {engine} ({device})"),
        Event::ModelFailed { name, reason } => println!("model {name} failed: {reason}"),
        Event::Ready => println!("aicp ready"),
        Event::GrpcListening { addr, tls } => {
            let over = if tls { " (TLS)" } else { "" };
            println!("aicp gRPC listening on {addr}{over}");
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("shutting down: not ready any more; finishing requests in flight");
}

fn load(args: &RepositoryArgs, batching: &Batching) -> anyhow::Result<Repository> {
    Ok(Repository::load(
        args.models(),
        Arc::new(args.engines()),
        batching,
    )?)
}

/// The scheduler for commands that run a model once, in this process: one instance is enough.
fn offline() -> Batching {
    Batching {
        instances: Some(1),
        ..Batching::default()
    }
}

/// `aicp models`: what the directory holds and whether each model loads.
pub fn models(args: RepositoryArgs) -> anyhow::Result<()> {
    let repository = load(&args, &offline())?;
    println!(
        "{:<20} {:<8} {:<8} {:<12} {:<10} {:<10} source",
        "model", "version", "state", "engine", "device", "max batch"
    );
    for model in repository.models() {
        for version in model.versions.values() {
            let row =
                |state: &str, engine: &dyn Display, device: &dyn Display, batch: &dyn Display| {
                    println!(
                        "{:<20} {:<8} {state:<8} {engine:<12} {device:<10} {batch:<10} {}",
                        model.name,
                        version.version,
                        model.source.display()
                    )
                };
            match &version.state {
                VersionState::Ready(served) => {
                    row(
                        "ready",
                        &served.engine_name(),
                        &served.device,
                        &served.max_batch_size(),
                    );
                    print_tensors(&served.signature);
                    let transforms = &served.transforms;
                    if transforms.image.is_some() {
                        println!(
                            "    takes   pictures: /api/v1/ml/classify/image, V2 BYTES input \"image\""
                        );
                    }
                    if transforms.text.is_some() {
                        println!(
                            "    takes   texts: /api/v1/ml/embed, /classify/text, V2 BYTES input \"text\""
                        );
                    }
                    for note in &served.notes {
                        println!("    note: {note}");
                    }
                }
                VersionState::Failed(reason) => {
                    row("failed", &"-", &"-", &"-");
                    println!("    reason: {reason}");
                }
            }
        }
        if model.versions.is_empty() && model.state() == ModelState::Failed {
            println!(
                "{:<20} {:<8} failed   reason: {}",
                model.name,
                "-",
                model.reason().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A served version's inputs and outputs, one a line: name, datatype and shape (-1 where it
/// varies).
fn print_tensors(signature: &aicp_core::ModelSignature) {
    let inputs = signature.inputs.iter().map(|spec| ("input", spec));
    let outputs = signature.outputs.iter().map(|spec| ("output", spec));
    for (role, spec) in inputs.chain(outputs) {
        println!(
            "    {role:<7} {:<24} {:<6} {:?}",
            spec.name,
            spec.datatype,
            spec.display_shape()
        );
    }
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model to run.
    #[arg(long, env = "AICP_MODEL", default_value = "mnist")]
    model: String,

    #[command(flatten)]
    repository: RepositoryArgs,

    /// How many classes to print.
    #[arg(long, default_value_t = 5)]
    top_k: usize,

    /// Also print the 28x28 picture the model saw (for a picture of a digit).
    #[arg(long)]
    debug: bool,

    /// A text for a model with [preprocess.text], instead of a file: its classes, or the
    /// start of its embedding.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,

    /// A picture (PNG, JPEG, GIF, BMP or WebP), prepared as the model's [preprocess.image]
    /// says (MNIST-like for a model of 28x28 digits, as the server's image endpoint does), or
    /// a JSON file holding one input: 784 floats in [0, 1] (flat, 28 rows of 28, or one
    /// channel of 28 rows).
    file: Option<PathBuf>,
}

/// `aicp predict`: one inference, offline, through the same preparation and validation as the
/// server.
pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let repository = load(&args.repository, &offline())?;
    let runtime = Runtime::new();
    runtime.set_repository(repository);
    let ticket = runtime.model(&args.model, None)?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut mask = None;
    let inputs = match (&args.text, &args.file) {
        (Some(text), _) => {
            let texts = tokio.block_on(preprocessing::texts(&ticket, vec![text.clone()]))?;
            let tokens = texts.mask.iter().filter(|&&m| m == 1).count();
            println!(
                "text of {} characters: {tokens} tokens",
                text.chars().count()
            );
            mask = Some(texts.mask);
            texts.inputs
        }
        (None, Some(file)) => {
            let bytes = std::fs::read(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            vec![file_input(&ticket, &tokio, bytes, file, args.debug)?]
        }
        (None, None) => anyhow::bail!("give a picture or JSON file, or --text"),
    };
    let response = tokio.block_on(runtime.run(ticket, inputs, None))?;
    let model = &response.model;
    println!(
        "model {} version {} ({} on {})",
        model.name,
        model.version,
        model.engine_name(),
        model.device
    );
    let post = &model.transforms.post;
    let Some(output) = response.outputs.get(post.output) else {
        anyhow::bail!("model {} returned no output {}", model.name, post.output);
    };
    if let (Some(mask), PostprocessKind::Embedding) = (&mask, post.kind) {
        let vectors = aicp_transform::pool::embeddings(output, mask, post.pooling, post.normalize)
            .map_err(|e| anyhow::anyhow!("model {}: {e}", model.name))?;
        let vector = vectors.first().cloned().unwrap_or_default();
        let start: Vec<String> = vector.iter().take(8).map(|v| format!("{v:.4}")).collect();
        println!(
            "embedding of {} values: [{}, ...]",
            vector.len(),
            start.join(", ")
        );
        return Ok(());
    }
    let Some(scores) = output.data.to_f32() else {
        anyhow::bail!(
            "model {}'s output is {}; aicp predict reads class scores",
            model.name,
            output.datatype()
        );
    };
    let classes = output.shape.last().copied().unwrap_or(1).max(1);
    let probabilities = model.probabilities(&scores[..classes.min(scores.len())]);
    for (class, confidence) in aicp_runtime::top_k(&probabilities, args.top_k) {
        println!("{:>12}  {:>6.2}%", model.label(class), 100.0 * confidence);
    }
    Ok(())
}

/// A file's input: a JSON array of floats, or a picture prepared for the model.
fn file_input(
    model: &ServedModel,
    tokio: &tokio::runtime::Runtime,
    bytes: Vec<u8>,
    file: &Path,
    debug: bool,
) -> anyhow::Result<InferInput> {
    let is_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'[' | b'{'));
    if is_json {
        let input: NestedArray = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not a JSON array of numbers: {e}", file.display())
        })?;
        let count = input.data.len();
        return Ok(Tensor {
            shape: vec![1, count],
            data: aicp_core::TensorData::F32(input.data),
        }
        .into());
    }
    let prepared = tokio
        .block_on(preprocessing::pictures(model, vec![bytes]))
        .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))?;
    for picture in &prepared.pictures {
        let inverted = match &picture.sample {
            Sample::Digit(digit) if digit.inverted => ", dark on light: inverted",
            _ => "",
        };
        println!("picture {}x{}{inverted}", picture.width, picture.height);
        if let (Sample::Digit(digit), true) = (&picture.sample, debug) {
            print_digit(&digit.pixels);
        }
    }
    Ok(prepared.input)
}

/// The 28x28 picture in shades of text, ink dark.
fn print_digit(pixels: &[u8]) {
    const SHADES: [char; 5] = [' ', '.', ':', '#', '@'];
    for row in pixels.chunks(aicp_image::SIDE as usize) {
        let line: String = row
            .iter()
            .flat_map(|&p| std::iter::repeat_n(SHADES[usize::from(p) * 5 / 256], 2))
            .collect();
        println!("|{line}|");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn batching(flags: &[&str]) -> Batching {
        let args = std::iter::once("serve").chain(flags.iter().copied());
        Serve::try_parse_from(args).unwrap().args.batching.given()
    }

    /// A flag left out stays unset, so the device's default applies (a GPU's queue delay of
    /// 100 us, say), and a flag given is taken as given.
    #[test]
    fn batching_flags_are_unset_unless_given() {
        assert_eq!(batching(&[]), Batching::default());
        let given = batching(&["--max-queue-delay-us", "0", "--instances", "3"]);
        assert_eq!(given.max_queue_delay_us, Some(0));
        assert_eq!(given.instances, Some(3));
        assert_eq!(given.dynamic, None);
    }
}
