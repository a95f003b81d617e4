//! `aicp train`: the command line over `aicp_train::run`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aicp_train::{
    Arch, Augmentation, DatasetKind, Destination, Fetch, Shape, TrainJob, TrainOptions,
};
use clap::Args;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The dataset: mnist or fashion-mnist.
    #[arg(long, env = "AICP_DATASET", default_value = "mnist")]
    dataset: DatasetKind,

    /// Where the dataset's IDX files are (gzipped or not); missing files are downloaded here.
    /// Default: data/DATASET.
    #[arg(long, env = "AICP_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Never download: fail if a dataset file is missing.
    #[arg(long, env = "AICP_OFFLINE")]
    offline: bool,

    /// Download from this mirror instead of the public ones (repeat to try several in order).
    #[arg(long = "mirror", env = "AICP_MIRRORS", value_delimiter = ',')]
    mirrors: Vec<String>,

    #[arg(long, env = "AICP_EPOCHS", default_value_t = 5)]
    epochs: usize,

    #[arg(long, env = "AICP_BATCH_SIZE", default_value_t = 64)]
    batch_size: usize,

    #[arg(long, env = "AICP_LEARNING_RATE", default_value_t = 1e-3)]
    learning_rate: f64,

    /// The network: mlp (dense layers, the seed's model) or cnn (convolutions, then dense
    /// layers).
    #[arg(long, env = "AICP_ARCH", default_value = "mlp")]
    arch: Arch,

    /// Hidden dense layer widths, comma-separated. Default: 128,64 for mlp, 128 for cnn.
    #[arg(long, env = "AICP_HIDDEN", value_delimiter = ',')]
    hidden: Option<Vec<usize>>,

    /// cnn: output channels of each block (a convolution, ReLU and 2x2 max pooling),
    /// comma-separated. Default: 16,32.
    #[arg(long, env = "AICP_CHANNELS", value_delimiter = ',')]
    channels: Option<Vec<usize>>,

    /// cnn: the side of each convolution's square kernel. Default: 5.
    #[arg(long, env = "AICP_KERNEL")]
    kernel: Option<usize>,

    /// cnn: the probability of dropping an activation before each dense layer, in training
    /// only. Default: 0.25.
    #[arg(long, env = "AICP_DROPOUT")]
    dropout: Option<f64>,

    /// Redraw each training image with a small random shift (up to 2 pixels), rotation (up to
    /// 10 degrees) and scaling (up to 10%) each epoch, drawn from the seed.
    #[arg(long, env = "AICP_AUGMENT")]
    augment: bool,

    /// Fraction of the training data held out to choose the best epoch.
    #[arg(long, env = "AICP_VALIDATION_SPLIT", default_value_t = 0.1)]
    validation_split: f64,

    /// Stop after this many epochs without a better validation accuracy.
    #[arg(long, env = "AICP_PATIENCE")]
    patience: Option<usize>,

    /// CPU threads for training (one is fastest for the MLP, two help a CNN; see docs/performance/training.md).
    #[arg(long, env = "AICP_THREADS", default_value_t = 1)]
    threads: usize,

    /// Seed for initialisation, the validation split and shuffling.
    #[arg(long, env = "AICP_SEED", default_value_t = 42)]
    seed: u64,

    /// Model name in the repository. Default: the dataset's name.
    #[arg(long, env = "AICP_NAME")]
    name: Option<String>,

    /// The model repository to add a new version to.
    #[arg(long, env = "AICP_MODELS", default_value = "models")]
    models: PathBuf,

    /// Write the model to this .onnx file instead (metadata beside it as .toml).
    #[arg(long, env = "AICP_OUTPUT", conflicts_with = "name")]
    output: Option<PathBuf>,

    /// No progress bars or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let shape = network_shape(&args)?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from("data").join(args.dataset.name()));
    let fetch = if args.offline {
        Fetch::Offline
    } else if args.mirrors.is_empty() {
        Fetch::Download {
            mirrors: args.dataset.mirrors(),
        }
    } else {
        Fetch::Download {
            mirrors: args.mirrors,
        }
    };
    let destination = match args.output {
        Some(path) => Destination::File(path),
        None => Destination::Repository {
            models_dir: args.models,
            name: args
                .name
                .unwrap_or_else(|| args.dataset.default_model_name().to_string()),
        },
    };
    let job = TrainJob {
        dataset: args.dataset,
        data_dir,
        fetch,
        options: TrainOptions {
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            shape,
            augment: args.augment.then(Augmentation::default),
            validation_split: args.validation_split,
            patience: args.patience,
            threads: args.threads,
            seed: args.seed,
        },
        destination,
        show_progress: !args.quiet,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without writing a model");
            std::process::exit(130);
        }
        eprintln!("\nstopping: the best model so far will be written (Ctrl-C again to abort)");
    })?;

    let outcome = aicp_train::run(&job, &stop)?;
    let report = &outcome.report;
    let written = &outcome.written;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "trained {} on {} ({} train / {} validation / {} test samples) in {:.2} s{}",
        report.model_name,
        report.dataset.name,
        report.dataset.train_samples,
        report.dataset.validation_samples,
        report.dataset.test_samples,
        report.train_seconds,
        if report.interrupted {
            " (interrupted)"
        } else if report.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "best epoch {}: validation accuracy {:.4}; test accuracy {:.4}",
        report.best_epoch, report.best_validation_accuracy, report.test_accuracy
    )?;
    writeln!(
        out,
        "model:    {} ({} bytes)",
        written.model.display(),
        report.onnx_bytes
    )?;
    match &written.metadata {
        Some(path) => writeln!(out, "metadata: {}", path.display())?,
        None => writeln!(out, "metadata: kept the existing model.toml")?,
    }
    writeln!(out, "report:   {}", written.report.display())?;
    writeln!(out, "plot:     {}", written.plot.display())?;
    Ok(())
}

/// The network the flags describe: `--arch`'s defaults, with the given flags in their place.
fn network_shape(args: &TrainArgs) -> anyhow::Result<Shape> {
    let mut shape = Shape::default_for(args.arch);
    if args.arch == Arch::Mlp {
        let cnn_only = [
            ("--channels", args.channels.is_some()),
            ("--kernel", args.kernel.is_some()),
            ("--dropout", args.dropout.is_some()),
        ];
        if let Some((flag, _)) = cnn_only.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} applies to --arch cnn, not to --arch mlp");
        }
    }
    if let Some(hidden) = &args.hidden {
        shape.hidden = hidden.clone();
    }
    if let Some(channels) = &args.channels {
        shape.channels = channels.clone();
    }
    shape.kernel = args.kernel.unwrap_or(shape.kernel);
    shape.dropout = args.dropout.unwrap_or(shape.dropout);
    Ok(shape)
}
