//! `aicp quantize`: INT8 quantisation of a model in the repository ([`aicp_quantize`]):
//! static, calibrated on real samples of any inputs and shapes, or dynamic; checked against
//! the float model (accuracy on labelled data, else top-1 agreement for a classifier and the
//! outputs' relative error for any model), measured on each engine, and written back as a new
//! model through the same staged write as training.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aicp_core::{Input, ModelMetadata, ModelSignature, PixelScale, Tensor, TensorData};
use aicp_engine::onnxruntime::{OnnxRuntimeEngine, find_library};
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, LoadOptions, Runnable};
use aicp_quantize::mixed::{output_errors, relative_error, run_all};
use aicp_quantize::{Method, Options, Sample};
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

    /// The calibration samples (needed by the static methods; with `dynamic`, only to check
    /// the result): an IDX data directory (as `aicp train --data-dir` reads; its first
    /// training images calibrate and its test split measures accuracy), a directory of
    /// pictures (PNG, JPEG, ...; prepared as the model's `[preprocess.image]` says), or a
    /// `.npy`, `.npz` (one array per input name) or JSON file of model inputs, or a directory
    /// of such files (one per shape, for a model whose samples differ in shape).
    #[arg(long)]
    calibration_data: Option<PathBuf>,

    /// How many calibration samples to use (the first ones).
    #[arg(long, default_value_t = 1000)]
    samples: usize,

    /// minmax, percentile (99.999th) or entropy (TensorRT's KL divergence): static, each
    /// activation's range read from the calibration values that way; or dynamic: int8 MatMul
    /// and Gemm weights, activations quantised at run time (for text encoders; no calibration).
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
    /// whose top class changes (for a classifier; it bounds the drop) is held to it instead.
    #[arg(long, default_value_t = 1.0)]
    max_accuracy_drop: f64,

    /// The largest relative error the INT8 model's outputs may have against the float
    /// model's (the norm of the difference over the norm of the float output, averaged over
    /// the checked samples; the worst output counts). When the model with every Conv, Gemm
    /// and MatMul in INT8 misses it, the operators most sensitive to INT8 stay in float: the
    /// fewest that meet it. If none do, nothing is written.
    #[arg(long, default_value_t = 0.1)]
    max_output_error: f64,

    /// Quantise every Conv, Gemm and MatMul, and refuse rather than keep any in float when
    /// the outputs miss --max-output-error.
    #[arg(long)]
    all_int8: bool,

    /// Seconds to measure each model on each engine; 0 skips measuring.
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
    calibration: Option<SamplesFrom>,
    test: Option<SamplesFrom>,
    accuracy: Option<Accuracy>,
    /// For a classifier: the share of checked samples whose top class is the float model's.
    top1_agreement: Option<f64>,
    /// Each output's relative error against the float model (norm of the difference over
    /// the float output's norm), averaged over the checked samples, by output name.
    output_error: Vec<(String, f64)>,
    /// How many operators (Conv, Gemm, MatMul) could be quantised.
    operators: usize,
    /// Those of them kept in float to meet `--max-output-error`, the most sensitive first.
    kept_in_float: Vec<String>,
    /// The largest relative difference between the INT8 model's outputs on tract and on ONNX
    /// Runtime, over the checked samples; absent without ONNX Runtime.
    engines_differ: Option<f64>,
    /// How long the quantisation took (calibration included), in seconds.
    quantize_seconds: f64,
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
struct SamplesFrom {
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

/// Batch sizes measured for a model of one input with a fixed sample shape; any other model
/// is measured on its first checked sample, as it is.
const BENCH_BATCHES: [usize; 2] = [1, 1024];
/// The most input values one measured batch holds.
const BENCH_VALUES: usize = 1 << 20;
/// Samples checked against the float model, at most.
const MAX_CHECKED: usize = 2000;

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.max_accuracy_drop >= 0.0,
        "--max-accuracy-drop must be 0 or more points, got {}",
        args.max_accuracy_drop
    );
    anyhow::ensure!(
        args.max_output_error >= 0.0,
        "--max-output-error must be 0 or more, got {}",
        args.max_output_error
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
    let declared_range = metadata.input.as_ref().and_then(|i| i.range);

    // Samples (checked against the model's inputs before any work), and labelled test
    // samples when there are some.
    let data = Data::read(&args, &signature, &metadata, &model_dir)?;
    anyhow::ensure!(
        args.method == Method::Dynamic || !data.calibration.is_empty(),
        "--method {} calibrates: give --calibration-data",
        args.method
    );
    let options = Options {
        method: args.method,
        per_channel: args.per_channel,
        input_range: declared_range,
        max_output_error: (!args.all_int8).then_some(args.max_output_error),
    };
    let engines = cpu_engines(args.ort_lib.as_deref());
    // The engine that calibrates and checks: ONNX Runtime where found (it runs whatever its
    // own quantiser takes), else tract.
    let engine = engines.last().expect("tract is always there").as_ref();
    let started = Instant::now();
    let quantized =
        aicp_quantize::quantize(engine, &float, &signature, &data.calibration, &options)?;
    let int8 = quantized.model;
    let quantize_seconds = started.elapsed().as_secs_f64();
    let opsets = [&float, &int8].map(|bytes| aicp_quantize::opset::of_bytes(bytes));
    if opsets[0] != opsets[1] {
        eprintln!(
            "moved the model from ONNX opset {} to {} for weights per channel",
            opsets[0].unwrap_or_default(),
            opsets[1].unwrap_or_default()
        );
    }

    let scratch = tempfile::tempdir()?;
    let int8_path = scratch.path().join("model.onnx");
    std::fs::write(&int8_path, &int8)?;
    let checked = data.checked();
    let mut float_model = load(engine, &float_path, &signature)?;
    let mut int8_model = load(engine, &int8_path, &signature)?;
    let float_outputs = run_all(float_model.as_mut(), checked)?;
    let int8_outputs = run_all(int8_model.as_mut(), checked)?;
    let comparison = Comparison::of(&signature, &float_outputs, &int8_outputs);
    let engines_differ = match engines.as_slice() {
        [tract, _ort] if !checked.is_empty() => {
            let mut on_tract = load(tract.as_ref(), &int8_path, &signature)?;
            Some(largest_difference(
                &run_all(on_tract.as_mut(), checked)?,
                &int8_outputs,
            ))
        }
        _ => None,
    };
    let accuracy = data.test.as_ref().and_then(|test| {
        let top = |outputs: &[Vec<Tensor>]| top_classes(outputs);
        let (float_top, int8_top) = (top(&float_outputs)?, top(&int8_outputs)?);
        let accuracy = |top: &[usize]| {
            share(top.iter().zip(&test.labels), |(t, l)| {
                **t == usize::from(**l)
            })
        };
        let (float, int8) = (accuracy(&float_top), accuracy(&int8_top));
        Some(Accuracy {
            float,
            int8,
            drop_points: 100.0 * (float - int8),
        })
    });
    let summary = comparison.summary(accuracy.as_ref(), data.test.is_some());
    let lost = match (&accuracy, comparison.top1_agreement) {
        (Some(a), _) => Some(("test accuracy drop", a.drop_points)),
        (None, Some(agreement)) => Some(("top-1 disagreement", 100.0 * (1.0 - agreement))),
        (None, None) => None,
    };
    let refuse = |why: String| {
        anyhow::anyhow!(
            "quantising {} version {version} ({}, {} calibration samples) costs too much: {why} \
             ({summary}); nothing was written. Try more calibration samples, --method \
             percentile or entropy, --per-channel, or a larger bound.",
            args.model,
            args.method,
            data.calibration.len(),
        )
    };
    if let Some((checked, lost)) = lost
        && lost > args.max_accuracy_drop
    {
        return Err(refuse(format!(
            "{checked} {lost:.2} points, over --max-accuracy-drop {}",
            args.max_accuracy_drop
        )));
    }
    if let Some((output, error)) = comparison.worst()
        && error > args.max_output_error
    {
        return Err(refuse(format!(
            "output {output:?} off by {error:.4} (relative), over --max-output-error {}",
            args.max_output_error
        )));
    }

    let speed = if args.bench_seconds > 0.0 && !checked.is_empty() {
        measure(
            &engines,
            (&float_path, &int8_path),
            &signature,
            &checked[0],
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
        calibration: data.from.as_ref().map(|path| SamplesFrom {
            path: path.display().to_string(),
            samples: data.calibration.len(),
        }),
        test: data.test.as_ref().map(|t| SamplesFrom {
            path: t.path.display().to_string(),
            samples: t.labels.len(),
        }),
        accuracy,
        top1_agreement: comparison.top1_agreement,
        output_error: comparison.errors.clone(),
        operators: quantized.operators,
        kept_in_float: quantized.kept_in_float.clone(),
        engines_differ,
        quantize_seconds,
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
    let from = match &data.from {
        Some(path) => format!(
            ", {} {} samples from {}",
            data.calibration.len(),
            if args.method == Method::Dynamic {
                "checking"
            } else {
                "calibration"
            },
            path.display()
        ),
        None => String::new(),
    };
    writeln!(
        out,
        "quantised {} version {version} to INT8 ({}{}{from}) in {quantize_seconds:.2} s",
        args.model,
        args.method,
        if args.per_channel {
            ", per channel"
        } else {
            ""
        },
    )?;
    match report.kept_in_float.as_slice() {
        [] => writeln!(out, "operators in INT8: all {}", report.operators)?,
        kept => writeln!(
            out,
            "operators in INT8: {} of {}; kept in float to meet --max-output-error {}, the \
             most sensitive first: {}",
            report.operators - kept.len(),
            report.operators,
            args.max_output_error,
            kept.join(", ")
        )?,
    }
    writeln!(out, "{summary}")?;
    if let Some(differ) = engines_differ {
        writeln!(
            out,
            "the INT8 model on tract and on onnxruntime: outputs within {differ:.2e} (relative)"
        )?;
    }
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

/// Labelled test samples.
struct TestSet {
    path: PathBuf,
    samples: Vec<Sample>,
    labels: Vec<u8>,
}

/// The samples a quantisation reads.
struct Data {
    /// Where the calibration samples came from.
    from: Option<PathBuf>,
    calibration: Vec<Sample>,
    test: Option<TestSet>,
}

impl Data {
    /// The calibration samples (at most `--samples`) and the test set, if there is one.
    fn read(
        args: &QuantizeArgs,
        signature: &ModelSignature,
        metadata: &ModelMetadata,
        model_dir: &Path,
    ) -> anyhow::Result<Self> {
        let scale = PixelScale::for_range(
            metadata
                .input
                .as_ref()
                .and_then(|i| i.range)
                .unwrap_or([0.0, 1.0]),
        );
        let test_of = |data: &Dataset| -> anyhow::Result<TestSet> {
            Ok(TestSet {
                path: data.dir.clone(),
                samples: digit_samples(&data.test.pixels, signature, scale)?,
                labels: data.test.labels.clone(),
            })
        };
        let mut from_idx = None;
        let calibration = match &args.calibration_data {
            None => Vec::new(),
            Some(path) if is_idx(path) => {
                let data = Dataset::load(DatasetKind::Mnist, path, &Fetch::Offline)?;
                let per_image = data.pixels_per_image();
                let count = args.samples.min(data.train.len());
                let samples =
                    digit_samples(&data.train.pixels[..count * per_image], signature, scale)?;
                from_idx = Some(data);
                samples
            }
            Some(path) if has_pictures(path) => {
                picture_samples(path, signature, metadata, model_dir, scale, args.samples)?
            }
            Some(path) => {
                let mut samples = aicp_quantize::samples::read(path, signature)?;
                samples.truncate(args.samples);
                samples
            }
        };
        let test = match (&args.test_data, &from_idx) {
            (Some(dir), _) => Some(test_of(&Dataset::load(
                DatasetKind::Mnist,
                dir,
                &Fetch::Offline,
            )?)?),
            (None, Some(data)) => Some(test_of(data)?),
            (None, None) => None,
        };
        Ok(Self {
            from: args.calibration_data.clone(),
            calibration,
            test,
        })
    }

    /// The samples the INT8 model is checked on: the test split, else the calibration
    /// samples (at most [`MAX_CHECKED`]).
    fn checked(&self) -> &[Sample] {
        let all = self
            .test
            .as_ref()
            .map_or(self.calibration.as_slice(), |t| t.samples.as_slice());
        &all[..all.len().min(MAX_CHECKED)]
    }
}

/// Whether `path` is an IDX data directory (MNIST's files).
fn is_idx(path: &Path) -> bool {
    path.is_dir()
        && std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.contains("idx3-ubyte"))
            })
}

