//! Training for aicp: MNIST-style datasets (read from IDX files, downloaded and verified when
//! missing), an MLP or a CNN trained with burn on the CPU (optionally on augmented images), and
//! its export to an ONNX model that the server loads, with metadata, a JSON report and a plot
//! beside it.
//!
//! [`run`] does all of it for one [`TrainJob`]; the pieces are public for tests and tools.

pub mod augment;
pub mod conv_block;
pub mod dataset;
mod denormals;
pub mod download;
pub mod export;
pub mod model;
pub mod output;
pub mod plot;
pub mod trainer;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use aicp_core::{ImagePreprocess, ImagePreset, InputSpec, ModelMetadata, OutputKind, Preprocess};
use burn::prelude::Device;
use serde::Serialize;

pub use augment::Augmentation;
pub use dataset::{Dataset, DatasetKind, Fetch};
pub use model::{Arch, Shape};
pub use output::{Destination, Written};
pub use trainer::{EpochStats, TrainOptions, Trained};

/// Everything `aicp train` needs to know.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub dataset: DatasetKind,
    pub data_dir: PathBuf,
    pub fetch: Fetch,
    pub options: TrainOptions,
    pub destination: Destination,
    /// Draw progress bars and per-epoch lines on stderr.
    pub show_progress: bool,
}

/// The result of a [`TrainJob`].
#[derive(Debug)]
pub struct TrainOutcome {
    pub trained: Trained,
    pub dataset: Dataset,
    pub report: Report,
    pub written: Written,
}

/// `training_report.json`: what was trained on what, how, and how well.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_name: String,
    pub model_version: Option<u64>,
    pub dataset: DatasetReport,
    pub hyperparameters: TrainOptions,
    pub epochs: Vec<EpochStats>,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub stopped_early: bool,
    pub interrupted: bool,
    /// Accuracy on the test split, evaluated once, after training.
    pub test_accuracy: f64,
    /// Wall time of the training loop (per-epoch validation included).
    pub train_seconds: f64,
    pub labels: Vec<String>,
    /// `confusion_matrix[true][predicted]` counts test samples.
    pub confusion_matrix: Vec<Vec<usize>>,
    pub onnx_bytes: usize,
    pub aicp_version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub dir: String,
    pub image_shape: [usize; 3],
    pub train_samples: usize,
    pub validation_samples: usize,
    pub test_samples: usize,
}

/// Loads the data, trains, evaluates on the test split once, and writes the model with its
/// metadata and report. Setting `stop` ends training early; the best model so far is written.
pub fn run(job: &TrainJob, stop: &AtomicBool) -> anyhow::Result<TrainOutcome> {
    let dataset = Dataset::load(job.dataset, &job.data_dir, &job.fetch)?;
    let features = dataset.pixels_per_image();
    let image = [1, dataset.rows, dataset.cols];
    let classes = dataset.class_count();
    let options = &job.options;
    anyhow::ensure!(
        (0.0..1.0).contains(&options.validation_split),
        "validation split must be in [0, 1), got {}",
        options.validation_split
    );
    // Fail on a bad name or an unwritable place before spending time on training.
    let model_name = match &job.destination {
        Destination::Repository { name, .. } => {
            output::validate_model_name(name)?;
            name.clone()
        }
        Destination::File(path) => path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_end_matches("_model").to_string())
            .unwrap_or_else(|| job.dataset.default_model_name().to_string()),
    };
    let model_version = job.destination.next_version()?;

    let (train, validation) = trainer::split_validation(
        &dataset.train,
        options.validation_split,
        options.seed,
        features,
    );
    let as_inputs = |samples| trainer::Inputs { samples, image };
    let trained = trainer::train(
        &as_inputs(&train),
        &as_inputs(&validation),
        classes,
        options,
        stop,
        job.show_progress,
    )?;

    let test = as_inputs(&dataset.test);
    let test_logits = trainer::logits(&trained.model, &test, &Device::flex());
    let confusion = confusion_matrix(&test_logits, &dataset.test.labels, classes);
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let test_accuracy = correct as f64 / dataset.test.len().max(1) as f64;

    let labels = job.dataset.labels();
    let network = options.shape.describe(image, classes);
    let description = describe(job.dataset, &network);
    let onnx = export::onnx_bytes(
        &trained.model.layers(),
        &export::ExportInfo {
            sample_shape: image,
            doc: &description,
            metadata: vec![
                ("labels".into(), labels.join(",")),
                ("dataset".into(), job.dataset.name().into()),
                ("test_accuracy".into(), format!("{test_accuracy:.4}")),
            ],
        },
    )?;
    let report = Report {
        model_name: model_name.clone(),
        model_version,
        dataset: DatasetReport {
            name: job.dataset.name().into(),
            dir: dataset.dir.display().to_string(),
            image_shape: image,
            train_samples: trained.train_samples,
            validation_samples: trained.validation_samples,
            test_samples: dataset.test.len(),
        },
        hyperparameters: options.clone(),
        epochs: trained.history.clone(),
        best_epoch: trained.best_epoch,
        best_validation_accuracy: trained.best_validation_accuracy,
        stopped_early: trained.stopped_early,
        interrupted: trained.interrupted,
        test_accuracy,
        train_seconds: trained.train_seconds,
        labels: labels.clone(),
        confusion_matrix: confusion,
        onnx_bytes: onnx.len(),
        aicp_version: env!("CARGO_PKG_VERSION"),
    };
    let plot_png = plot::report_png(
        &format!(
            "{model_name}: {network} on {}, test accuracy {:.2}%",
            job.dataset,
            100.0 * test_accuracy
        ),
        &report.epochs,
        &report.confusion_matrix,
        &labels,
    )?;
    let files = output::ModelFiles {
        onnx,
        metadata_toml: metadata(&report, description).to_toml(),
        report_json: serde_json::to_string_pretty(&report)?,
        plot_png,
    };
    let written = job.destination.write(&files)?;
    Ok(TrainOutcome {
        trained,
        dataset,
        report,
        written,
    })
}

