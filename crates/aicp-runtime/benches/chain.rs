//! What a chain costs beyond its steps, in process (no HTTP), one request at a time: the
//! testkit's `two_inputs` model (`a`, `b` -> `sum`, `diff`, rows of 3) alone, and the chain of
//! it twice (the second step fed the first's `sum` and the chain's `b`). The steps are tiny, so
//! the chain's own work (its tensors moved between steps, each step's checks, one more queue
//! hand-off per step) is what separates `chain` from two `step`s. After criterion's
//! measurements both are timed again, interleaved, in this same process, and the overhead is
//! printed; with `AICP_BENCH_JSON=FILE` it is also written to FILE (bench/run.sh reports it).
//!
//!   cargo bench --workspace --bench chain

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicp_core::{Batching, Tensor};
use aicp_runtime::{Engines, InferInput, Repository, Runtime};
use criterion::{Criterion, criterion_group, criterion_main};

// The allocator of the aicp binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests per timed round after criterion's measurements.
const ROUND: usize = 2000;
const ROUNDS: usize = 10;

fn inputs() -> Vec<InferInput> {
    let row = |name: &str, value: f32| InferInput {
        name: Some(name.into()),
        ..Tensor::new(vec![1, 3], vec![value; 3]).unwrap().into()
    };
    vec![row("a", 1.5), row("b", -0.5)]
}

/// One request to `model`, answered.
async fn request(runtime: &Runtime, model: &str) {
    let ticket = runtime.model(model, None).expect("the model");
    runtime
        .run(ticket, inputs(), None)
        .await
        .expect("inference");
}

fn round(executor: &tokio::runtime::Runtime, runtime: &Runtime, model: &str) -> Duration {
    executor.block_on(async {
        let started = Instant::now();
        for _ in 0..ROUND {
            request(runtime, model).await;
        }
        started.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // ONNX Runtime is found in ./.venv, as the server finds it.
    std::env::set_current_dir(aicp_testkit::repo_root()).expect("repository root");
    let engines = Arc::new(Engines::new(
        std::env::var_os("AICP_ORT_LIB").as_deref().map(Path::new),
    ));
    let models = tempfile::tempdir().unwrap();
    aicp_testkit::fixtures::two_inputs(models.path());
    std::fs::create_dir_all(models.path().join("chain")).unwrap();
    std::fs::write(
        models.path().join("chain/model.toml"),
        "[[steps]]\nmodel = \"two_inputs\"\n[[steps]]\nmodel = \"two_inputs\"\n\
         inputs = { a = \"two_inputs.sum\" }\n",
    )
    .unwrap();
    let repository =
        Repository::load(models.path(), engines, &Batching::default()).expect("models");
    let engine = repository
        .get("two_inputs", None)
        .expect("the step")
        .engine_name();
    repository.get("chain", None).expect("the chain");
    let runtime = Runtime::new();
    runtime.set_repository(repository);

    let mut group = c.benchmark_group("chain_c1");
    for (name, model) in [("step", "two_inputs"), ("chain_of_two", "chain")] {
        group.bench_function(name, |b| {
            b.iter(|| executor.block_on(request(&runtime, model)));
        });
    }
    group.finish();

    // Interleaved rounds, so that the machine's drift falls on both alike; the fastest round
    // of each, the one least disturbed by the machine's other work.
    let (mut step, mut chain) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        step = step.min(round(&executor, &runtime, "two_inputs"));
        chain = chain.min(round(&executor, &runtime, "chain"));
    }
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / ROUND as f64;
    let (step_us, chain_us) = (per_request(step), per_request(chain));
    let overhead_us = chain_us - 2.0 * step_us;
    println!(
        "on {engine}: one step {step_us:.1} us, a chain of two {chain_us:.1} us: the chain's own \
         cost {overhead_us:.1} us beyond its steps"
    );
    if let Some(path) = std::env::var_os("AICP_BENCH_JSON") {
        let json = format!(
            "{{\"engine\": \"{engine}\", \"step_us\": {step_us:.2}, \"chain_us\": {chain_us:.2}, \
             \"overhead_us\": {overhead_us:.2}}}\n"
        );
        std::fs::write(path, json).expect("the JSON file");
    }
}

// No plots: they need system fonts (see benches/scheduler.rs).
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
