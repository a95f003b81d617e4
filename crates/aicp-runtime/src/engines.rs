//! The engines this process has (tract always; ONNX Runtime and a GPU when found) and which
//! one serves a model: its `backend`, what is available, whether it is quantised.

use std::path::Path;

use aicp_core::Backend;
use aicp_engine::onnxruntime::OnnxRuntimeEngine;
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, GpuMinBatch};

/// The engines available to this process.
pub struct Engines {
    /// tract (or the one engine of [`Engines::only`]).
    tract: Box<dyn Engine>,
    /// ONNX Runtime, or why it is not available.
    onnxruntime: std::result::Result<OnnxRuntimeEngine, String>,
    /// The GPU engine, or why there is none.
    gpu: std::result::Result<Box<dyn Engine>, String>,
    /// How many per-shape plans a model keeps when its model.toml does not say
    /// (`--plan-cache-size`).
    plan_cache: usize,
}

/// Whether models may run on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuUse {
    /// Look for a usable GPU at start-up; models on `auto` or `cuda` run there when one is
    /// found, but for the batches `min_batch` leaves to the CPU.
    Auto { min_batch: GpuMinBatch },
    /// Never touch a GPU, even for models that ask for one.
    Off,
}

impl Default for GpuUse {
    fn default() -> Self {
        Self::Auto {
            min_batch: GpuMinBatch::default(),
        }
    }
}

impl Engines {
    /// tract, and ONNX Runtime when its library is found (see
    /// [`aicp_engine::onnxruntime::find_library`]). A library that was asked for explicitly but
    /// cannot be loaded is logged as an error; models on `auto` are then served by tract.
    pub fn new(ort_library: Option<&Path>) -> Self {
        Self::with_gpu(ort_library, GpuUse::default())
    }

    /// As [`Engines::new`], and a GPU engine when `gpu` allows it and one is found. Without
    /// one, models that ask for `cuda` are served on the CPU, with a warning.
    pub fn with_gpu(ort_library: Option<&Path>, gpu: GpuUse) -> Self {
        let onnxruntime = match aicp_engine::onnxruntime::find_library(ort_library) {
            None => Err(
                "no ONNX Runtime library found (pass --ort-lib or set ORT_DYLIB_PATH, \
                         or pip install onnxruntime)"
                    .to_string(),
            ),
            Some(path) => OnnxRuntimeEngine::load(&path).map_err(|e| e.message),
        };
        match &onnxruntime {
            Ok(engine) => tracing::info!("onnxruntime loaded from {}", engine.library().display()),
            Err(reason) if ort_library.is_some() => {
                tracing::error!("{reason}; tract serves instead")
            }
            Err(reason) => tracing::info!("{reason}; models are served by tract"),
        }
        let gpu = match gpu {
            GpuUse::Off => Err("GPU use is off (--gpu off)".to_string()),
            GpuUse::Auto { min_batch } => aicp_engine::probe_gpu(min_batch),
        };
        match &gpu {
            Ok(engine) => {
                tracing::info!("GPU found: {}; models on auto run there", engine.device())
            }
            Err(reason) => tracing::info!("no usable GPU: {reason}; models run on the CPU"),
        }
        Self {
            tract: Box::new(TractEngine),
            onnxruntime,
            gpu,
            plan_cache: aicp_engine::DEFAULT_PLAN_CACHE,
        }
    }

    /// These engines, keeping `plans` per-shape plans for each model whose model.toml does not
    /// say (`--plan-cache-size`; see [`aicp_engine::tract`]).
    pub fn with_plan_cache(mut self, plans: usize) -> Self {
        self.plan_cache = plans;
        self
    }

    /// How many per-shape plans a model keeps when its model.toml does not say.
    pub fn plan_cache(&self) -> usize {
        self.plan_cache
    }

    /// The engine for a model's `backend`: `auto` is the fastest available (the GPU, then ONNX
    /// Runtime, then tract). `cuda` without a usable GPU falls back to `auto`'s CPU choice:
    /// a server is never down because its GPU is. A `quantized` model on `auto` goes to ONNX
    /// Runtime first: it runs INT8 models over twice as fast as their float originals, where
    /// tract, even on its integer kernels ([`aicp_engine::integer`]), runs them fed float32
    /// slower than their float originals (and the GPU engine was not measured with them).
    pub fn pick(
        &self,
        backend: Backend,
        quantized: bool,
    ) -> std::result::Result<&dyn Engine, String> {
        match backend {
            Backend::Auto if quantized => Ok(self.cpu()),
            Backend::Tract => Ok(self.tract.as_ref()),
            Backend::OnnxRuntime => match &self.onnxruntime {
                Ok(engine) => Ok(engine),
                Err(reason) => Err(format!(
                    "backend \"onnxruntime\" requested but unavailable: {reason}"
                )),
            },
            Backend::Auto | Backend::Cuda => Ok(match &self.gpu {
                Ok(engine) => engine.as_ref(),
                Err(_) => self.cpu(),
            }),
        }
    }

    /// The fastest CPU engine available.
    pub fn cpu(&self) -> &dyn Engine {
        match &self.onnxruntime {
            Ok(engine) => engine,
            Err(_) => self.tract.as_ref(),
        }
    }

    /// Why there is no GPU engine, if there is none.
    pub fn gpu_unavailable(&self) -> Option<&str> {
        self.gpu.as_ref().err().map(String::as_str)
    }

    /// Only `engine`, serving every model whatever its `backend` asks for but `onnxruntime`:
    /// for tests of what is built around engines (tract alone, whatever this machine has, or a
    /// fake), and for embedders with an engine of their own.
    pub fn only(engine: Box<dyn Engine>) -> Self {
        Self {
            tract: engine,
            onnxruntime: Err("not among the engines given (Engines::only)".into()),
            gpu: Err("not among the engines given (Engines::only)".into()),
            plan_cache: aicp_engine::DEFAULT_PLAN_CACHE,
        }
    }
}