const PICTURE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "gif", "bmp", "webp"];

fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICTURE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `path` is a directory of pictures.
fn has_pictures(path: &Path) -> bool {
    path.is_dir()
        && std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| is_picture(&entry.path()))
}

/// 8-bit digits (28 x 28 each, flat) as samples of the model's one input, mapped onto its
/// declared range.
fn digit_samples(
    pixels: &[u8],
    signature: &ModelSignature,
    scale: PixelScale,
) -> anyhow::Result<Vec<Sample>> {
    let [input] = signature.inputs.as_slice() else {
        anyhow::bail!(
            "an IDX directory holds pictures for a model of one input; this one takes {}",
            signature.inputs.len()
        );
    };
    let per_sample = input.sample_elements().unwrap_or(0);
    anyhow::ensure!(
        input.datatype == aicp_core::DataType::F32 && per_sample > 0,
        "the model's input {:?} is {} shaped {:?}; IDX pictures feed a float32 input of a \
         fixed sample shape",
        input.name,
        input.datatype,
        input.display_shape()
    );
    let images = pixels.len() / (28 * 28);
    anyhow::ensure!(
        per_sample == 28 * 28,
        "the IDX pictures have 784 pixels; the model takes {per_sample} values a sample"
    );
    let shape = one_of(input);
    Ok((0..images)
        .map(|i| {
            let values = pixels[i * per_sample..(i + 1) * per_sample]
                .iter()
                .map(|&p| scale.apply(p))
                .collect::<Vec<f32>>();
            Sample(vec![Tensor {
                shape: shape.clone(),
                data: TensorData::F32(values),
            }])
        })
        .collect())
}

