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

use aicp_core::{
    Backend, Batching, Error, ErrorKind, ModelMetadata, ModelSignature, OutputKind, Result, Tensor,
    validate_model_name,
};
use aicp_engine::onnxruntime::OnnxRuntimeEngine;
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, EngineKind, Runnable, onnx};
use serde::Serialize;

use crate::scheduler::{Policy, Scheduler};
use crate::stats::Stats;

/// The engines available to this process.
pub struct Engines {
    tract: TractEngine,
    /// ONNX Runtime, or why it is not available.
    onnxruntime: std::result::Result<OnnxRuntimeEngine, String>,
}

impl Engines {
    /// tract, and ONNX Runtime when its library is found (see
    /// [`aicp_engine::onnxruntime::find_library`]). A library that was asked for explicitly but
    /// cannot be loaded is logged as an error; models on `auto` are then served by tract.
    pub fn new(ort_library: Option<&Path>) -> Self {
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
        Self {
            tract: TractEngine,
            onnxruntime,
        }
    }

    /// The engine for a model's `backend`: `auto` is the fastest available.
    pub fn pick(&self, backend: Backend) -> std::result::Result<&dyn Engine, String> {
        match (backend, &self.onnxruntime) {
            (Backend::Tract, _) | (Backend::Auto, Err(_)) => Ok(&self.tract),
            (Backend::OnnxRuntime | Backend::Auto, Ok(engine)) => Ok(engine),
            (Backend::OnnxRuntime, Err(reason)) => Err(format!(
                "backend \"onnxruntime\" requested but unavailable: {reason}"
            )),
        }
    }
}

/// A model version that is loaded, warmed up and ready to run.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub engine: EngineKind,
    pub signature: ModelSignature,
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
pub enum VersionState {
    Ready(Arc<ServedModel>),
    Failed(String),
}

pub struct ModelVersion {
    pub version: u64,
    pub file: PathBuf,
    pub state: VersionState,
}

/// One model: its metadata and versions.
pub struct ModelEntry {
    pub name: String,
    /// The file or directory the model came from, relative to the repository.
    pub source: PathBuf,
    pub metadata: Arc<ModelMetadata>,
    pub versions: BTreeMap<u64, ModelVersion>,
    /// Why the model as a whole could not be loaded (bad metadata, no versions).
    pub error: Option<String>,
}

impl ModelEntry {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Ready,
    Failed,
}

/// Every model found in a directory.
pub struct Repository {
    pub dir: PathBuf,
    models: BTreeMap<String, ModelEntry>,
    /// Kept alive as long as the models loaded through them.
    _engines: Arc<Engines>,
}

impl Repository {
    /// Scans `dir` and loads every model version, warming each up. A model that fails is kept
    /// with its reason; only an unreadable directory is an error. `batching` holds the server's
    /// defaults for what a model's `[batching]` table leaves out.
    pub fn load(dir: &Path, engines: Arc<Engines>, batching: &Batching) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::invalid(format!(
                "cannot read model directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        // Directories first, so `mnist/` keeps the name "mnist" over a bare `mnist_model.onnx`.
        paths.sort_by_key(|p| (!p.is_dir(), p.clone()));
        let mut models = BTreeMap::new();
        for path in paths {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            let found = if path.is_dir() {
                Some((file_name.to_string(), model_dir(&path)))
            } else if let Some(stem) = file_name.strip_suffix(".onnx") {
                let name = match stem.strip_suffix("_model") {
                    Some(short) if !short.is_empty() && !models.contains_key(short) => short,
                    _ => stem,
                };
                Some((name.to_string(), bare_file(&path, stem)))
            } else {
                None
            };
            let Some((name, (metadata, versions))) = found else {
                continue;
            };
            if let Err(e) = validate_model_name(&name) {
                tracing::warn!("skipping {}: {e}", path.display());
                continue;
            }
            if let Some(existing) = models.get(&name) {
                let existing: &ModelEntry = existing;
                tracing::warn!(
                    "skipping {}: model {name:?} is already defined by {}",
                    path.display(),
                    existing.source.display()
                );
                continue;
            }
            let entry = load_model(&name, &path, dir, metadata, versions, &engines, batching);
            models.insert(name, entry);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            models,
            _engines: engines,
        })
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
}

type Found = (
    std::result::Result<Option<PathBuf>, String>,
    BTreeMap<u64, PathBuf>,
);

/// A model directory: optional `model.toml`, version directories with a `model.onnx`.
fn model_dir(dir: &Path) -> Found {
    let metadata = dir.join("model.toml");
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
            let file = entry.path().join("model.onnx");
            if file.is_file() {
                versions.insert(version, file);
            }
        }
    }
    (Ok(metadata.is_file().then_some(metadata)), versions)
}

