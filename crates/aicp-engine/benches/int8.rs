//! INT8 models in process, at batch 1024 on one thread, on each engine: each float model
//! against its `aicp quantize` model (fed float32, and fed 8-bit pixels as its quantised
//! input). On ONNX Runtime also against onnxruntime's own `quantize_static` model of it; on
//! tract also against the QDQ graph as written, without the engine's integer rewrite
//! ([`aicp_engine::integer`]). Criterion measures each; then all are timed again in this same
//! process and the ratios printed.
//!
//! `bench/quantize.sh` makes the models (in `AICP_INT8_MODELS`, as `<model>-float.onnx`,
//! `<model>-aicp.onnx` and `<model>-ort.onnx` for `mlp` and `cnn`) and runs this.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aicp_core::{PixelScale, Pixels, Tensor};
use aicp_engine::onnxruntime::{OnnxRuntimeEngine, find_library};
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, LoadOptions, Runnable, onnx};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tract_onnx::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1024;

/// How a model is fed.
#[derive(Clone)]
enum Feed {
    Floats(Tensor),
    Pixels(Pixels),
}

/// Runs `model` on `feed`; engines take their inputs by value, so callers copy `feed` first,
/// outside what they time.
fn run(model: &mut dyn Runnable, feed: Feed) {
    black_box(match feed {
        Feed::Floats(t) => model.run(vec![t.into()]),
        Feed::Pixels(p) => model.run(vec![p.into()]),
    })
    .expect("inference");
}

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(
        std::env::var_os("AICP_INT8_MODELS").expect("AICP_INT8_MODELS: run bench/quantize.sh"),
    );
    let library = find_library(std::env::var_os("AICP_ORT_LIB").as_deref().map(Path::new))
        .expect("no ONNX Runtime library: set AICP_ORT_LIB");
    let ort = OnnxRuntimeEngine::load(&library).expect("loading ONNX Runtime");
    let scale = PixelScale::for_range([0.0, 1.0]);
    // Digit-like values, each a pixel value.
    let pixels: Vec<u8> = (0..BATCH * 784).map(|i| ((i * 37) % 251) as u8).collect();
    let floats = Feed::Floats(Tensor {
        shape: vec![BATCH, 1, 28, 28],
        data: pixels.iter().map(|&p| scale.apply(p)).collect(),
    });
    let as_pixels = Feed::Pixels(Pixels {
        shape: vec![BATCH, 1, 28, 28],
        data: pixels,
        scale,
    });
    for model in ["mlp", "cnn"] {
        let path = |variant: &str| dir.join(format!("{model}-{variant}.onnx"));
        let load = |engine: &dyn Engine, variant: &str, pixels: Option<PixelScale>| {
            let path = path(variant);
            let signature = onnx::inspect(&path).expect("model").signature;
            engine
                .load(
                    &path,
                    &signature,
                    &LoadOptions {
                        pixels,
                        ..LoadOptions::default()
                    },
                )
                .expect("loading")
        };
        // The same three on each engine, then each engine's own baseline.
        let aicp_runs = |engine: &dyn Engine| -> Vec<Run> {
            vec![
                ("float", load(engine, "float", None), &floats),
                ("aicp_int8", load(engine, "aicp", None), &floats),
                (
                    "aicp_int8_uint8_input",
                    load(engine, "aicp", Some(scale)),
                    &as_pixels,
                ),
            ]
        };
        let mut ort_runs = aicp_runs(&ort);
        ort_runs.push(("ort_quantize_static", load(&ort, "ort", None), &floats));
        let mut tract_runs = aicp_runs(&TractEngine);
        tract_runs.push((
            "aicp_int8_qdq_as_written",
            Box::new(AsWritten::load(&path("aicp"))),
            &floats,
        ));
        for (engine, mut runs) in [("onnxruntime", ort_runs), ("tract", tract_runs)] {
            measure(
                c,
                &format!("int8_{model}_{engine}_batch_{BATCH}"),
                &mut runs,
            );
            let best = best_of_seven(&mut runs);
            let rate = |i: usize| BATCH as f64 / best[i];
            for (i, (name, _, _)) in runs.iter().enumerate() {
                println!("{model} {engine} {name:<24} {:>10.0} samples/s", rate(i));
            }
            println!(
                "{model} {engine}: aicp int8 / float {:.2}x; uint8 input / float {:.2}x; uint8 input / float input {:.2}x; aicp int8 / {} {:.2}x",
                rate(1) / rate(0),
                rate(2) / rate(0),
                rate(2) / rate(1),
                runs[3].0,
                rate(1) / rate(3)
            );
        }
    }
}

type Run<'f> = (&'static str, Box<dyn Runnable>, &'f Feed);

fn measure(c: &mut Criterion, group: &str, runs: &mut [Run]) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    for (name, runnable, feed) in runs {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || (*feed).clone(),
                |feed| run(runnable.as_mut(), feed),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Each run's best time, interleaved round by round over seven rounds: noise only slows.
fn best_of_seven(runs: &mut [Run]) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; runs.len()];
    for _ in 0..7 {
        for ((_, runnable, feed), best) in runs.iter_mut().zip(&mut best) {
            let (mut spent, mut n) = (Duration::ZERO, 0);
            while spent < Duration::from_millis(300) {
                let copy = (*feed).clone();
                let started = Instant::now();
                run(runnable.as_mut(), copy);
                spent += started.elapsed();
                n += 1;
            }
            *best = best.min(spent.as_secs_f64() / n as f64);
        }
    }
    best
}

/// tract on the QDQ graph as written: what the tract engine ran before its integer rewrite.
struct AsWritten(TypedSimpleState);

impl AsWritten {
    fn load(path: &Path) -> Self {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .and_then(|p| p.spawn())
            .expect("tract");
        Self(plan)
    }
}

impl Runnable for AsWritten {
    fn run(&mut self, inputs: Vec<aicp_core::Input>) -> aicp_core::Result<Vec<Tensor>> {
        let input = inputs.into_iter().next().expect("one input").into_tensor();
        let values = input.as_f32().expect("float32").to_vec();
        let value = tract_ndarray::ArrayD::from_shape_vec(input.shape, values)
            .expect("shape")
            .into_tvalue();
        let out = self.0.run(tvec![value]).expect("tract");
        let view = out[0].to_plain_array_view::<f32>().expect("f32");
        Ok(vec![Tensor {
            shape: view.shape().to_vec(),
            data: view.iter().copied().collect(),
        }])
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
