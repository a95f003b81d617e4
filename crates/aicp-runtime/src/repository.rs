//! The model repository: what the model directory holds, each version's state (ready, or failed
//! with the reason), and which engine serves it.
//!
//! Layout (see the README):
//!
//! ```text
//! models/
//!   mnist/model.toml        optional metadata for every version of "mnist"
//!   mnist/1/model.onnx      version 1; the highest ready version is the default
//!   other.onnx              a bare file is version 1 of "other", metadata in other.toml
//!   digits_model.onnx       the seed's naming: served as "digits"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aicp_core::{
    Backend, Batching, DataType, Error, ErrorKind, ModelMetadata, ModelSignature, OutputKind,
    PixelScale, Result, Tensor, TensorSpec, validate_model_name,
};
use aicp_engine::onnxruntime::OnnxRuntimeEngine;
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, EngineKind, GpuMinBatch, LoadOptions, Runnable, onnx};
use serde::Serialize;

use crate::scheduler::{Policy, Scheduler};
use crate::stats::Stats;

/// The engines available to this process.
pub struct Engines {
    tract: TractEngine,
    /// ONNX Runtime, or why it is not available.
    onnxruntime: std::result::Result<OnnxRuntimeEngine, String>,
    /// The GPU engine, or why there is none.
    gpu: std::result::Result<Box<dyn Engine>, String>,
}

/// Whether models may run on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuUse {
    /// Look for a usable GPU at start-up; models on `auto` or `cuda` run there when one is
    /// found, but for the batches `min_batch` leaves to the CPU.
    Auto { min_batch: GpuMinBatch },
    /// Never touch a GPU, even for models that ask for one.
    Off,
}

impl Default for GpuUse {
    fn default() -> Self {
        Self::Auto {
            min_batch: GpuMinBatch::default(),
        }
    }
}

impl Engines {
    /// tract, and ONNX Runtime when its library is found (see
    /// [`aicp_engine::onnxruntime::find_library`]). A library that was asked for explicitly but
    /// cannot be loaded is logged as an error; models on `auto` are then served by tract.
    pub fn new(ort_library: Option<&Path>) -> Self {
        Self::with_gpu(ort_library, GpuUse::default())
    }

    /// As [`Engines::new`], and a GPU engine when `gpu` allows it and one is found. Without
    /// one, models that ask for `cuda` are served on the CPU, with a warning.
    pub fn with_gpu(ort_library: Option<&Path>, gpu: GpuUse) -> Self {
        let onnxruntime = match aicp_engine::onnxruntime::find_library(ort_library) {
            None => Err(
                "no ONNX Runtime library found (pass --ort-lib or set ORT_DYLIB_PATH, \
                         or pip install onnxruntime)"
                    .to_string(),
            ),
            Some(path) => OnnxRuntimeEngine::load(&path).map_err(|e| e.message),
        };
        match &onnxruntime {
            Ok(engine) => tracing::info!("onnxruntime loaded from {}", engine.library().display()),
            Err(reason) if ort_library.is_some() => {
                tracing::error!("{reason}; tract serves instead")
            }
            Err(reason) => tracing::info!("{reason}; models are served by tract"),
        }
        let gpu = match gpu {
            GpuUse::Off => Err("GPU use is off (--gpu off)".to_string()),
            GpuUse::Auto { min_batch } => aicp_engine::probe_gpu(min_batch),
        };
        match &gpu {
            Ok(engine) => {
                tracing::info!("GPU found: {}; models on auto run there", engine.device())
            }
            Err(reason) => tracing::info!("no usable GPU: {reason}; models run on the CPU"),
        }
        Self {
            tract: TractEngine,
            onnxruntime,
            gpu,
        }
    }

