//! In-process inference on the bundled models, tract against ONNX Runtime: the MLP
//! (`models/mnist`) at batch 1 and 1024, the CNN (`models/mnist-cnn`) at batch 1, 64 and 1024.
//! After criterion's measurements, both engines are timed again in this same process and the
//! ratio tract/onnxruntime is printed; with `AICP_BENCH_JSON=FILE` those figures are also
//! written to FILE (bench/run.sh compares the MLP's with the onnxruntime Python package).
//!
//!   scripts/test.sh creates .venv with onnxruntime; then: cargo bench --workspace --bench engines

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use aicp_core::Tensor;
use aicp_engine::onnxruntime::{OnnxRuntimeEngine, find_library};
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, Runnable, onnx};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

// The allocator of the aicp binary: a 3 MB batch freed by the engine is then reused, as in the
// server, rather than returned to the system after every run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bundled models measured, with the batch sizes each is measured at.
const MODELS: [(&str, &str, &[usize]); 2] = [
    ("mlp", "models/mnist/1/model.onnx", &[1, 1024]),
    ("cnn", "models/mnist-cnn/1/model.onnx", &[1, 64, 1024]),
];

/// ONNX Runtime, loaded once: it allows one environment per process.
fn onnxruntime() -> OnnxRuntimeEngine {
    // Where cargo runs the bench from, not where it was compiled (the build directory is shared).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../..");
    // Library discovery looks in ./.venv, and the models are found, from the repository root.
    std::env::set_current_dir(&root).expect("repository root");
    let library = find_library(std::env::var_os("AICP_ORT_LIB").as_deref().map(Path::new)).expect(
        "no ONNX Runtime library: run scripts/test.sh (it creates .venv) or set AICP_ORT_LIB",
    );
    OnnxRuntimeEngine::load(&library).expect("loading ONNX Runtime")
}

fn engines(model: &str, ort: &OnnxRuntimeEngine) -> Vec<(&'static str, Box<dyn Runnable>)> {
    let model = Path::new(model);
    let signature = onnx::inspect(model).expect("bundled model").signature;
    vec![
        (
            "tract",
            TractEngine
                .load(model, &signature, &Default::default())
                .expect("tract"),
        ),
        (
            "onnxruntime",
            ort.load(model, &signature, &Default::default())
                .expect("onnxruntime"),
        ),
    ]
}

fn input(batch: usize) -> Tensor {
    let data = (0..batch * 784).map(|i| (i % 256) as f32 / 255.0).collect();
    Tensor {
        shape: vec![batch, 1, 28, 28],
        data,
    }
}

fn bench(c: &mut Criterion) {
    let ort = onnxruntime();
    let mut figures = Vec::new();
    for (kind, path, batches) in MODELS {
        figures.extend(bench_model(c, &mut engines(path, &ort), kind, batches));
    }
    if let Some(path) = std::env::var_os("AICP_BENCH_JSON") {
        std::fs::write(&path, format!("[{}]\n", figures.join(", ")))
            .expect("writing AICP_BENCH_JSON");
    }
}

/// Criterion's measurements of one model, then the in-process ratio; its JSON figures.
fn bench_model(
    c: &mut Criterion,
    engines: &mut [(&str, Box<dyn Runnable>)],
    kind: &str,
    batches: &[usize],
) -> Vec<String> {
    for &batch in batches {
        let input = input(batch);
        let mut group = c.benchmark_group(format!("{kind}_batch_{batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        for (name, model) in engines.iter_mut() {
            group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
                // Engines take their inputs by value; the copy made for each run is not timed.
                b.iter_batched(
                    || vec![input.clone().into()],
                    |inputs| black_box(model.run(inputs).expect("inference")),
                    BatchSize::LargeInput,
                );
            });
        }
        group.finish();
    }
    let mut figures = Vec::new();
    for &batch in batches {
        let input = input(batch);
        // About the same work per round whatever the model and batch.
        let probe = Instant::now();
        black_box(
            engines[0]
                .1
                .run(vec![input.clone().into()])
                .expect("inference"),
        );
        let once = probe.elapsed().as_secs_f64().max(1e-6);
        let runs = ((2.0 / once) as usize).clamp(50, 20_000);
        // The best of five rounds: on a shared machine, noise only ever slows a round down.
        let mean = |model: &mut dyn Runnable| {
            (0..5)
                .map(|_| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..runs / 5 {
                        let inputs = vec![input.clone().into()];
                        let started = Instant::now();
                        black_box(model.run(inputs).expect("inference"));
                        spent += started.elapsed();
                    }
                    spent.as_secs_f64() / (runs / 5) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let tract = mean(engines[0].1.as_mut());
        let ort = mean(engines[1].1.as_mut());
        println!(
            "{kind} batch {batch:>4}: tract {:>9.1} us, onnxruntime {:>9.1} us, {:>8.0} vs {:>8.0} samples/s; tract/onnxruntime time ratio {:.2}",
            tract * 1e6,
            ort * 1e6,
            batch as f64 / tract,
            batch as f64 / ort,
            tract / ort
        );
        figures.push(format!(
            r#"{{"model": "{kind}", "batch": {batch}, "tract_samples_per_s": {:.1}, "onnxruntime_samples_per_s": {:.1}}}"#,
            batch as f64 / tract,
            batch as f64 / ort
        ));
    }
    figures
}

// No plots: they need system fonts, which the plotters features this workspace builds with
// (an embedded font, for the training report) do not load; the figures are in the text output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
