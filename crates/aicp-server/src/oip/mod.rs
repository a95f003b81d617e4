//! What the Open Inference Protocol's two transports ([`crate::v2_rest`], [`crate::grpc`]) share:
//! finding a model version by the protocol's string version, its metadata, configuration and
//! statistics, the repository index, and choosing and rendering outputs (`outputs`, the
//! classification extension included). Each transport only changes the encoding.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicp_core::{DataType, Error, ErrorKind, Result, TensorSpec};
use aicp_runtime::{
    CountAndDuration, ModelEntry, Repository, Runner, Runtime, ServedModel, StatsSnapshot,
    VersionState,
};
use serde::Serialize;
use utoipa::ToSchema;

mod outputs;

pub use outputs::{Output, OutputRequest, check_outputs, select_outputs};

pub const SERVER_NAME: &str = "aicp";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The protocol extensions aicp implements, as `GET /v2` lists them.
pub const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
];
/// The platform every model is served as.
pub const PLATFORM: &str = "onnx_onnxv1";

/// Triton's platform name for a model that runs other models: a chain.
pub const ENSEMBLE: &str = "ensemble";

/// A served model's platform, in Triton's names.
fn platform(model: &ServedModel) -> &'static str {
    match model.runner {
        Runner::Chain(_) => ENSEMBLE,
        Runner::Scheduler(_) => PLATFORM,
    }
}

/// The deadline of a request that arrived at `arrived` with the protocol's `timeout` parameter,
/// in microseconds as Triton reads it; 0 or none means no timeout.
pub fn deadline(arrived: Instant, timeout_us: Option<u64>) -> Option<Instant> {
    timeout_us
        .filter(|&us| us > 0)
        .and_then(|us| arrived.checked_add(Duration::from_micros(us)))
}

/// Parses the protocol's version string: empty or absent means the server's choice (the highest
/// ready version).
pub fn parse_version(version: Option<&str>) -> Result<Option<u64>> {
    match version {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            Error::invalid(format!(
                "model version {v:?} is not a version number (expected an integer such as \"1\")"
            ))
        }),
    }
}

/// The model version a request names.
pub fn find(runtime: &Runtime, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>> {
    let version = parse_version(version)?;
    runtime.repository()?.get(name, version)
}

/// Whether a model (version) can serve now. Unknown models and versions are errors.
pub fn model_ready(runtime: &Runtime, name: &str, version: Option<&str>) -> Result<bool> {
    match find(runtime, name, version) {
        Ok(_) => Ok(true),
        Err(e) if e.kind == ErrorKind::Unavailable => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prefixes an error with the name of the input it is about.
pub fn about_input(name: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| Error::new(e.kind, format!("input {name:?}: {}", e.message))
}

/// The datatype and shape of a request's input as both transports send them (dimensions as u64
/// over REST, i64 over gRPC). `shared_memory`: whether it names a shared memory region, which
/// aicp does not support.
pub fn input_header<D>(
    datatype: &str,
    shape: &[D],
    shared_memory: bool,
) -> Result<(DataType, Vec<usize>)>
where
    D: Copy + std::fmt::Debug + TryInto<usize>,
{
    if shared_memory {
        return Err(Error::invalid(
            "shared memory is not supported; send the data in the request",
        ));
    }
    let datatype = DataType::parse(datatype)?;
    let dims = shape
        .iter()
        .map(|&d| d.try_into().ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            Error::invalid(format!(
                "shape {shape:?}: every dimension must be a non-negative integer"
            ))
        })?;
    Ok((datatype, dims))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    /// The tensor's name in the model.
    pub name: String,
    /// The element type: `FP32`, `INT64`, ...
    #[schema(example = "FP32")]
    pub datatype: &'static str,
    /// `-1` for a dimension that varies (the batch).
    pub shape: Vec<i64>,
}

impl From<&TensorSpec> for TensorMetadata {
    fn from(spec: &TensorSpec) -> Self {
        Self {
            name: spec.name.clone(),
            datatype: spec.datatype.name(),
            shape: spec.display_shape(),
        }
    }
}

/// `GET /v2/models/{name}[/versions/{v}]`
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// The model.
    pub name: String,
    /// The versions that can be asked for: the ready ones.
    pub versions: Vec<String>,
    /// The model format, in Triton's names.
    #[schema(example = "onnx_onnxv1")]
    pub platform: &'static str,
    /// Its inputs, in the model's order.
    pub inputs: Vec<TensorMetadata>,
    /// Its outputs, in the model's order.
    pub outputs: Vec<TensorMetadata>,
}

pub fn model_metadata(
    runtime: &Runtime,
    name: &str,
    version: Option<&str>,
) -> Result<ModelMetadata> {
    let repository = runtime.repository()?;
    let model = repository.get(name, parse_version(version)?)?;
    let versions = ready_versions(repository.model(name)?)
        .map(|m| m.version.to_string())
        .collect();
    Ok(ModelMetadata {
        name: model.name.clone(),
        versions,
        platform: platform(&model),
        inputs: model.signature.inputs.iter().map(Into::into).collect(),
        outputs: model.signature.outputs.iter().map(Into::into).collect(),
    })
}

fn ready_versions(entry: &ModelEntry) -> impl Iterator<Item = &Arc<ServedModel>> {
    entry.versions.values().filter_map(|v| match &v.state {
        VersionState::Ready(model) => Some(model),
        VersionState::Failed(_) => None,
    })
}

/// One tensor of a model configuration: dimensions without the batch when the model batches.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigTensor {
    /// The tensor's name in the model.
    pub name: String,
    /// The element type in Triton's spelling: `TYPE_FP32`, `TYPE_STRING`, ...
    #[serde(serialize_with = "serialize_config_datatype")]
    #[schema(value_type = String, example = "TYPE_FP32")]
    pub data_type: DataType,
    /// Per sample (without the batch dimension when `max_batch_size` > 0).
    pub dims: Vec<i64>,
}

