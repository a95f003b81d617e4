//! `aicp gpu`: checks that the GPU engine gives the CPU's answers, and measures it, on a machine
//! with an NVIDIA GPU. `scripts/gpu-check.sh` runs both there, next to PyTorch on the same GPU.

use clap::{Args, Subcommand};

use crate::serve::RepositoryArgs;

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Find the GPU, then check the CUDA engine against the CPU (tract) on a model of the
    /// directory: float32 and uint8 input, pinned and plain transfers, batches from 1 to 16384;
    /// and serve the directory through the runtime on the GPU. Fails on any difference above
    /// the tolerance.
    Verify(VerifyArgs),
    /// Samples per second and latency of the CUDA engine at each batch size, for float32 and
    /// uint8 input: with pinned and with plain transfers (every batch on the GPU), as served
    /// (the batches under `--gpu-min-batch auto` on the CPU), and of tract on the CPU.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    repository: RepositoryArgs,

    /// The model to check (its default version).
    #[arg(long, default_value = "mnist")]
    model: String,

    /// The largest difference allowed between a GPU output and the CPU's.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    repository: RepositoryArgs,

    /// The model to measure (its default version).
    #[arg(long, default_value = "mnist")]
    model: String,

    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024,16384")]
    batches: Vec<usize>,

    /// How long to run each configuration, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