/// One sample's shape for `input`: a batch of one, then its fixed dimensions.
fn one_of(input: &aicp_core::TensorSpec) -> Vec<usize> {
    let dims = input.shape.clone().unwrap_or_default();
    std::iter::once(1)
        .chain(dims.iter().skip(1).map(|d| d.unwrap_or(1)))
        .collect()
}

/// The pictures in `dir` (in name order, at most `limit`), prepared as the model's
/// `[preprocess.image]` says, as samples of its one input.
fn picture_samples(
    dir: &Path,
    signature: &ModelSignature,
    metadata: &ModelMetadata,
    model_dir: &Path,
    scale: PixelScale,
    limit: usize,
) -> anyhow::Result<Vec<Sample>> {
    let transforms = aicp_transform::Transforms::load(metadata, signature, Some(model_dir))
        .map_err(|e| anyhow::anyhow!("model.toml: {e}"))?;
    let Some(image) = &transforms.image else {
        anyhow::bail!(
            "{} holds pictures, and the model's model.toml has no [preprocess.image] to say \
             how a picture becomes its input",
            dir.display()
        );
    };
    anyhow::ensure!(
        signature.inputs.len() == 1,
        "pictures feed a model of one input; this one takes {}",
        signature.inputs.len()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| is_picture(path))
        .collect();
    files.sort();
    files.truncate(limit);
    files
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file)?;
            let picture = image
                .prepare(&bytes, aicp_image::DecodeLimits::default())
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let tensor = match picture.sample {
                aicp_transform::image::Sample::Digit(digit) => Tensor {
                    shape: one_of(&signature.inputs[0]),
                    data: TensorData::F32(digit.pixels.iter().map(|&p| scale.apply(p)).collect()),
                },
                aicp_transform::image::Sample::Tensor { shape, data } => Tensor {
                    shape: std::iter::once(1).chain(shape).collect(),
                    data,
                },
            };
            Ok(Sample(vec![tensor]))
        })
        .collect()
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

