//! `aicp quantize`: static INT8 quantisation of a model in the repository
//! ([`aicp_quantize`]), calibrated on real samples, checked on the test split, measured on each
//! engine, and written back as a new model through the same staged write as training.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aicp_core::{ModelMetadata, ModelSignature, PixelScale, Tensor};
use aicp_engine::onnxruntime::{OnnxRuntimeEngine, find_library};
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, LoadOptions, Runnable};
use aicp_quantize::{Method, Options};
use aicp_train::{Dataset, DatasetKind, Fetch};
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The float model to quantise: its name in the repository.
    #[arg(long, env = "AICP_MODEL")]
    model: String,

    /// Its version. Default: the highest.
    #[arg(long)]
    version: Option<u64>,

    /// The calibration samples: an IDX data directory (as `aicp train --data-dir` reads; its
    /// first training images calibrate and its test split measures accuracy), or a `.npy` or
    /// JSON file of model inputs.
    #[arg(long)]
    calibration_data: PathBuf,

    /// How many calibration samples to use (the first ones).
    #[arg(long, default_value_t = 1000)]
    samples: usize,

    /// How each activation's range is read from the calibration values: minmax, percentile
    /// (99.999th) or entropy (TensorRT's KL divergence).
    #[arg(long, default_value = "minmax")]
    method: Method,

    /// One weight scale per output channel instead of one per tensor.
    #[arg(long)]
    per_channel: bool,

    /// The new model's name. Default: `<model>-int8`.
    #[arg(long)]
    name: Option<String>,

    /// Labelled test data (an IDX data directory) to measure accuracy on. Default: the
    /// calibration directory, when it is one.
    #[arg(long)]
    test_data: Option<PathBuf>,

    /// Refuse, and write nothing, if the INT8 model's test accuracy is more than this many
    /// points below the float model's. Without labelled test data, the share of samples
    /// whose top class changes (which bounds the drop) is held to it instead.
    #[arg(long, default_value_t = 1.0)]
    max_accuracy_drop: f64,

    /// Seconds to measure each model on each engine at each batch size; 0 skips measuring.
    #[arg(long, default_value_t = 1.0)]
    bench_seconds: f64,

    /// The model repository to read from and write into.
    #[arg(long, env = "AICP_MODELS", default_value = "models")]
    models: PathBuf,

    /// ONNX Runtime's shared library. Default: ORT_DYLIB_PATH, else an onnxruntime Python
    /// package found on this machine.
    #[arg(long, env = "AICP_ORT_LIB")]
    ort_lib: Option<PathBuf>,
}

/// `quantization_report.json`.
#[derive(Debug, Serialize)]
struct Report {
    model_name: String,
    model_version: u64,
    origin: Origin,
    method: Method,
    per_channel: bool,
    calibration: Source,
    test: Option<Source>,
    accuracy: Option<Accuracy>,
    /// The share of samples (of the test split, else of the calibration samples) whose top
    /// class is the float model's.
    top1_agreement: f64,
    float_bytes: usize,
    int8_bytes: usize,
    speed: Vec<Speed>,
    aicp_version: &'static str,
}

#[derive(Debug, Serialize)]
struct Origin {
    model: String,
    version: u64,
}

#[derive(Debug, Serialize)]
struct Source {
    path: String,
    samples: usize,
}

#[derive(Debug, Serialize)]
struct Accuracy {
    float: f64,
    int8: f64,
    /// float minus int8, in points.
    drop_points: f64,
}

/// Samples per second of both models on one engine at one batch size.
#[derive(Debug, Serialize)]
struct Speed {
    engine: String,
    batch: usize,
    float_samples_per_s: f64,
    int8_samples_per_s: f64,
}