    /// The engine for a model's `backend`: `auto` is the fastest available (the GPU, then ONNX
    /// Runtime, then tract). `cuda` without a usable GPU falls back to `auto`'s CPU choice:
    /// a server is never down because its GPU is. A `quantized` model on `auto` goes to ONNX
    /// Runtime first: its integer kernels are what INT8 is for, where tract runs QDQ graphs
    /// slower than their float originals (and the GPU engine was not measured with them).
    pub fn pick(
        &self,
        backend: Backend,
        quantized: bool,
    ) -> std::result::Result<&dyn Engine, String> {
        match backend {
            Backend::Auto if quantized => Ok(self.cpu()),
            Backend::Tract => Ok(&self.tract),
            Backend::OnnxRuntime => match &self.onnxruntime {
                Ok(engine) => Ok(engine),
                Err(reason) => Err(format!(
                    "backend \"onnxruntime\" requested but unavailable: {reason}"
                )),
            },
            Backend::Auto | Backend::Cuda => Ok(match &self.gpu {
                Ok(engine) => engine.as_ref(),
                Err(_) => self.cpu(),
            }),
        }
    }

    /// The fastest CPU engine available.
    pub fn cpu(&self) -> &dyn Engine {
        match &self.onnxruntime {
            Ok(engine) => engine,
            Err(_) => &self.tract,
        }
    }

    /// Why there is no GPU engine, if there is none.
    pub fn gpu_unavailable(&self) -> Option<&str> {
        self.gpu.as_ref().err().map(String::as_str)
    }
}

/// A model version that is loaded, warmed up and ready to run.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub engine: EngineKind,
    /// Where its engine runs it: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    pub device: String,
    pub signature: ModelSignature,
    /// How 8-bit pixels become its input, when it takes them: its one input is float32 and its
    /// model.toml declares the input range. UINT8 requests are then normalised by the engine.
    pub pixels: Option<PixelScale>,
    /// Whether the first output holds logits (softmax to get probabilities) or probabilities.
    pub output: OutputKind,
    pub metadata: Arc<ModelMetadata>,
    /// How its requests are queued, batched and run.
    pub policy: Policy,
    pub stats: Arc<Stats>,
    /// Its queue and engine instances.
    pub scheduler: Scheduler,
}

impl ServedModel {
    /// The most samples one request may carry; 0 when the model has no variable batch
    /// dimension (its inputs are then fed exactly as declared).
    pub fn max_batch_size(&self) -> usize {
        self.policy.max_batch_size
    }

    /// Probabilities from one row of the first output: softmax of logits, or the row itself
    /// when the model already outputs probabilities (so softmax is never applied twice).
    pub fn probabilities(&self, row: &[f32]) -> Vec<f32> {
        match self.output {
            OutputKind::Logits => crate::service::softmax(row),
            OutputKind::Probabilities => row.to_vec(),
        }
    }

    /// The class label of output index `class`: from model.toml, else the index.
    pub fn label(&self, class: usize) -> String {
        self.metadata
            .labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}

/// A version's state.
#[derive(Clone)]
pub enum VersionState {
    Ready(Arc<ServedModel>),
    Failed(String),
}

#[derive(Clone)]
pub struct ModelVersion {
    pub version: u64,
    pub file: PathBuf,
    /// The files this state was loaded from, as they were then.
    stamp: VersionStamp,
    pub state: VersionState,
    /// Why the version's files, changed since, could not be loaded again; the load in `state`
    /// still serves.
    pub reload_error: Option<String>,
}

/// One model: its metadata and versions.
#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    /// The file or directory the model came from, relative to the repository.
    pub source: PathBuf,
    pub metadata: Arc<ModelMetadata>,
    pub versions: BTreeMap<u64, ModelVersion>,
    /// Why the model as a whole could not be loaded (bad metadata, no versions, unloaded).
    pub error: Option<String>,
    /// The files it was loaded from, as they were then.
    stamp: SourceStamp,
}

