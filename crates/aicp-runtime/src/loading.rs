//! Loading one model version: reading its signature, choosing its engine (falling back from
//! the GPU to the CPU when the GPU cannot run it), resolving its batching policy, loading and
//! warming up each instance, and starting its scheduler.

use std::path::Path;
use std::sync::Arc;

use aicp_core::{
    Backend, Batching, DataType, Input, ModelMetadata, ModelSignature, OutputKind, PixelScale,
    Tensor, TensorData, TensorSpec,
};
use aicp_engine::{Engine, EngineKind, LoadOptions, Runnable, onnx};

use crate::engines::Engines;
use crate::policy::{Device, Policy};
use crate::scheduler::Scheduler;
use crate::served::ServedModel;
use crate::stats::Stats;

/// Counts a version load in the metrics (`result`: success or failure).
pub(crate) fn count_load(model: &str, result: &'static str) {
    metrics::counter!("aicp_model_loads_total", "model" => model.to_string(), "result" => result)
        .increment(1);
}

pub(crate) fn load_version(
    name: &str,
    version: u64,
    file: &Path,
    metadata: &Arc<ModelMetadata>,
    engines: &Engines,
    batching: &Batching,
) -> std::result::Result<ServedModel, String> {
    let info = onnx::inspect(file).map_err(|e| e.message)?;
    check_types(&info.signature)?;
    check_sample_sizes(&info.signature)?;
    let backend = metadata.backend.unwrap_or_default();
    let engine = engines.pick(backend, info.quantized)?;
    if info.quantized && engine.kind() == EngineKind::Tract {
        tracing::warn!(
            "model {name:?} version {version} is quantised (INT8); tract runs it on integer \
             kernels but, fed float32, slower than its float original (the bundled MLP at about \
             0.6x at batch 1024, and 1.2x fed 8-bit pixels; ONNX Runtime at over 2.5x): serve \
             it with ONNX Runtime (pip install onnxruntime, or --ort-lib), or serve the float \
             model"
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
    let mut notes = Vec::new();
    let (engine, (policy, stats, scheduler, warmed)) = match load(engine) {
        Ok(started) => (engine, started),
        // A model the GPU engine cannot run (a type or an operator it lacks, an answer that
        // differs from the CPU's) is served on the CPU rather than not at all.
        Err(reason) if engine.kind() == EngineKind::Cuda => {
            let cpu = engines.cpu();
            let note = format!("served on the CPU by {}: {reason}", cpu.kind());
            tracing::warn!("model {name:?} version {version} cannot run on the GPU; {note}");
            notes.push(note);
            (cpu, load(cpu)?)
        }
        Err(reason) => return Err(reason),
    };
    if let Err(reason) = warmed {
        tracing::warn!("model {name:?} version {version}: {reason}; it serves all the same");
        notes.push(reason);
    }
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
        notes,
        stats,
        scheduler,
    })
}

/// What [`start_instances`] started, and how the warm-up went (its failure is not the load's).
type Started = (
    Policy,
    Arc<Stats>,
    Scheduler,
    std::result::Result<(), String>,
);

/// Loads a model version's instances on `engine`, warms each up (best effort) and starts its
/// scheduler, with the batching policy its model.toml, the server's flags and the engine's
/// device give.
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
) -> std::result::Result<Started, String> {
    let device = if engine.kind() == EngineKind::Cuda {
        Device::Gpu
    } else {
        Device::Cpu
    };
    let policy = Policy::resolve(
        metadata.batching.as_ref(),
        batching,
        device,
        batches(signature),
    )?;
    // Each instance is its own copy of the model, so instances never wait on each other.
    let mut runnables = Vec::with_capacity(policy.instances);
    let mut warmed = Ok(());
    for _ in 0..policy.instances {
        let mut runnable = engine
            .load(file, signature, &LoadOptions { pixels })
            .map_err(|e| e.message)?;
        if warmed.is_ok() {
            warmed = warm_up(runnable.as_mut(), signature);
        }
        runnables.push(runnable);
    }
    let stats = Arc::new(Stats::new(name, version));
    let scheduler = Scheduler::start(name, policy.clone(), runnables, stats.clone())?;
    Ok((policy, stats, scheduler, warmed))
}

/// Whether a model batches: it has inputs, and every input and every output has a first
/// dimension that varies, so that requests can be stacked along it and the outputs split
/// along it again. Triton's rule, which its clients follow; any other model runs each request
/// alone, exactly as it came.
fn batches(signature: &ModelSignature) -> bool {
    !signature.inputs.is_empty()
        && signature
            .inputs
            .iter()
            .chain(&signature.outputs)
            .all(TensorSpec::varies_first)
}

/// Refuses a model with an input or output of a type the protocols have no name for (complex
/// numbers, 8-bit floats, ...), naming it.
fn check_types(signature: &ModelSignature) -> std::result::Result<(), String> {
    let inputs = signature.inputs.iter().map(|spec| ("input", spec));
    let outputs = signature.outputs.iter().map(|spec| ("output", spec));
    for (role, spec) in inputs.chain(outputs) {
        if spec.datatype == DataType::Other {
            return Err(format!(
                "{role} {:?} has an element type aicp cannot carry: the protocols name BOOL, \
                 the integer and floating-point types and BYTES",
                spec.name
            ));
        }
    }
    Ok(())
}

/// The most values one sample of a model's input may declare: 2^26, 256 MiB as FP32, far past
/// any request body a server takes (`--max-body-bytes`). A model file that declares more is
/// refused at load, before anything allocates a sample of it (a crafted file could otherwise
/// declare terabytes and take the server down at its warm-up).
pub const MAX_SAMPLE_VALUES: usize = 1 << 26;

/// The shape of one sample of `spec` as the warm-up feeds it (variable dimensions as 1), and its
/// number of values; `None` when the model leaves the input's rank open.
fn sample_shape(spec: &TensorSpec) -> Option<(Vec<usize>, Option<usize>)> {
    let shape: Vec<usize> = spec
        .shape
        .as_ref()?
        .iter()
        .map(|d| d.unwrap_or(1))
        .collect();
    let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    Some((shape, values))
}

/// Refuses a model whose input samples are larger than [`MAX_SAMPLE_VALUES`].
fn check_sample_sizes(signature: &ModelSignature) -> std::result::Result<(), String> {
    for spec in &signature.inputs {
        match sample_shape(spec) {
            None => {}
            Some((_, Some(values))) if values <= MAX_SAMPLE_VALUES => {}
            Some((shape, _)) => {
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

/// Runs one sample of zeros of each input's declared type through a model instance, so the
/// first request does not pay for lazy initialisation. Best effort: zeros are not every model's
/// valid input (a OneHot depth, a Range's step), and a model whose warm-up fails still serves;
/// the caller reports why. The sample's size was checked at load ([`check_sample_sizes`]).
fn warm_up(
    runnable: &mut dyn Runnable,
    signature: &ModelSignature,
) -> std::result::Result<(), String> {
    let failed = |why: String| format!("warm-up inference failed: {why}");
    let inputs = signature
        .inputs
        .iter()
        .map(|spec| {
            let (shape, values) = sample_shape(spec).ok_or_else(|| {
                failed(format!(
                    "input {:?} declares no shape to make a sample of",
                    spec.name
                ))
            })?;
            let data =
                TensorData::zeros(spec.datatype, values.unwrap_or(0)).map_err(|e| e.message)?;
            Ok(Input::from(Tensor { shape, data }))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    runnable
        .run(inputs)
        .map(|_| ())
        .map_err(|e| failed(e.message))
}
