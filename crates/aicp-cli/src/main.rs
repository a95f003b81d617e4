//! `aicp`: the AI Compute Platform's one binary.

use clap::{Parser, Subcommand};

// Requests allocate and free many short-lived buffers on several threads; mimalloc's
// thread-local free lists make that several times cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod gpu;
mod logging;
#[cfg(feature = "train")]
mod quantize;
mod serve;
#[cfg(feature = "train")]
mod train;

/// Train small neural networks, export them to ONNX, and serve ONNX models.
#[derive(Debug, Parser)]
#[command(name = "aicp", version, about)]
struct Cli {
    /// Log filter, as for RUST_LOG (for example "info" or "aicp=debug").
    #[arg(long, env = "AICP_LOG", default_value = "info", global = true)]
    log: String,

    /// How log lines look on stderr: `text` for people, `json` (one object per line, with the
    /// request's span and its id) for log collectors.
    #[arg(long, env = "AICP_LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Text, global = true)]
    log_format: logging::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every model in a model directory over HTTP.
    // Boxed: its many settings would make every other command's value as large.
    Serve(Box<serve::ServeArgs>),
    /// List the models in a model directory and whether each loads.
    Models(serve::RepositoryArgs),
    /// Run one inference offline from a JSON file and print the top classes.
    Predict(serve::PredictArgs),
    /// Load-test a running server: throughput, latency percentiles and server batch sizes.
    #[cfg(feature = "load-tools")]
    Bench(aicp_bench::BenchArgs),
    /// Soak-test a running server: every protocol at once with bad requests mixed in and a
    /// model reloading, for a set time; errors by kind and the server's memory over time.
    #[cfg(feature = "load-tools")]
    Soak(aicp_bench::soak::SoakArgs),
    /// Check and measure the GPU engine on this machine's NVIDIA GPU.
    Gpu {
        #[command(subcommand)]
        command: gpu::GpuCommand,
    },
    /// Train an MNIST-style classifier and export it to ONNX.
    #[cfg(feature = "train")]
    Train(train::TrainArgs),
    /// Quantise a model in the repository to INT8, calibrated on real samples, and add the
    /// result to the repository as a new model.
    #[cfg(feature = "train")]
    Quantize(quantize::QuantizeArgs),
}

fn main() -> std::process::ExitCode {
    // Before anything probes the CPU through tract (training, calibration, serving).
    aicp_engine::tract::without_amx_kernels();
    let cli = config::parse();
    logging::init(&cli.log, cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::serve(*args),
        Command::Models(args) => serve::models(args),
        Command::Predict(args) => serve::predict(args),
        #[cfg(feature = "load-tools")]
        Command::Bench(args) => aicp_bench::run(args),
        #[cfg(feature = "load-tools")]
        Command::Soak(args) => aicp_bench::soak::run(args),
        Command::Gpu { command } => gpu::run(command),
        #[cfg(feature = "train")]
        Command::Train(args) => train::run(args),
        #[cfg(feature = "train")]
        Command::Quantize(args) => quantize::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped early (`aicp ... | head`) is not an error of ours.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