impl ModelEntry {
    /// A model taken out of service by an operator: listed, never served.
    fn unloaded(name: &str, source: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            source,
            metadata: Arc::new(ModelMetadata::default()),
            versions: BTreeMap::new(),
            error: Some(UNLOADED.into()),
            stamp: SourceStamp::default(),
        }
    }

    /// Whether an operator unloaded it.
    pub fn is_unloaded(&self) -> bool {
        self.error.as_deref() == Some(UNLOADED)
    }

    /// The highest ready version.
    pub fn default_version(&self) -> Option<&Arc<ServedModel>> {
        self.versions.values().rev().find_map(|v| match &v.state {
            VersionState::Ready(model) => Some(model),
            VersionState::Failed(_) => None,
        })
    }

    /// "ready" when a version serves, else "failed".
    pub fn state(&self) -> ModelState {
        if self.default_version().is_some() {
            ModelState::Ready
        } else {
            ModelState::Failed
        }
    }

    /// Why nothing serves: the model's error or the newest version's.
    pub fn reason(&self) -> Option<String> {
        if self.default_version().is_some() {
            return None;
        }
        self.error.clone().or_else(|| {
            self.versions.values().rev().find_map(|v| match &v.state {
                VersionState::Failed(reason) => Some(format!("version {}: {reason}", v.version)),
                VersionState::Ready(_) => None,
            })
        })
    }
}

const UNLOADED: &str =
    "unloaded by an operator (load it again with POST /v2/repository/models/{name}/load)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Ready,
    Failed,
}

/// Every model found in a directory. A repository never changes: a change to the directory
/// makes a new one ([`Repository::with_model`]), which keeps every unchanged version's loaded
/// model, so requests in flight finish on what they started with.
#[derive(Clone)]
pub struct Repository {
    pub dir: PathBuf,
    models: BTreeMap<String, ModelEntry>,
    /// Kept alive as long as the models loaded through them.
    engines: Arc<Engines>,
    /// The server's defaults for what a model's `[batching]` table leaves out.
    batching: Batching,
}

impl Repository {
    /// Scans `dir` and loads every model version, warming each up. A model that fails is kept
    /// with its reason; only an unreadable directory is an error. `batching` holds the server's
    /// defaults for what a model's `[batching]` table leaves out.
    pub fn load(dir: &Path, engines: Arc<Engines>, batching: &Batching) -> Result<Self> {
        let sources = discover(dir, Report::Warn)?;
        let mut repository = Self {
            dir: dir.to_path_buf(),
            models: BTreeMap::new(),
            engines,
            batching: batching.clone(),
        };
        for (name, source) in &sources {
            let entry = repository.load_model(name, source, None);
            repository.models.insert(name.clone(), entry);
        }
        Ok(repository)
    }

    /// The models the directory holds now, by name, with their files; nothing is loaded.
    /// What is skipped (links out of the directory, bad names) was reported when the
    /// repository was first loaded and is logged here at debug level only, since a watcher
    /// looks every few seconds.
    pub fn discover(&self) -> Result<BTreeMap<String, Source>> {
        discover(&self.dir, Report::Debug)
    }

    /// A copy of this repository with model `name` loaded from `source` (reusing the versions
    /// whose files did not change, and keeping the previous load of any version that fails to
    /// load again), or removed when `source` is `None`.
    pub fn with_model(&self, name: &str, source: Option<&Source>) -> Self {
        let mut next = self.clone();
        match source {
            Some(source) => {
                let entry = self.load_model(name, source, self.models.get(name));
                next.models.insert(name.to_string(), entry);
            }
            None => {
                next.models.remove(name);
            }
        }
        next
    }

    /// A copy of this repository with model `name` taken out of service, listed as unloaded.
    pub fn with_unloaded(&self, name: &str) -> Self {
        let mut next = self.clone();
        let source = self
            .models
            .get(name)
            .map(|m| m.source.clone())
            .unwrap_or_default();
        next.models
            .insert(name.to_string(), ModelEntry::unloaded(name, source));
        next
    }

    /// Whether model `name` was loaded from exactly the files `source` now has.
    pub fn is_current(&self, name: &str, source: &Source) -> bool {
        self.models
            .get(name)
            .is_some_and(|entry| entry.stamp == source.stamp())
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        validate_model_name(name)?;
        self.models.get(name).ok_or_else(|| {
            let available: Vec<&str> = self.models.keys().map(String::as_str).collect();
            Error::not_found(format!(
                "model {name:?} not found; available models: {}",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ))
        })
    }