const BENCH_BATCHES: [usize; 2] = [1, 1024];

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.max_accuracy_drop >= 0.0,
        "--max-accuracy-drop must be 0 or more points, got {}",
        args.max_accuracy_drop
    );
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-int8", args.model));
    aicp_core::validate_model_name(&args.model)?;
    aicp_core::validate_model_name(&name)?;
    let model_dir = args.models.join(&args.model);
    let version = match args.version {
        Some(v) => v,
        None => highest_version(&model_dir)?,
    };
    let float_path = model_dir.join(version.to_string()).join("model.onnx");
    let float = std::fs::read(&float_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", float_path.display()))?;
    let metadata_path = model_dir.join("model.toml");
    let metadata = if metadata_path.is_file() {
        ModelMetadata::read(&metadata_path)?
    } else {
        ModelMetadata::default()
    };
    let signature = aicp_engine::onnx::inspect(&float_path)?.signature;
    let sample_shape = sample_shape(&signature)?;
    let sample_values: usize = sample_shape.iter().product();
    let declared_range = metadata.input.as_ref().and_then(|i| i.range);
    let scale = PixelScale::for_range(declared_range.unwrap_or([0.0, 1.0]));

    // Calibration samples, and labelled test samples when there are some.
    let (calibration, test) = read_data(&args, sample_values, scale)?;
    let calibration_count = calibration.len() / sample_values;
    let options = Options {
        method: args.method,
        per_channel: args.per_channel,
        input_range: declared_range,
    };
    let int8 = aicp_quantize::quantize(&float, &calibration, &sample_shape, &options)?;

    // Both models, checked by the engine every server has.
    let scratch = tempfile::tempdir()?;
    let int8_path = scratch.path().join("model.onnx");
    std::fs::write(&int8_path, &int8)?;
    let mut tract_float = load(&TractEngine, &float_path, &signature)?;
    let mut tract_int8 = load(&TractEngine, &int8_path, &signature)?;
    // Accuracy on the test split when there is one; agreement on it, else on the calibration
    // samples.
    let checked_inputs = test.as_ref().map_or(&calibration, |t| &t.inputs);
    let float_top = top_classes(tract_float.as_mut(), checked_inputs, &sample_shape)?;
    let int8_top = top_classes(tract_int8.as_mut(), checked_inputs, &sample_shape)?;
    let agreement = share(float_top.iter().zip(&int8_top), |(a, b)| a == b);
    let accuracy = test.as_ref().map(|test| {
        let accuracy = |top: &[usize]| {
            share(top.iter().zip(&test.labels), |(t, l)| {
                **t == usize::from(**l)
            })
        };
        let (float, int8) = (accuracy(&float_top), accuracy(&int8_top));
        Accuracy {
            float,
            int8,
            drop_points: 100.0 * (float - int8),
        }
    });
    let (checked, lost) = match &accuracy {
        Some(a) => ("test accuracy drop", a.drop_points),
        None => ("top-1 disagreement", 100.0 * (1.0 - agreement)),
    };
    let summary = match &accuracy {
        Some(a) => format!(
            "test accuracy: float {:.2}%, int8 {:.2}% ({:+.2} points); top-1 agreement {:.2}%",
            100.0 * a.float,
            100.0 * a.int8,
            -a.drop_points,
            100.0 * agreement
        ),
        None => format!(
            "top-1 agreement with the float model on the calibration samples {:.2}%",
            100.0 * agreement
        ),
    };
    if lost > args.max_accuracy_drop {
        anyhow::bail!(
            "quantising {} version {version} ({} calibration, {} samples) costs too much: \
             {checked} {lost:.2} points, over --max-accuracy-drop {} ({summary}); nothing was \
             written. Try more calibration samples, --method percentile or entropy, or \
             --per-channel.",
            args.model,
            args.method,
            calibration_count,
            args.max_accuracy_drop
        );
    }

    let speed = if args.bench_seconds > 0.0 {
        let engines = cpu_engines(args.ort_lib.as_deref());
        measure(
            &engines,
            &float_path,
            &int8_path,
            &signature,
            &sample_shape,
            args.bench_seconds,
        )?
    } else {
        Vec::new()
    };

    let destination = args.models.join(&name);
    let next = aicp_train::output::next_free_version(&destination)?;
    let report = Report {
        model_name: name.clone(),
        model_version: next,
        origin: Origin {
            model: args.model.clone(),
            version,
        },
        method: args.method,
        per_channel: args.per_channel,
        calibration: Source {
            path: args.calibration_data.display().to_string(),
            samples: calibration_count,
        },
        test: test.as_ref().map(|t| Source {
            path: t.path.display().to_string(),
            samples: t.labels.len(),
        }),
        accuracy,
        top1_agreement: agreement,
        float_bytes: float.len(),
        int8_bytes: int8.len(),
        speed,
        aicp_version: env!("CARGO_PKG_VERSION"),
    };
    let report_json = serde_json::to_string_pretty(&report)?;
    let written = aicp_train::output::write_new_version(
        &destination,
        &[
            ("model.onnx", &int8),
            ("quantization_report.json", report_json.as_bytes()),
        ],
        &int8_metadata(metadata, &report).to_toml(),
    )?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "quantised {} version {version} to INT8 ({}{}, {} calibration samples from {})",
        args.model,
        args.method,
        if args.per_channel {
            ", per channel"
        } else {
            ""
        },
        calibration_count,
        args.calibration_data.display()
    )?;
    writeln!(out, "{summary}")?;
    writeln!(
        out,
        "size: float {} bytes, int8 {} bytes ({:.2}x smaller)",
        float.len(),
        int8.len(),
        float.len() as f64 / int8.len() as f64
    )?;
    for s in &report.speed {
        writeln!(
            out,
            "speed on {} at batch {}: float {:.0} samples/s, int8 {:.0} samples/s ({:.2}x)",
            s.engine,
            s.batch,
            s.float_samples_per_s,
            s.int8_samples_per_s,
            s.int8_samples_per_s / s.float_samples_per_s
        )?;
    }
    writeln!(
        out,
        "model:    {}",
        written.dir.join("model.onnx").display()
    )?;
    match &written.metadata {
        Some(path) => writeln!(out, "metadata: {}", path.display())?,
        None => writeln!(out, "metadata: kept the existing model.toml")?,
    }
    writeln!(
        out,
        "report:   {}",
        written.dir.join("quantization_report.json").display()
    )?;
    Ok(())
}

