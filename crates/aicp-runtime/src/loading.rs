//! Loading one model version: reading its signature, choosing its engine (falling back from
//! the GPU to the CPU when the GPU cannot run it), resolving its batching policy, loading and
//! warming up each instance, and starting its scheduler.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use aicp_core::{
    Batching, DataType, ModelMetadata, ModelSignature, OutputKind, PixelScale, TensorSpec,
    panic_message,
};
use aicp_engine::{Engine, LoadOptions, onnx};
use aicp_transform::Transforms;

use crate::engines::Engines;
use crate::policy::{Device, Policy};
use crate::scheduler::Scheduler;
use crate::served::{Runner, ServedModel};
use crate::stats::Stats;
pub use crate::warmup::MAX_SAMPLE_VALUES;
use crate::warmup::{Failure, Warmup, sample_shape};

/// Counts a version load in the metrics (`result`: success or failure).
pub(crate) fn count_load(model: &str, result: &'static str) {
    metrics::counter!("aicp_model_loads_total", "model" => model.to_string(), "result" => result)
        .increment(1);
}

/// What a version is loaded from: its model file, and its model.toml's contents and
/// directory (where the files its warm-up samples name are).
pub(crate) struct VersionSource<'a> {
    pub file: &'a Path,
    pub metadata: &'a Arc<ModelMetadata>,
    pub metadata_dir: Option<&'a Path>,
}

/// Loads one version: its engine, instances, warm-up and scheduler. A panic in an engine (a
/// crafted model, an engine's bug, an integer division by zero in a warm-up) fails this
/// version with the panic's message, and nothing else.
pub(crate) fn load_version(
    name: &str,
    version: u64,
    source: VersionSource<'_>,
    engines: &Engines,
    batching: &Batching,
) -> std::result::Result<ServedModel, String> {
    catch_unwind(AssertUnwindSafe(|| {
        load(name, version, source, engines, batching)
    }))
    .unwrap_or_else(|panic| {
        Err(format!(
            "the engine panicked while loading it: {}",
            panic_message(&*panic)
        ))
    })
}

fn load(
    name: &str,
    version: u64,
    source: VersionSource<'_>,
    engines: &Engines,
    batching: &Batching,
) -> std::result::Result<ServedModel, String> {
    let VersionSource {
        file,
        metadata,
        metadata_dir,
    } = source;
    let info = onnx::inspect(file).map_err(|e| e.message)?;
    check_types(&info.signature)?;
    check_sample_sizes(&info.signature)?;
    let warmup = Warmup::prepare(&metadata.warmup, &info.signature, metadata_dir)?;
    let transforms = Arc::new(Transforms::load(metadata, &info.signature, metadata_dir)?);
    let options = LoadOptions {
        pixels: None,
        model: name.to_string(),
        plan_cache: metadata.plan_cache_size.unwrap_or(engines.plan_cache()),
    };
    let backend = metadata.backend.clone().unwrap_or_default();
    let engine = engines.pick(&backend, info.quantized)?;
    if info.quantized && engine.kind() == aicp_engine::tract::KIND {
        tracing::warn!(
            "model {name:?} version {version} is quantised (INT8); tract runs it on integer \
             kernels but, fed float32, slower than its float original (the bundled MLP at about \
             0.6x at batch 1024, and 1.2x fed 8-bit pixels; ONNX Runtime at over 2.5x): serve \
             it with ONNX Runtime (pip install onnxruntime, or --ort-lib), or serve the float \
             model"
        );
    }
    if let Some(reason) = engines.gpu_unavailable(&backend) {
        tracing::warn!(
            "model {name:?} asks for backend \"{backend}\", but there is no usable GPU \
             ({reason}); {} serves it on the CPU",
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
    let options = LoadOptions { pixels, ..options };
    let load = |engine: &dyn Engine| {
        start_instances(
            (name, version),
            file,
            metadata,
            &info.signature,
            (&options, &warmup),
            engine,
            batching,
        )
    };
    let mut notes = Vec::new();
    let (engine, (policy, stats, scheduler, warmed)) = match load(engine) {
        Ok(started) => (engine, started),
        // A model the GPU engine cannot run (a type or an operator it lacks, an answer that
        // differs from the CPU's) is served on the CPU rather than not at all.
        Err(reason) if engine.kind().device() == Device::Gpu => {
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
        engine: Some(engine.kind()),
        device: engine.device(),
        signature: info.signature,
        pixels,
        output,
        metadata: metadata.clone(),
        transforms,
        policy,
        notes,
        stats,
        runner: Runner::Scheduler(scheduler),
    })
}

/// What [`start_instances`] started, and how the warm-up went (its failure is not the load's).
type Started = (
    Policy,
    Arc<Stats>,
    Scheduler,
    std::result::Result<(), String>,
);

/// Loads a model version's instances on `engine`, warms each up and starts its scheduler, with
/// the batching policy its model.toml, the server's flags and the engine's device give. A
/// declared warm-up sample that fails is the load's failure; the built-in one's is returned.
fn start_instances(
    (name, version): (&str, u64),
    file: &Path,
    metadata: &ModelMetadata,
    signature: &ModelSignature,
    (options, warmup): (&LoadOptions, &Warmup),
    engine: &dyn Engine,
    batching: &Batching,
) -> std::result::Result<Started, String> {
    let device = engine.kind().device();
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
        let load = || engine.load(file, signature, options).map_err(|e| e.message);
        let mut runnable = load()?;
        if warmed.is_ok() {
            warmed = match warmup.run(runnable.as_mut()) {
                Ok(()) => Ok(()),
                Err(Failure::Fatal(reason)) => return Err(reason),
                Err(Failure::Note(reason)) => Err(reason),
                Err(Failure::Panicked(reason)) => {
                    runnable = load()?;
                    Err(reason)
                }
            };
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