/// The INT8 model's outputs against the float model's.
struct Comparison {
    /// For a classifier (a first output of rows of several float scores).
    top1_agreement: Option<f64>,
    errors: Vec<(String, f64)>,
}

impl Comparison {
    fn of(signature: &ModelSignature, float: &[Vec<Tensor>], int8: &[Vec<Tensor>]) -> Self {
        let top1_agreement = match (top_classes(float), top_classes(int8)) {
            (Some(a), Some(b)) => Some(share(a.iter().zip(&b), |(a, b)| a == b)),
            _ => None,
        };
        let errors = signature
            .outputs
            .iter()
            .zip(output_errors(float, int8))
            .filter_map(|(spec, error)| Some((spec.name.clone(), error?)))
            .collect();
        Self {
            top1_agreement,
            errors,
        }
    }

    /// The output that differs most, and by how much.
    fn worst(&self) -> Option<(&str, f64)> {
        self.errors
            .iter()
            .map(|(name, error)| (name.as_str(), *error))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn summary(&self, accuracy: Option<&Accuracy>, labelled: bool) -> String {
        let mut parts = Vec::new();
        if let Some(a) = accuracy {
            parts.push(format!(
                "test accuracy: float {:.2}%, int8 {:.2}% ({:+.2} points)",
                100.0 * a.float,
                100.0 * a.int8,
                -a.drop_points
            ));
        }
        let on = if labelled {
            "the test samples"
        } else {
            "the calibration samples"
        };
        if let Some(agreement) = self.top1_agreement {
            parts.push(format!(
                "top-1 agreement with the float model on {on} {:.2}%",
                100.0 * agreement
            ));
        }
        if let Some((output, error)) = self.worst() {
            parts.push(format!(
                "relative error against the float model {error:.4} (output {output:?})"
            ));
        }
        if parts.is_empty() {
            return "not checked: no samples (give --calibration-data to compare the \
                    outputs with the float model's)"
                .into();
        }
        parts.join("; ")
    }
}

/// The largest relative error between two runs' outputs, output by output.
fn largest_difference(a: &[Vec<Tensor>], b: &[Vec<Tensor>]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).filter_map(|(x, y)| relative_error(y, x)))
        .fold(0.0, f64::max)
}