    /// The model version to serve a request: `version`, or the highest ready one.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedModel>> {
        let entry = self.model(name)?;
        let unavailable = |reason: String| {
            Error::new(
                ErrorKind::Unavailable,
                format!("model {name:?} is not ready: {reason}"),
            )
        };
        match version {
            None => entry.default_version().cloned().ok_or_else(|| {
                unavailable(entry.reason().unwrap_or_else(|| "no version loaded".into()))
            }),
            Some(v) => match entry.versions.get(&v).map(|v| &v.state) {
                Some(VersionState::Ready(model)) => Ok(model.clone()),
                Some(VersionState::Failed(reason)) => {
                    Err(unavailable(format!("version {v}: {reason}")))
                }
                None => Err(Error::not_found(format!(
                    "model {name:?} has no version {v}; versions: {:?}",
                    entry.versions.keys().collect::<Vec<_>>()
                ))),
            },
        }
    }

    /// Loads model `name` from `source`. With the `previous` entry of the same model, a version
    /// whose files did not change is reused as it is, and a version that loaded before but
    /// fails now keeps its previous load (the failure is kept as its `reload_error`).
    fn load_model(&self, name: &str, source: &Source, previous: Option<&ModelEntry>) -> ModelEntry {
        let stamp = source.stamp();
        let relative = source
            .path
            .strip_prefix(&self.dir)
            .unwrap_or(&source.path)
            .to_path_buf();
        let metadata = match &source.metadata {
            None => Ok(ModelMetadata::default()),
            Some(file) => ModelMetadata::read(file).map_err(|e| e.to_string()),
        };
        let (metadata, mut error) = match metadata {
            Ok(m) => (Arc::new(m), None),
            Err(e) => {
                if let Some(previous) = previous.filter(|p| p.default_version().is_some()) {
                    tracing::error!("model {name}: {e}; its previous load still serves");
                    let mut kept = previous.clone();
                    kept.stamp = stamp;
                    for version in kept.versions.values_mut() {
                        version.reload_error = Some(e.clone());
                    }
                    return kept;
                }
                (Arc::new(ModelMetadata::default()), Some(e))
            }
        };
        if source.versions.is_empty() && error.is_none() {
            error = Some(
                "no version directory with a model.onnx (expected <name>/1/model.onnx)".into(),
            );
        }
        let mut versions = BTreeMap::new();
        for (&version, file) in &source.versions {
            let version_stamp = stamp.version(version);
            let before = previous
                .filter(|p| !p.is_unloaded())
                .and_then(|p| p.versions.get(&version));
            if let Some(before) = before.filter(|b| b.stamp == version_stamp) {
                versions.insert(version, before.clone());
                continue;
            }
            let (state, reload_error) = match &error {
                Some(e) => (VersionState::Failed(e.clone()), None),
                None => match load_version(
                    name,
                    version,
                    file,
                    &metadata,
                    &self.engines,
                    &self.batching,
                ) {
                    Ok(model) => {
                        tracing::info!("model {name} version {version} ready on {}", model.engine);
                        count_load(name, "success");
                        (VersionState::Ready(Arc::new(model)), None)
                    }
                    Err(reason) => match before.map(|b| &b.state) {
                        Some(VersionState::Ready(served)) => {
                            tracing::error!(
                                "model {name} version {version} changed and failed to load: \
                                 {reason}; its previous load still serves"
                            );
                            count_load(name, "failure");
                            let note = format!(
                                "its files changed and failed to load ({reason}); the previous \
                                 load still serves"
                            );
                            (VersionState::Ready(served.clone()), Some(note))
                        }
                        _ => {
                            tracing::error!("model {name} version {version} failed: {reason}");
                            count_load(name, "failure");
                            (VersionState::Failed(reason), None)
                        }
                    },
                },
            };
            versions.insert(
                version,
                ModelVersion {
                    version,
                    file: file.clone(),
                    stamp: version_stamp,
                    state,
                    reload_error,
                },
            );
        }
        ModelEntry {
            name: name.to_string(),
            source: relative,
            metadata,
            versions,
            error,
            stamp,
        }
    }
}

