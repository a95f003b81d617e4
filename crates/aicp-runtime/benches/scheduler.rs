//! The dynamic batcher's own gain, in process (no HTTP): 64 concurrent submitters each send
//! single-sample requests for the bundled MNIST model through the runtime (validation,
//! scheduler, engine), with dynamic batching off and on. After criterion's measurements both
//! are timed again in this same process and the ratio is printed; with `AICP_BENCH_JSON=FILE`
//! the figures are also written to FILE (bench/run.sh reports them).
//!
//!   cargo bench --workspace --bench scheduler

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicp_core::{Batching, Tensor};
use aicp_runtime::{Engines, Repository, Runtime, ServedModel};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

// The allocator of the aicp binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBMITTERS: usize = 64;
const REQUESTS_PER_SUBMITTER: usize = 64;

/// The repository, from where cargo runs the bench rather than where it was compiled (the
/// build directory is shared between clones).
fn root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../..")
}

fn runtime(engines: &Arc<Engines>, dynamic: bool) -> (Arc<Runtime>, Arc<ServedModel>) {
    let engines = engines.clone();
    let root = root();
    let defaults = Batching {
        dynamic: Some(dynamic),
        ..Batching::default()
    };
    let repository = Repository::load(&root.join("models"), engines, &defaults).expect("models");
    let model = repository.get("mnist", None).expect("the bundled model");
    let runtime = Arc::new(Runtime::new());
    runtime.set_repository(repository);
    (runtime, model)
}

/// Sends SUBMITTERS x REQUESTS_PER_SUBMITTER requests, SUBMITTERS at a time; returns the time.
fn load(
    executor: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    model: &Arc<ServedModel>,
) -> Duration {
    executor.block_on(async {
        let started = Instant::now();
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|s| {
                let (runtime, model) = (runtime.clone(), model.clone());
                tokio::spawn(async move {
                    for r in 0..REQUESTS_PER_SUBMITTER {
                        let value = ((s * REQUESTS_PER_SUBMITTER + r) % 256) as f32 / 255.0;
                        let input = Tensor::new(vec![1, 784], vec![value; 784]).unwrap();
                        let ticket = runtime.model(&model.name, None).expect("the model");
                        runtime
                            .run(ticket, vec![input.into()], None)
                            .await
                            .expect("inference");
                    }
                })
            })
            .collect();
        for submitter in submitters {
            submitter.await.unwrap();
        }
        started.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // ONNX Runtime is found in ./.venv, as the server finds it; it loads once per process.
    std::env::set_current_dir(root()).expect("repository root");
    let engines = Arc::new(Engines::new(
        std::env::var_os("AICP_ORT_LIB").as_deref().map(Path::new),
    ));
    let setups = [
        ("batching_off", runtime(&engines, false)),
        ("batching_on", runtime(&engines, true)),
    ];
    let requests = (SUBMITTERS * REQUESTS_PER_SUBMITTER) as u64;
    let mut group = c.benchmark_group("scheduler_64_submitters");
    group.throughput(Throughput::Elements(requests));
    for (name, (runtime, model)) in &setups {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| load(&executor, runtime, model))
                    .sum()
            });
        });
    }
    group.finish();

    let rate = |(runtime, model): &(Arc<Runtime>, Arc<ServedModel>)| {
        let spent: Duration = (0..20).map(|_| load(&executor, runtime, model)).sum();
        20.0 * requests as f64 / spent.as_secs_f64()
    };
    let off = rate(&setups[0].1);
    let on = rate(&setups[1].1);
    let batch = {
        let stats = setups[1].1.1.stats.snapshot();
        stats.inference_count as f64 / stats.execution_count.max(1) as f64
    };
    for (name, (_, model)) in &setups {
        let stats = model.stats.snapshot();
        let engine_ns: u64 = stats.batches.iter().map(|(_, d)| d.ns).sum();
        println!(
            "{name}: engine time per sample {:.2} us, per run {:.2} us",
            engine_ns as f64 / 1e3 / stats.inference_count.max(1) as f64,
            engine_ns as f64 / 1e3 / stats.execution_count.max(1) as f64
        );
    }
    println!(
        "engine {}, 64 submitters: batching off {off:.0} requests/s, on {on:.0} requests/s (average batch {batch:.1}); on/off {:.2}",
        setups[1].1.1.engine_name(),
        on / off
    );
    if let Some(path) = std::env::var_os("AICP_BENCH_JSON") {
        let json = format!(
            "{{\"batching_off_requests_per_s\": {off:.1}, \"batching_on_requests_per_s\": {on:.1}, \"average_batch\": {batch:.2}}}\n"
        );
        std::fs::write(&path, json).expect("writing AICP_BENCH_JSON");
    }
}

// No plots: they need system fonts, which the plotters features this workspace builds with
// (an embedded font, for the training report) do not load; the figures are in the text output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