fn serialize_config_datatype<S: serde::Serializer>(
    datatype: &DataType,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(&config_datatype(*datatype))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceGroup {
    /// The group's name.
    pub name: String,
    /// Where they run: `KIND_CPU` or `KIND_GPU`.
    #[schema(example = "KIND_CPU")]
    pub kind: &'static str,
    /// Engine instances, each on its own thread.
    pub count: u32,
}

/// The dynamic batcher's settings, as Triton names them.
#[derive(Debug, Serialize, ToSchema)]
pub struct DynamicBatching {
    /// Batch sizes a batch stops growing at.
    pub preferred_batch_size: Vec<usize>,
    /// How long a request may wait for others to join its batch.
    pub max_queue_delay_microseconds: u64,
}

/// Triton's model configuration (the part aicp reports), `GET /v2/models/{name}/config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelConfig {
    /// The model.
    pub name: String,
    /// The model format, in Triton's names.
    pub platform: &'static str,
    /// The engine serving the model: `cuda`, `onnxruntime` or `tract`.
    pub backend: String,
    /// The most samples in one request; 0 when the model does not batch.
    pub max_batch_size: usize,
    /// Its inputs.
    pub input: Vec<ConfigTensor>,
    /// Its outputs.
    pub output: Vec<ConfigTensor>,
    /// Its engine instances.
    pub instance_group: Vec<InstanceGroup>,
    /// Present when concurrent requests are batched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
    /// A chain's steps (platform `ensemble`), as Triton describes an ensemble's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ensemble_scheduling: Option<EnsembleScheduling>,
}

/// The models a chain runs, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnsembleScheduling {
    /// Its steps.
    pub step: Vec<EnsembleStep>,
}

/// One step of a chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnsembleStep {
    /// The model it runs.
    pub model_name: String,
    /// The version it runs.
    pub model_version: u64,
    /// Each input of the model, and the chain's tensor that feeds it: a chain input, or an
    /// earlier step's output as `<model>.<output>`.
    pub input_map: std::collections::BTreeMap<String, String>,
    /// Each output of the model, and its name in the chain.
    pub output_map: std::collections::BTreeMap<String, String>,
}

pub fn model_config(model: &ServedModel) -> ModelConfig {
    let batched = model.max_batch_size() > 0;
    let tensor = |spec: &TensorSpec| {
        let dims = spec.display_shape();
        ConfigTensor {
            name: spec.name.clone(),
            data_type: spec.datatype,
            dims: dims[usize::from(batched).min(dims.len())..].to_vec(),
        }
    };
    ModelConfig {
        name: model.name.clone(),
        platform: platform(model),
        backend: model.engine.map(|e| e.to_string()).unwrap_or_default(),
        max_batch_size: model.max_batch_size(),
        input: model.signature.inputs.iter().map(tensor).collect(),
        output: model.signature.outputs.iter().map(tensor).collect(),
        instance_group: model
            .engine
            .map(|engine| InstanceGroup {
                name: model.name.clone(),
                kind: if engine.device() == aicp_runtime::EngineDevice::Gpu {
                    "KIND_GPU"
                } else {
                    "KIND_CPU"
                },
                count: u32::try_from(model.policy.instances).unwrap_or(u32::MAX),
            })
            .into_iter()
            .collect(),
        dynamic_batching: model.policy.merges().then(|| DynamicBatching {
            preferred_batch_size: model.policy.preferred_batch_sizes.clone(),
            max_queue_delay_microseconds: u64::try_from(model.policy.max_queue_delay.as_micros())
                .unwrap_or(u64::MAX),
        }),
        ensemble_scheduling: match &model.runner {
            Runner::Chain(chain) => Some(EnsembleScheduling {
                step: chain
                    .wiring()
                    .map(|(step, feeds)| EnsembleStep {
                        model_name: step.name.clone(),
                        model_version: step.version,
                        input_map: feeds
                            .into_iter()
                            .map(|(input, source)| (input.to_string(), source.to_string()))
                            .collect(),
                        output_map: step
                            .signature
                            .outputs
                            .iter()
                            .map(|o| (o.name.clone(), format!("{}.{}", step.name, o.name)))
                            .collect(),
                    })
                    .collect(),
            }),
            Runner::Scheduler(_) => None,
        },
    }
}