/// Counts a version load in the metrics (`result`: success or failure).
fn count_load(model: &str, result: &'static str) {
    metrics::counter!("aicp_model_loads_total", "model" => model.to_string(), "result" => result)
        .increment(1);
}

/// Where one model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its directory, or its bare `.onnx` file.
    pub path: PathBuf,
    pub metadata: Option<PathBuf>,
    /// Each version's `.onnx` file.
    pub versions: BTreeMap<u64, PathBuf>,
}

/// What a file looked like: a rewrite changes its size or its modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// What a model's files looked like: its metadata file and each version's model file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStamp {
    metadata: Option<Stamp>,
    versions: BTreeMap<u64, Option<Stamp>>,
}

/// What one version depends on: the model's metadata file and its own model file.
type VersionStamp = (Option<Stamp>, Option<Stamp>);

impl SourceStamp {
    fn version(&self, version: u64) -> VersionStamp {
        (
            self.metadata,
            self.versions.get(&version).copied().flatten(),
        )
    }
}

impl Source {
    /// The size and modification time of each of its files now.
    pub fn stamp(&self) -> SourceStamp {
        SourceStamp {
            metadata: self.metadata.as_deref().and_then(Stamp::of),
            versions: self
                .versions
                .iter()
                .map(|(&version, file)| (version, Stamp::of(file)))
                .collect(),
        }
    }
}

/// How loudly [`discover`] reports what it skips.
#[derive(Debug, Clone, Copy)]
enum Report {
    Warn,
    Debug,
}

impl Report {
    fn skipping(self, path: &Path, why: impl std::fmt::Display) {
        match self {
            Self::Warn => tracing::warn!("skipping {}: {why}", path.display()),
            Self::Debug => tracing::debug!("skipping {}: {why}", path.display()),
        }
    }
}

/// The models in `dir`, by name. Only what lies inside `dir` counts: a symbolic link that leads
/// out of it is skipped (and reported), so loading never reads outside the model directory.
fn discover(dir: &Path, report: Report) -> Result<BTreeMap<String, Source>> {
    let read_error = |e: std::io::Error| {
        Error::invalid(format!(
            "cannot read model directory {}: {e}",
            dir.display()
        ))
    };
    let root = dir.canonicalize().map_err(read_error)?;
    let entries = std::fs::read_dir(dir).map_err(read_error)?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    // Directories first, so `mnist/` keeps the name "mnist" over a bare `mnist_model.onnx`.
    paths.sort_by_key(|p| (!p.is_dir(), p.clone()));
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for path in paths {
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if !inside(&root, &path) {
            report.skipping(&path, OUTSIDE);
            continue;
        }
        let found = if path.is_dir() {
            Some((file_name.to_string(), model_dir(&root, &path, report)))
        } else if let Some(stem) = file_name.strip_suffix(".onnx") {
            let name = match stem.strip_suffix("_model") {
                Some(short) if !short.is_empty() && !sources.contains_key(short) => short,
                _ => stem,
            };
            Some((name.to_string(), bare_file(&root, &path, stem, report)))
        } else {
            None
        };
        let Some((name, source)) = found else {
            continue;
        };
        if let Err(e) = validate_model_name(&name) {
            report.skipping(&path, e);
            continue;
        }
        if let Some(existing) = sources.get(&name) {
            let why = format!(
                "model {name:?} is already defined by {}",
                existing.path.display()
            );
            report.skipping(&path, why);
            continue;
        }
        sources.insert(name, source);
    }
    Ok(sources)
}

/// Whether `path`, with every symbolic link followed, lies inside `root` (canonical).
fn inside(root: &Path, path: &Path) -> bool {
    path.canonicalize().is_ok_and(|p| p.starts_with(root))
}