/// The top class of every row of each sample's first output, when it is a classifier's: float
/// rows of more than one score.
fn top_classes(outputs: &[Vec<Tensor>]) -> Option<Vec<usize>> {
    if outputs.is_empty() {
        return None;
    }
    let mut top = Vec::new();
    for sample in outputs {
        let first = sample.first()?;
        let [rows, classes] = first.shape[..] else {
            return None;
        };
        if classes < 2 {
            return None;
        }
        let scores = first.data.to_f32()?;
        top.extend(aicp_train::trainer::argmax_rows(
            &scores,
            scores.len() / rows.max(1),
        ));
    }
    Some(top)
}

fn share<T>(items: impl Iterator<Item = T>, hit: impl Fn(&T) -> bool) -> f64 {
    let (mut hits, mut all) = (0usize, 0usize);
    for item in items {
        all += 1;
        hits += usize::from(hit(&item));
    }
    hits as f64 / all.max(1) as f64
}

/// The CPU engines this machine has: tract, then ONNX Runtime when its library is found.
fn cpu_engines(ort_lib: Option<&Path>) -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(TractEngine)];
    match find_library(ort_lib).map(|path| OnnxRuntimeEngine::load(&path)) {
        Some(Ok(engine)) => engines.push(Box::new(engine)),
        Some(Err(e)) => eprintln!("onnxruntime not used: {}", e.message),
        None => eprintln!("onnxruntime not used: no ONNX Runtime library found"),
    }
    engines
}

/// Samples per second of the float and INT8 models on each engine, each run for about
/// `seconds`: at each of [`BENCH_BATCHES`] for a model of one input with a fixed sample
/// shape, else on `sample` as it is.
fn measure(
    engines: &[Box<dyn Engine>],
    (float, int8): (&Path, &Path),
    signature: &ModelSignature,
    sample: &Sample,
    seconds: f64,
) -> anyhow::Result<Vec<Speed>> {
    let batches: Vec<Sample> = match signature.inputs.as_slice() {
        [input] if input.varies_first() && input.sample_elements().is_some() => BENCH_BATCHES
            .iter()
            // No batch of more than BENCH_VALUES values: 1024 digits, a few photographs.
            .map(|&batch| {
                batch
                    .min(BENCH_VALUES / input.sample_elements().unwrap_or(1))
                    .max(1)
            })
            .collect::<std::collections::BTreeSet<usize>>()
            .into_iter()
            .map(|batch| {
                let one = &sample.0[0];
                let parts = vec![&one.data; batch];
                let mut shape = one.shape.clone();
                shape[0] *= batch;
                Ok(Sample(vec![Tensor {
                    shape,
                    data: TensorData::concat(&parts)?,
                }]))
            })
            .collect::<aicp_core::Result<_>>()?,
        _ => vec![sample.clone()],
    };
    let mut speeds = Vec::new();
    for engine in engines {
        let mut models = [
            load(engine.as_ref(), float, signature)?,
            load(engine.as_ref(), int8, signature)?,
        ];
        for batch in &batches {
            let mut rates = [0.0; 2];
            for (rate, model) in rates.iter_mut().zip(&mut models) {
                *rate = samples_per_second(model.as_mut(), batch, seconds)?;
            }
            speeds.push(Speed {
                engine: engine.kind().to_string(),
                batch: batch.0[0].shape.first().copied().unwrap_or(1),
                float_samples_per_s: rates[0],
                int8_samples_per_s: rates[1],
            });
        }
    }
    Ok(speeds)
}

fn samples_per_second(
    model: &mut dyn Runnable,
    sample: &Sample,
    seconds: f64,
) -> anyhow::Result<f64> {
    let samples = sample.0[0].shape.first().copied().unwrap_or(1);
    let inputs = || {
        sample
            .0
            .iter()
            .cloned()
            .map(Input::from)
            .collect::<Vec<_>>()
    };
    model.run(inputs())?; // warm-up
    // Engines take their inputs by value: each run's copy is made outside the timed part.
    let budget = Duration::from_secs_f64(seconds);
    let (mut spent, mut runs) = (Duration::ZERO, 0usize);
    while runs == 0 || spent < budget {
        let copy = inputs();
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
    if let Some(calibration) = &report.calibration {
        table.insert("calibration_data".into(), calibration.path.clone().into());
        table.insert(
            "calibration_samples".into(),
            (calibration.samples as i64).into(),
        );
    }
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