fn describe(kind: DatasetKind, network: &str) -> String {
    let what = match kind {
        DatasetKind::Mnist => "handwritten digit classifier",
        DatasetKind::FashionMnist => "clothing classifier",
    };
    format!(
        "{} {what}: {network} with ReLU, trained by aicp train",
        match kind {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
        }
    )
}

fn metadata(report: &Report, description: String) -> ModelMetadata {
    let mut training = toml::Table::new();
    let h = &report.hyperparameters;
    training.insert("dataset".into(), report.dataset.name.clone().into());
    training.insert("data_dir".into(), report.dataset.dir.clone().into());
    training.insert(
        "train_samples".into(),
        (report.dataset.train_samples as i64).into(),
    );
    training.insert(
        "test_samples".into(),
        (report.dataset.test_samples as i64).into(),
    );
    training.insert("architecture".into(), h.shape.arch.name().into());
    training.insert("augment".into(), h.augment.is_some().into());
    training.insert("epochs".into(), (report.epochs.len() as i64).into());
    training.insert("batch_size".into(), (h.batch_size as i64).into());
    training.insert("learning_rate".into(), h.learning_rate.into());
    training.insert("optimizer".into(), "adam".into());
    training.insert("seed".into(), (h.seed as i64).into());
    training.insert("test_accuracy".into(), report.test_accuracy.into());
    ModelMetadata {
        description: Some(description),
        task: Some("classification".into()),
        output: Some(OutputKind::Logits),
        labels: report.labels.clone(),
        input: Some(InputSpec {
            range: Some([0.0, 1.0]),
            normalisation: Some("pixel / 255: 0 is background, 1 is ink (white on black)".into()),
        }),
        backend: None,
        batching: None,
        plan_cache_size: None,
        warmup: Vec::new(),
        // Pictures are made MNIST-like, as the training data was.
        preprocess: Some(Preprocess {
            image: Some(ImagePreprocess {
                preset: Some(ImagePreset::Mnist),
                ..Default::default()
            }),
            text: None,
        }),
        postprocess: None,
        steps: Vec::new(),
        training: Some(training),
        quantization: None,
    }
}

/// `confusion[true][predicted]` from rows of logits.
pub fn confusion_matrix(logits: &[f32], labels: &[u8], classes: usize) -> Vec<Vec<usize>> {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (predicted, &label) in trainer::argmax_rows(logits, classes)
        .into_iter()
        .zip(labels)
    {
        confusion[usize::from(label)][predicted] += 1;
    }
    confusion
}