const OUTSIDE: &str = "it leads outside the model directory";

/// The file at `path` if it is a regular file inside `root`.
fn file_inside(root: &Path, path: PathBuf, report: Report) -> Option<PathBuf> {
    if !path.is_file() {
        return None;
    }
    if !inside(root, &path) {
        report.skipping(&path, OUTSIDE);
        return None;
    }
    Some(path)
}

/// A model directory: optional `model.toml`, version directories with a `model.onnx`.
fn model_dir(root: &Path, dir: &Path, report: Report) -> Source {
    let mut versions = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(file) = file_inside(root, entry.path().join("model.onnx"), report) {
                versions.insert(version, file);
            }
        }
    }
    Source {
        path: dir.to_path_buf(),
        metadata: file_inside(root, dir.join("model.toml"), report),
        versions,
    }
}

/// A bare `.onnx` file: version 1, metadata in `<stem>.toml` beside it.
fn bare_file(root: &Path, file: &Path, stem: &str, report: Report) -> Source {
    Source {
        path: file.to_path_buf(),
        metadata: file_inside(root, file.with_file_name(format!("{stem}.toml")), report),
        versions: BTreeMap::from([(1, file.to_path_buf())]),
    }
}

fn load_version(
    name: &str,
    version: u64,
    file: &Path,
    metadata: &Arc<ModelMetadata>,
    engines: &Engines,
    batching: &Batching,
) -> std::result::Result<ServedModel, String> {
    let info = onnx::inspect(file).map_err(|e| e.message)?;
    check_sample_sizes(&info.signature)?;
    let backend = metadata.backend.unwrap_or_default();
    let engine = engines.pick(backend, info.quantized)?;
    if info.quantized && engine.kind() == EngineKind::Tract {
        tracing::warn!(
            "model {name:?} version {version} is quantised (INT8); tract runs it slower than its \
             float original (the bundled MLP at about 0.4x, ONNX Runtime at over 2x): serve it \
             with ONNX Runtime (pip install onnxruntime, or --ort-lib), or serve the float model"
        );
    }
    if let (Backend::Cuda, Some(reason)) = (backend, engines.gpu_unavailable()) {
        tracing::warn!(
            "model {name:?} asks for backend \"cuda\", but there is no usable GPU ({reason}); \
             {} serves it on the CPU",
            engine.kind()
        );
    }
    let pixels = match (info.signature.inputs.as_slice(), metadata.input.as_ref()) {
        ([input], Some(spec)) if input.datatype == DataType::F32 => {
            spec.range.map(PixelScale::for_range)
        }
        _ => None,
    };
    // A model may say what it outputs; otherwise a final Softmax means probabilities.
    let output = metadata.output.unwrap_or(match info.final_op.as_deref() {
        Some("Softmax") => OutputKind::Probabilities,
        _ => OutputKind::Logits,
    });
    let load = |engine: &dyn Engine| {
        start_instances(
            name,
            version,
            file,
            metadata,
            &info.signature,
            pixels,
            engine,
            batching,
        )
    };
    let (engine, (policy, stats, scheduler)) = match load(engine) {
        Ok(started) => (engine, started),
        // A model the GPU engine cannot run (an operator it lacks, an answer that differs from
        // the CPU's) is served on the CPU rather than not at all.
        Err(reason) if engine.kind() == EngineKind::Cuda => {
            let cpu = engines.cpu();
            tracing::warn!(
                "model {name:?} version {version} cannot run on the GPU ({reason}); {} serves it \
                 on the CPU",
                cpu.kind()
            );
            (cpu, load(cpu)?)
        }
        Err(reason) => return Err(reason),
    };
    Ok(ServedModel {
        name: name.to_string(),
        version,
        engine: engine.kind(),
        device: engine.device(),
        signature: info.signature,
        pixels,
        output,
        metadata: metadata.clone(),
        policy,
        stats,
        scheduler,
    })
}