/// The highest numbered version in `model_dir`.
fn highest_version(model_dir: &Path) -> anyhow::Result<u64> {
    let next = aicp_train::output::next_free_version(model_dir)?;
    anyhow::ensure!(
        next > 1,
        "no model versions in {} (expected {}/1/model.onnx)",
        model_dir.display(),
        model_dir.display()
    );
    Ok(next - 1)
}

/// One sample's shape: the model's one input's, less the batch, every dimension fixed.
fn sample_shape(signature: &ModelSignature) -> anyhow::Result<Vec<usize>> {
    let [input] = signature.inputs.as_slice() else {
        anyhow::bail!(
            "the model takes {} inputs; quantisation calibrates models with one",
            signature.inputs.len()
        );
    };
    anyhow::ensure!(
        input.datatype == aicp_core::DataType::F32,
        "the model's input {:?} is {}; quantisation needs a float32 input",
        input.name,
        input.datatype
    );
    let dims = input
        .shape
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the model's input {:?} declares no shape", input.name))?;
    dims.iter()
        .skip(1)
        .map(|d| {
            d.ok_or_else(|| {
                anyhow::anyhow!(
                    "the model's input {:?} has a variable dimension besides the batch: {:?}",
                    input.name,
                    input.shape
                )
            })
        })
        .collect()
}

/// Labelled test samples.
struct TestSet {
    path: PathBuf,
    inputs: Vec<f32>,
    labels: Vec<u8>,
}

/// The calibration samples (flat, at most `--samples`) and the test set, if there is one.
fn read_data(
    args: &QuantizeArgs,
    sample_values: usize,
    scale: PixelScale,
) -> anyhow::Result<(Vec<f32>, Option<TestSet>)> {
    let as_inputs = |pixels: &[u8]| pixels.iter().map(|&p| scale.apply(p)).collect::<Vec<_>>();
    let load = |dir: &Path| {
        let data = Dataset::load(DatasetKind::Mnist, dir, &Fetch::Offline)?;
        anyhow::ensure!(
            data.pixels_per_image() == sample_values,
            "{}: its images have {} pixels; the model takes {sample_values} values a sample",
            dir.display(),
            data.pixels_per_image()
        );
        Ok(data)
    };
    let test_of = |data: &Dataset| TestSet {
        path: data.dir.clone(),
        inputs: as_inputs(&data.test.pixels),
        labels: data.test.labels.clone(),
    };
    let (calibration, from_dir) = if args.calibration_data.is_dir() {
        let data = load(&args.calibration_data)?;
        let count = args.samples.min(data.train.len());
        (
            as_inputs(&data.train.pixels[..count * sample_values]),
            Some(data),
        )
    } else {
        let mut values =
            aicp_quantize::samples::read_samples(&args.calibration_data, sample_values)?;
        values.truncate(args.samples * sample_values);
        (values, None)
    };
    let test = match (&args.test_data, &from_dir) {
        (Some(dir), _) => Some(test_of(&load(dir)?)),
        (None, Some(data)) => Some(test_of(data)),
        (None, None) => None,
    };
    Ok((calibration, test))
}