pub fn run(command: GpuCommand) -> anyhow::Result<()> {
    #[cfg(feature = "cuda")]
    {
        match command {
            GpuCommand::Verify(args) => cuda::verify(args),
            GpuCommand::Bench(args) => cuda::bench(args),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = command;
        anyhow::bail!("this build of aicp has no GPU engine (build it with the `cuda` feature)")
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use aicp_core::{PixelScale, Pixels, Tensor, TensorData, max_difference};
    use aicp_engine::cuda::{CudaEngine, digit_like_pixels};
    use aicp_engine::tract::TractEngine;
    use aicp_engine::{Engine, LoadOptions, Runnable};
    use aicp_runtime::{Batching, Engines, GpuMinBatch, GpuUse, InferInput, Repository, Runtime};
    use anyhow::{Context, anyhow, bail};

    use super::{BenchArgs, VerifyArgs};
    use crate::serve::RepositoryArgs;

    /// Runs `run` for about `seconds` (at least 3 times, after 2 warm-up runs), timing only the
    /// calls themselves; `prepare` makes each call's input (the engine takes it by value).
    fn measure<I>(
        seconds: f64,
        mut prepare: impl FnMut() -> I,
        mut run: impl FnMut(I) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Duration>> {
        for _ in 0..2 {
            run(prepare())?;
        }
        let budget = Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut times = Vec::new();
        while times.len() < 3 || started.elapsed() < budget {
            let input = prepare();
            let call = Instant::now();
            run(input)?;
            times.push(call.elapsed());
        }
        Ok(times)
    }

    /// A model file of the directory, with what it needs to be fed.
    struct Subject {
        file: std::path::PathBuf,
        signature: aicp_core::ModelSignature,
        /// Each sample's shape (the input's, after the batch).
        sample: Vec<usize>,
        scale: PixelScale,
    }

    impl Subject {
        /// `model`'s default version, found by loading the directory on the CPU.
        fn find(repository: &RepositoryArgs, model: &str) -> anyhow::Result<Self> {
            let engines = Arc::new(Engines::with_gpu(None, GpuUse::Off));
            let cpu = Repository::load(repository.models(), engines, &Batching::default())?;
            let entry = cpu.model(model)?;
            let served = cpu.get(model, None)?;
            if served.engine.is_none() {
                bail!("model {model} is a chain; check each of its steps");
            }
            let version = &entry.versions[&served.version];
            let [input] = served.signature.inputs.as_slice() else {
                bail!("model {model} has several inputs; the GPU check feeds one");
            };
            let dims = input
                .shape
                .as_ref()
                .ok_or_else(|| anyhow!("model {model} declares no input shape"))?;
            let sample = dims[1.min(dims.len())..]
                .iter()
                .map(|d| d.ok_or_else(|| anyhow!("model {model}'s sample shape is not fixed")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Self {
                file: version.file.clone(),
                signature: served.signature.clone(),
                sample,
                scale: served.pixels.unwrap_or(PixelScale::for_range([0.0, 1.0])),
            })
        }

        fn pixels(&self, batch: usize) -> Pixels {
            let shape: Vec<usize> = std::iter::once(batch).chain(self.sample.clone()).collect();
            let values = shape.iter().product();
            Pixels {
                data: digit_like_pixels(values, batch),
                shape,
                scale: self.scale,
            }
        }

        fn load(&self, engine: &dyn Engine) -> anyhow::Result<Box<dyn Runnable>> {
            let options = LoadOptions {
                pixels: Some(self.scale),
                ..LoadOptions::default()
            };
            let mut model = engine.load(&self.file, &self.signature, &options)?;
            model.prepare_thread()?;
            Ok(model)
        }
    }

    /// A model of the directory on tract (the reference), and on the GPU with pinned and with
    /// plain transfers, every batch on the GPU; and as served, the small batches on the CPU.
    struct Loaded {
        subject: Subject,
        cpu: Box<dyn Runnable>,
        pinned: Box<dyn Runnable>,
        plain: Box<dyn Runnable>,
        served: Box<dyn Runnable>,
        /// How long the pinned GPU load took (the plan, its uint8 twin and the cross-check).
        gpu_load: Duration,
    }

    /// Finds the GPU (timing its start-up), then loads `model` on tract and both ways on it.
    fn load_everywhere(repository: &RepositoryArgs, model: &str) -> anyhow::Result<Loaded> {
        let started = Instant::now();
        let gpu = CudaEngine::probe().map_err(|e| anyhow!("no usable GPU: {e}"))?;
        println!(
            "gpu device=\"{}\" probe_s={:.2} (kernels compiled or read from the cache)",
            gpu.device(),
            started.elapsed().as_secs_f64()
        );
        let subject = Subject::find(repository, model)?;
        let cpu = TractEngine.load(&subject.file, &subject.signature, &LoadOptions::default())?;
        let served = subject.load(&gpu)?;
        let gpu = gpu.with_min_batch(GpuMinBatch::Fixed(1));
        let started = Instant::now();
        let pinned = subject.load(&gpu)?;
        let gpu_load = started.elapsed();
        let plain = subject.load(&gpu.without_pinned_buffers())?;
        Ok(Loaded {
            subject,
            cpu,
            pinned,
            plain,
            served,
            gpu_load,
        })
    }

    /// A float32 output's values: the checks compare the float models they run.
    fn float_values(tensor: &Tensor) -> anyhow::Result<&[f32]> {
        tensor
            .as_f32()
            .ok_or_else(|| anyhow!("the model gave a {} output, not FP32", tensor.datatype()))
    }

    fn argmax_rows(data: &[f32], classes: usize) -> Vec<usize> {
        data.chunks(classes)
            .map(|row| {
                (0..row.len())
                    .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                    .unwrap_or(0)
            })
            .collect()
    }

    pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
        let Loaded {
            subject,
            mut cpu,
            mut pinned,
            mut plain,
            gpu_load,
            ..
        } = load_everywhere(&args.repository, &args.model)?;
        println!(
            "gpu load model={} load_s={:.2}",
            args.model,
            gpu_load.as_secs_f64()
        );
        let mut failures = 0;
        for batch in [1, 7, 64, 1024, 16384] {
            let pixels = subject.pixels(batch);
            let floats = pixels.to_tensor();
            let reference = cpu.run(vec![floats.clone().into()])?.remove(0);
            let reference = float_values(&reference)?;
            let classes = reference.len() / batch;
            let expected = argmax_rows(reference, classes);
            for (transfers, model) in [("pinned", &mut pinned), ("plain", &mut plain)] {
                let outputs = [
                    ("fp32", model.run(vec![floats.clone().into()])?),
                    ("uint8", model.run(vec![pixels.clone().into()])?),
                ];
                for (input, output) in outputs {
                    let values = float_values(&output[0])?;
                    let difference = if values.len() == reference.len() {
                        max_difference(values, reference)
                    } else {
                        f32::INFINITY
                    };
                    let agree = argmax_rows(values, classes)
                        .iter()
                        .zip(&expected)
                        .filter(|(a, b)| a == b)
                        .count();
                    let ok = difference <= args.tolerance;
                    failures += usize::from(!ok);
                    println!(
                        "verify batch={batch} input={input} transfers={transfers} max_abs_diff={difference:.2e} argmax_agree={agree}/{batch} {}",
                        if ok { "ok" } else { "FAIL" }
                    );
                }
            }
        }
        failures += verify_served(&args, &subject, cpu.as_mut())?;
        if failures > 0 {
            bail!("{failures} GPU check(s) failed");
        }
        println!("verify all ok");
        Ok(())
    }

    /// The model directory served through the runtime on the GPU: the model must be on the
    /// CUDA engine, and a float32 and a UINT8 request must get the CPU's answer.
    fn verify_served(
        args: &VerifyArgs,
        subject: &Subject,
        cpu: &mut dyn Runnable,
    ) -> anyhow::Result<usize> {
        // Every batch on the GPU: the small ones would be checking tract against itself.
        let gpu = GpuUse::Auto {
            min_batch: GpuMinBatch::Fixed(1),
        };
        let engines = Arc::new(Engines::with_gpu(None, gpu));
        let repository = Repository::load(args.repository.models(), engines, &Batching::default())?;
        let served = repository.get(&args.model, None)?;
        println!(
            "served model={} engine={} device=\"{}\" max_batch_size={} max_queue_delay_us={} instances={} pixels={}",
            served.name,
            served.engine_name(),
            served.device,
            served.policy.max_batch_size,
            served.policy.max_queue_delay.as_micros(),
            served.policy.instances,
            served.pixels.is_some(),
        );
        let mut failures = usize::from(served.engine != Some(aicp_engine::CUDA));
        let runtime = Runtime::new();
        runtime.set_repository(repository);
        let pixels = subject.pixels(3);
        let reference = cpu.run(vec![pixels.to_tensor().into()])?.remove(0);
        let requests = [
            ("fp32", pixels.to_tensor().data),
            ("uint8", TensorData::U8(pixels.data.clone())),
        ];
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for (input, data) in requests {
            let request = InferInput {
                name: None,
                shape: pixels.shape.clone(),
                data,
            };
            let ticket = runtime.model(&args.model, None)?;
            let response = tokio
                .block_on(runtime.run(ticket, vec![request], None))
                .with_context(|| format!("a {input} request to the served model"))?;
            let output: &Tensor = &response.outputs[0];
            let difference = max_difference(float_values(output)?, float_values(&reference)?);
            let ok = difference <= args.tolerance && output.shape == reference.shape;
            failures += usize::from(!ok);
            println!(
                "served request input={input} max_abs_diff={difference:.2e} {}",
                if ok { "ok" } else { "FAIL" }
            );
        }
        Ok(failures)
    }

    pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
        let Loaded {
            subject,
            mut cpu,
            mut pinned,
            mut plain,
            mut served,
            ..
        } = load_everywhere(&args.repository, &args.model)?;
        let mut configurations: [(&str, &mut dyn Runnable); 4] = [
            ("cuda-pinned", pinned.as_mut()),
            ("cuda-plain", plain.as_mut()),
            ("cuda-served", served.as_mut()),
            ("cpu-tract", cpu.as_mut()),
        ];
        for &batch in &args.batches {
            let pixels = subject.pixels(batch);
            let floats = pixels.to_tensor();
            for (engine, model) in configurations.iter_mut() {
                let fp32 = measure(
                    args.seconds,
                    || vec![floats.clone().into()],
                    |inputs| Ok(model.run(inputs).map(drop)?),
                )?;
                report(engine, "fp32", batch, &fp32);
                if *engine == "cpu-tract" {
                    continue;
                }
                let uint8 = measure(
                    args.seconds,
                    || pixels.clone(),
                    |pixels| Ok(model.run(vec![pixels.into()]).map(drop)?),
                )?;
                report(engine, "uint8", batch, &uint8);
            }
        }
        Ok(())
    }

    fn report(engine: &str, input: &str, batch: usize, times: &[std::time::Duration]) {
        let total: f64 = times.iter().map(|t| t.as_secs_f64()).sum();
        let mut sorted = times.to_vec();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        println!(
            "bench engine={engine} input={input} batch={batch} samples_per_s={:.0} median_us={:.1} runs={}",
            (batch * times.len()) as f64 / total,
            median.as_secs_f64() * 1e6,
            times.len()
        );
    }
}