/// Loads a model version's instances on `engine`, warms each up and starts its scheduler, with
/// the batching policy its model.toml, the server's defaults and the engine's device give.
#[allow(clippy::too_many_arguments)]
fn start_instances(
    name: &str,
    version: u64,
    file: &Path,
    metadata: &ModelMetadata,
    signature: &ModelSignature,
    pixels: Option<PixelScale>,
    engine: &dyn Engine,
    batching: &Batching,
) -> std::result::Result<(Policy, Arc<Stats>, Scheduler), String> {
    let on_gpu = engine.kind() == EngineKind::Cuda;
    // Batched when every input's first dimension varies: Triton's rule, which its clients follow.
    let batched = !signature.inputs.is_empty()
        && signature
            .inputs
            .iter()
            .all(|spec| spec.shape.first().is_some_and(Option::is_none));
    let max_batch_size = match metadata.batching.as_ref().and_then(|b| b.max_batch_size) {
        Some(0) => return Err("model.toml [batching] max_batch_size must be at least 1".into()),
        _ if !batched => 0,
        configured if on_gpu => configured.unwrap_or(Batching::GPU_DEFAULT_MAX_BATCH_SIZE),
        configured => configured.unwrap_or(Batching::DEFAULT_MAX_BATCH_SIZE),
    };
    let defaults = if on_gpu {
        batching.for_gpu()
    } else {
        batching.clone()
    };
    let policy = Policy::new(metadata.batching.as_ref(), &defaults, max_batch_size);
    policy.validate()?;
    // Each instance is its own copy of the model, so instances never wait on each other.
    let mut runnables = Vec::with_capacity(policy.instances);
    for _ in 0..policy.instances {
        let runnable = engine
            .load(file, signature, &LoadOptions { pixels })
            .map_err(|e| e.message)?;
        warm_up(runnable.as_ref(), signature)?;
        runnables.push(runnable);
    }
    let stats = Arc::new(Stats::new(name, version));
    let scheduler = Scheduler::start(name, policy.clone(), runnables, stats.clone())?;
    Ok((policy, stats, scheduler))
}

/// The most values one sample of a model's input may declare: 2^26, 256 MiB as FP32, far past
/// any request body a server takes (`--max-body-bytes`). A model file that declares more is
/// refused at load, before anything allocates a sample of it (a crafted file could otherwise
/// declare terabytes and take the server down at its warm-up).
pub const MAX_SAMPLE_VALUES: usize = 1 << 26;

/// The shape of one sample of `spec` as the warm-up feeds it (variable dimensions as 1), and its
/// number of values.
fn sample_shape(spec: &TensorSpec) -> (Vec<usize>, Option<usize>) {
    let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
    let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    (shape, values)
}

/// Refuses a model whose input samples are larger than [`MAX_SAMPLE_VALUES`].
fn check_sample_sizes(signature: &ModelSignature) -> std::result::Result<(), String> {
    for spec in &signature.inputs {
        match sample_shape(spec) {
            (_, Some(values)) if values <= MAX_SAMPLE_VALUES => {}
            (shape, _) => {
                return Err(format!(
                    "input {:?} declares samples of shape {shape:?}, more than {MAX_SAMPLE_VALUES} \
                     values (256 MiB as FP32): no request could carry one, and the model is \
                     refused rather than allocate it",
                    spec.name
                ));
            }
        }
    }
    Ok(())
}

/// Runs one all-zero sample through a model instance, so the first request does not pay for
/// lazy initialisation, and a model that cannot run is reported now rather than at the first
/// request. The sample's size was checked at load ([`check_sample_sizes`]).
fn warm_up(runnable: &dyn Runnable, signature: &ModelSignature) -> std::result::Result<(), String> {
    let inputs = signature
        .inputs
        .iter()
        .map(|spec| {
            let (shape, values) = sample_shape(spec);
            Tensor {
                shape,
                data: vec![0.0; values.unwrap_or(0)],
            }
        })
        .collect::<Vec<_>>();
    runnable
        .run(inputs)
        .map(|_| ())
        .map_err(|e| format!("warm-up inference failed: {}", e.message))
}