/// Triton's model configuration name of a type.
pub fn config_datatype(datatype: DataType) -> String {
    match datatype {
        DataType::Bytes => "TYPE_STRING".into(),
        DataType::Other => "TYPE_INVALID".into(),
        other => format!("TYPE_{}", other.name()),
    }
}

/// The statistics extension's figures for one model version.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelStatistics {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// Milliseconds since the Unix epoch.
    pub last_inference: u64,
    /// Samples inferred.
    pub inference_count: u64,
    /// Engine runs; `inference_count / execution_count` is the average batch size.
    pub execution_count: u64,
    /// Requests by outcome, and time by phase.
    pub inference_stats: InferStatistics,
    /// Engine runs by batch size.
    pub batch_stats: Vec<BatchStatistics>,
}

/// Engine runs of one batch size.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchStatistics {
    /// Samples per engine run.
    pub batch_size: usize,
    pub compute_input: CountAndDuration,
    pub compute_infer: CountAndDuration,
    pub compute_output: CountAndDuration,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferStatistics {
    pub success: CountAndDuration,
    pub fail: CountAndDuration,
    pub queue: CountAndDuration,
    pub compute_input: CountAndDuration,
    pub compute_infer: CountAndDuration,
    pub compute_output: CountAndDuration,
    pub cache_hit: CountAndDuration,
    pub cache_miss: CountAndDuration,
}

/// Statistics of every ready version, or of one model's, or of one version.
pub fn model_statistics(
    runtime: &Runtime,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<ModelStatistics>> {
    let repository = runtime.repository()?;
    let models: Vec<Arc<ServedModel>> = match (name, parse_version(version)?) {
        (None | Some(""), _) => repository
            .models()
            .flat_map(ready_versions)
            .cloned()
            .collect(),
        (Some(name), None) => ready_versions(repository.model(name)?).cloned().collect(),
        (Some(name), Some(v)) => vec![repository.get(name, Some(v))?],
    };
    Ok(models.iter().map(|m| statistics(m)).collect())
}

fn statistics(model: &ServedModel) -> ModelStatistics {
    let s: StatsSnapshot = model.stats.snapshot();
    // Input preparation happens before the queue and output encoding after the engine; neither
    // is timed apart, so their counts go with zero time, as Triton reports unmeasured phases.
    ModelStatistics {
        name: model.name.clone(),
        version: model.version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: InferStatistics {
            success: s.success,
            fail: s.fail,
            queue: s.queue,
            compute_input: untimed(s.compute.count),
            compute_infer: s.compute,
            compute_output: untimed(s.compute.count),
            cache_hit: CountAndDuration::default(),
            cache_miss: CountAndDuration::default(),
        },
        batch_stats: s
            .batches
            .iter()
            .map(|&(batch_size, runs)| BatchStatistics {
                batch_size,
                compute_input: untimed(runs.count),
                compute_infer: runs,
                compute_output: untimed(runs.count),
            })
            .collect(),
    }
}

/// A phase that happened `count` times but is not timed apart.
fn untimed(count: u64) -> CountAndDuration {
    CountAndDuration { count, ns: 0 }
}

/// One row of the repository index.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexEntry {
    /// The model.
    pub name: String,
    /// The version (absent when the model has none that loads).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is not ready, or why a reload failed while its previous load serves.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Every model version in the repository with its state; only the ready ones when `ready_only`.
pub fn repository_index(repository: &Repository, ready_only: bool) -> Vec<IndexEntry> {
    let mut index = Vec::new();
    for entry in repository.models() {
        if entry.versions.is_empty() {
            index.push(IndexEntry {
                name: entry.name.clone(),
                version: String::new(),
                state: "UNAVAILABLE",
                reason: entry.reason().unwrap_or_default(),
            });
        }
        for version in entry.versions.values() {
            let (state, reason) = match &version.state {
                // A version whose changed files failed to load still serves its previous load.
                VersionState::Ready(_) => {
                    ("READY", version.reload_error.clone().unwrap_or_default())
                }
                VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone()),
            };
            index.push(IndexEntry {
                name: entry.name.clone(),
                version: version.version.to_string(),
                state,
                reason,
            });
        }
    }
    index.retain(|e| !ready_only || e.state == "READY");
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_integers_or_absent() {
        assert_eq!(parse_version(None).unwrap(), None);
        assert_eq!(parse_version(Some("")).unwrap(), None);
        assert_eq!(parse_version(Some("3")).unwrap(), Some(3));
        let err = parse_version(Some("latest")).unwrap_err();
        assert!(
            err.message.contains("\"latest\" is not a version number"),
            "{err}"
        );
    }

    #[test]
    fn config_datatypes_use_tritons_names() {
        assert_eq!(config_datatype(DataType::F32), "TYPE_FP32");
        assert_eq!(config_datatype(DataType::Bytes), "TYPE_STRING");
    }
}