/// A bare `.onnx` file: version 1, metadata in `<stem>.toml` beside it.
fn bare_file(file: &Path, stem: &str) -> Found {
    let metadata = file.with_file_name(format!("{stem}.toml"));
    (
        Ok(metadata.is_file().then_some(metadata)),
        BTreeMap::from([(1, file.to_path_buf())]),
    )
}

fn load_model(
    name: &str,
    source: &Path,
    root: &Path,
    metadata_file: std::result::Result<Option<PathBuf>, String>,
    files: BTreeMap<u64, PathBuf>,
    engines: &Engines,
    batching: &Batching,
) -> ModelEntry {
    let relative = source.strip_prefix(root).unwrap_or(source).to_path_buf();
    let metadata = metadata_file.and_then(|file| match file {
        None => Ok(ModelMetadata::default()),
        Some(file) => ModelMetadata::read(&file).map_err(|e| e.to_string()),
    });
    let (metadata, mut error) = match metadata {
        Ok(m) => (Arc::new(m), None),
        Err(e) => (Arc::new(ModelMetadata::default()), Some(e)),
    };
    if files.is_empty() && error.is_none() {
        error =
            Some("no version directory with a model.onnx (expected <name>/1/model.onnx)".into());
    }
    let mut versions = BTreeMap::new();
    for (version, file) in files {
        let state = match &error {
            Some(e) => VersionState::Failed(e.clone()),
            None => match load_version(name, version, &file, &metadata, engines, batching) {
                Ok(model) => {
                    tracing::info!("model {name} version {version} ready on {}", model.engine);
                    VersionState::Ready(Arc::new(model))
                }
                Err(reason) => {
                    tracing::error!("model {name} version {version} failed: {reason}");
                    VersionState::Failed(reason)
                }
            },
        };
        versions.insert(
            version,
            ModelVersion {
                version,
                file,
                state,
            },
        );
    }
    ModelEntry {
        name: name.to_string(),
        source: relative,
        metadata,
        versions,
        error,
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
    let engine = engines.pick(metadata.backend.unwrap_or_default())?;
    // A model may say what it outputs; otherwise a final Softmax means probabilities.
    let output = metadata.output.unwrap_or(match info.final_op.as_deref() {
        Some("Softmax") => OutputKind::Probabilities,
        _ => OutputKind::Logits,
    });
    // Batched when every input's first dimension varies: Triton's rule, which its clients follow.
    let batched = !info.signature.inputs.is_empty()
        && info
            .signature
            .inputs
            .iter()
            .all(|spec| spec.shape.first().is_some_and(Option::is_none));
    let max_batch_size = match metadata.batching.as_ref().and_then(|b| b.max_batch_size) {
        Some(0) => return Err("model.toml [batching] max_batch_size must be at least 1".into()),
        _ if !batched => 0,
        configured => configured.unwrap_or(Batching::DEFAULT_MAX_BATCH_SIZE),
    };
    let policy = Policy::new(metadata.batching.as_ref(), batching, max_batch_size);
    policy.validate()?;
    // Each instance is its own copy of the model, so instances never wait on each other.
    let mut runnables = Vec::with_capacity(policy.instances);
    for _ in 0..policy.instances {
        let runnable = engine.load(file, &info.signature).map_err(|e| e.message)?;
        warm_up(runnable.as_ref(), &info.signature)?;
        runnables.push(runnable);
    }
    let stats = Arc::new(Stats::default());
    let scheduler = Scheduler::start(name, policy.clone(), runnables, stats.clone());
    Ok(ServedModel {
        name: name.to_string(),
        version,
        engine: engine.kind(),
        signature: info.signature,
        output,
        metadata: metadata.clone(),
        policy,
        stats,
        scheduler,
    })
}

/// Runs one all-zero sample through a model instance, so the first request does not pay for
/// lazy initialisation, and a model that cannot run is reported now rather than at the first
/// request.
fn warm_up(runnable: &dyn Runnable, signature: &ModelSignature) -> std::result::Result<(), String> {
    let inputs = signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let count = shape.iter().product();
            Tensor {
                shape,
                data: vec![0.0; count],
            }
        })
        .collect::<Vec<_>>();
    runnable
        .run(inputs)
        .map(|_| ())
        .map_err(|e| format!("warm-up inference failed: {}", e.message))
}