fn load(
    engine: &dyn Engine,
    path: &Path,
    signature: &ModelSignature,
) -> anyhow::Result<Box<dyn Runnable>> {
    engine
        .load(path, signature, &LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{}: {}", engine.kind(), e.message))
}

/// The top class of each sample in `inputs`, run in batches.
fn top_classes(
    model: &mut dyn Runnable,
    inputs: &[f32],
    sample_shape: &[usize],
) -> anyhow::Result<Vec<usize>> {
    let per_sample: usize = sample_shape.iter().product();
    let mut top = Vec::with_capacity(inputs.len() / per_sample);
    for chunk in inputs.chunks(1000 * per_sample) {
        let outputs = model.run(vec![batch_tensor(chunk, sample_shape).into()])?;
        let logits = outputs[0].as_f32().ok_or_else(|| {
            anyhow::anyhow!(
                "the model's first output is {}, not FP32",
                outputs[0].datatype()
            )
        })?;
        let classes = logits.len() / (chunk.len() / per_sample);
        top.extend(aicp_train::trainer::argmax_rows(logits, classes));
    }
    Ok(top)
}

fn batch_tensor(values: &[f32], sample_shape: &[usize]) -> Tensor {
    let per_sample: usize = sample_shape.iter().product();
    let shape = std::iter::once(values.len() / per_sample)
        .chain(sample_shape.iter().copied())
        .collect();
    Tensor {
        shape,
        data: aicp_core::TensorData::F32(values.to_vec()),
    }
}

fn share<T>(items: impl Iterator<Item = T>, hit: impl Fn(&T) -> bool) -> f64 {
    let (mut hits, mut all) = (0usize, 0usize);
    for item in items {
        all += 1;
        hits += usize::from(hit(&item));
    }
    hits as f64 / all.max(1) as f64
}

/// The CPU engines this machine has: tract, and ONNX Runtime when its library is found.
fn cpu_engines(ort_lib: Option<&Path>) -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(TractEngine)];
    match find_library(ort_lib).map(|path| OnnxRuntimeEngine::load(&path)) {
        Some(Ok(engine)) => engines.push(Box::new(engine)),
        Some(Err(e)) => eprintln!("not measured on onnxruntime: {}", e.message),
        None => eprintln!("not measured on onnxruntime: no ONNX Runtime library found"),
    }
    engines
}

/// Samples per second of the float and INT8 models on each engine, at each of
/// [`BENCH_BATCHES`], each run for about `seconds`.
fn measure(
    engines: &[Box<dyn Engine>],
    float: &Path,
    int8: &Path,
    signature: &ModelSignature,
    sample_shape: &[usize],
    seconds: f64,
) -> anyhow::Result<Vec<Speed>> {
    let per_sample: usize = sample_shape.iter().product();
    let mut speeds = Vec::new();
    for engine in engines {
        let mut models = [
            load(engine.as_ref(), float, signature)?,
            load(engine.as_ref(), int8, signature)?,
        ];
        for batch in BENCH_BATCHES {
            // Digit-like values: each a pixel value, so both models see inputs of their range.
            let input: Vec<f32> = (0..batch * per_sample)
                .map(|i| f32::from(((i * 37) % 251) as u8) / 255.0)
                .collect();
            let mut rates = [0.0; 2];
            for (rate, model) in rates.iter_mut().zip(&mut models) {
                *rate = samples_per_second(model.as_mut(), &input, sample_shape, seconds)?;
            }
            speeds.push(Speed {
                engine: engine.kind().to_string(),
                batch,
                float_samples_per_s: rates[0],
                int8_samples_per_s: rates[1],
            });
        }
    }
    Ok(speeds)
}

fn samples_per_second(
    model: &mut dyn Runnable,
    input: &[f32],
    sample_shape: &[usize],
    seconds: f64,
) -> anyhow::Result<f64> {
    let batch = batch_tensor(input, sample_shape);
    let samples = batch.shape[0];
    model.run(vec![batch.clone().into()])?; // warm-up
    // Engines take their inputs by value: each run's copy is made outside the timed part.
    let budget = Duration::from_secs_f64(seconds);
    let (mut spent, mut runs) = (Duration::ZERO, 0usize);
    while runs == 0 || spent < budget {
        let copy = vec![batch.clone().into()];
        let started = Instant::now();
        model.run(copy)?;
        spent += started.elapsed();
        runs += 1;
    }
    Ok((runs * samples) as f64 / spent.as_secs_f64())
}

/// The INT8 model's `model.toml`: the float model's, saying how it was quantised.
fn int8_metadata(mut metadata: ModelMetadata, report: &Report) -> ModelMetadata {
    let what = format!(
        "INT8 ({}) of {} version {}",
        report.method, report.origin.model, report.origin.version
    );
    metadata.description = Some(match metadata.description.take() {
        Some(d) => format!("{d}; {what}"),
        None => what,
    });
    let mut table = toml::Table::new();
    table.insert(
        "origin".into(),
        format!("{} version {}", report.origin.model, report.origin.version).into(),
    );
    table.insert("method".into(), report.method.to_string().into());
    table.insert("per_channel".into(), report.per_channel.into());
    table.insert(
        "calibration_data".into(),
        report.calibration.path.clone().into(),
    );
    table.insert(
        "calibration_samples".into(),
        (report.calibration.samples as i64).into(),
    );
    if let Some(a) = &report.accuracy {
        table.insert("float_test_accuracy".into(), round4(a.float).into());
        table.insert("test_accuracy".into(), round4(a.int8).into());
    }
    metadata.quantization = Some(table);
    metadata
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}
