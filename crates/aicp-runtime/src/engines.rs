//! The engines this process has, found from aicp-engine's registry (tract always; ONNX
//! Runtime and a GPU when found), and which one serves a model: its `backend`, what is
//! available, whether it is quantised.

use std::path::Path;

use aicp_core::Backend;
use aicp_engine::registry::{Device, ENGINES, Registration, Setup};
use aicp_engine::{Engine, GpuMinBatch};

/// The engines available to this process: each registered engine, or why it is not here.
pub struct Engines {
    found: Vec<(&'static Registration, Found)>,
    /// How many per-shape plans a model keeps when its model.toml does not say
    /// (`--plan-cache-size`).
    plan_cache: usize,
}

/// A registered engine found on this machine, or why it is not there.
type Found = std::result::Result<Box<dyn Engine>, String>;

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
        let setup = Setup {
            ort_library,
            gpu: match gpu {
                GpuUse::Auto { min_batch } => Some(min_batch),
                GpuUse::Off => None,
            },
        };
        let found = ENGINES
            .iter()
            .map(|registration| {
                let engine = (registration.find)(&setup);
                match (&engine, registration.device) {
                    (Ok(engine), Device::Gpu) => {
                        tracing::info!("GPU found: {}; models on auto run there", engine.device())
                    }
                    (Err(reason), Device::Gpu) => {
                        tracing::info!("no usable GPU: {reason}; models run on the CPU")
                    }
                    // An engine that was asked for by its library, and cannot load.
                    (Err(reason), Device::Cpu) if ort_library.is_some() => {
                        tracing::error!("{reason}; tract serves instead")
                    }
                    (Err(reason), Device::Cpu) => {
                        tracing::info!("{}: {reason}", registration.kind)
                    }
                    (Ok(_), Device::Cpu) => {}
                }
                (registration, engine)
            })
            .collect();
        Self {
            found,
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

    /// The engine for a model's `backend`: `auto` is the first available in the registry's
    /// order (the GPU, then ONNX Runtime, then tract). A GPU engine asked for where there is
    /// none falls back to `auto`'s CPU choice: a server is never down because its GPU is. A
    /// `quantized` model on `auto` goes to the first CPU engine: ONNX Runtime runs INT8 models
    /// over twice as fast as their float originals, where tract, even on its integer kernels
    /// ([`aicp_engine::integer`]), runs them fed float32 slower than their float originals
    /// (and the GPU engine was not measured with them).
    pub fn pick(
        &self,
        backend: &Backend,
        quantized: bool,
    ) -> std::result::Result<&dyn Engine, String> {
        let name = match backend {
            Backend::Auto if quantized => return Ok(self.cpu()),
            Backend::Auto => return Ok(self.available(None).unwrap_or_else(|| self.cpu())),
            Backend::Engine(name) => name,
        };
        let Some((registration, engine)) = self.found.iter().find(|(r, _)| r.kind.name() == name)
        else {
            return Err(format!(
                "unknown backend {name:?}: expected auto or an engine ({})",
                aicp_engine::registry::names()
            ));
        };
        match (engine, registration.device) {
            (Ok(engine), _) => Ok(engine.as_ref()),
            (Err(_), Device::Gpu) => Ok(self.cpu()),
            (Err(reason), Device::Cpu) => Err(format!(
                "backend \"{name}\" requested but unavailable: {reason}"
            )),
        }
    }

    /// The first available engine, on `device` if given.
    fn available(&self, device: Option<Device>) -> Option<&dyn Engine> {
        self.found
            .iter()
            .filter(|(r, _)| device.is_none_or(|d| r.device == d))
            .find_map(|(_, engine)| engine.as_ref().ok())
            .map(|engine| engine.as_ref())
    }

    /// The fastest CPU engine available.
    pub fn cpu(&self) -> &dyn Engine {
        self.available(Some(Device::Cpu))
            .expect("tract is always there")
    }

    /// Why `backend`'s GPU engine is not here, if it asks for a GPU engine and there is none.
    pub fn gpu_unavailable(&self, backend: &Backend) -> Option<&str> {
        let Backend::Engine(name) = backend else {
            return None;
        };
        self.found
            .iter()
            .find(|(r, _)| r.kind.name() == name && r.device == Device::Gpu)
            .and_then(|(_, engine)| engine.as_ref().err())
            .map(String::as_str)
    }

    /// Only `engine`, serving every model whatever its `backend` asks for but the other CPU
    /// engines: for tests of what is built around engines (tract alone, whatever this machine
    /// has, or a fake), and for embedders with an engine of their own. It takes tract's place
    /// in the registry.
    pub fn only(engine: Box<dyn Engine>) -> Self {
        let mut engine = Some(engine);
        let found = ENGINES
            .iter()
            .map(|registration| {
                let given = (registration.kind == aicp_engine::tract::KIND)
                    .then(|| engine.take())
                    .flatten();
                let found =
                    given.ok_or_else(|| "not among the engines given (Engines::only)".to_string());
                (registration, found)
            })
            .collect();
        Self {
            found,
            plan_cache: aicp_engine::DEFAULT_PLAN_CACHE,
        }
    }
}

#[cfg(test)]
mod tests {
    use aicp_engine::tract::TractEngine;

    use super::*;

    fn named(name: &str) -> Backend {
        Backend::Engine(name.into())
    }

    #[test]
    fn a_backend_picks_its_engine_from_the_registry_or_says_why_not() {
        let engines = Engines::only(Box::new(TractEngine));
        let tract = aicp_engine::tract::KIND;
        assert_eq!(engines.pick(&Backend::Auto, false).unwrap().kind(), tract);
        assert_eq!(engines.pick(&Backend::Auto, true).unwrap().kind(), tract);
        assert_eq!(engines.pick(&named("tract"), false).unwrap().kind(), tract);
        // A GPU engine that is not here leaves the model to the CPU, and says why.
        assert_eq!(engines.pick(&named("cuda"), false).unwrap().kind(), tract);
        assert!(engines.gpu_unavailable(&named("cuda")).is_some());
        assert_eq!(engines.gpu_unavailable(&named("tract")), None);
        assert_eq!(engines.gpu_unavailable(&Backend::Auto), None);
        // A CPU engine that is not here is refused; so is one nobody registered.
        let error = engines.pick(&named("onnxruntime"), false).err().unwrap();
        assert!(
            error.starts_with("backend \"onnxruntime\" requested but unavailable"),
            "{error}"
        );
        let error = engines.pick(&named("tensorrt"), false).err().unwrap();
        assert_eq!(
            error,
            "unknown backend \"tensorrt\": expected auto or an engine (cuda, onnxruntime, tract)"
        );
    }

    #[test]
    fn every_engine_is_registered_once_with_its_device() {
        let mut names: Vec<&str> = ENGINES.iter().map(|r| r.kind.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ENGINES.len());
        assert_eq!(aicp_engine::CUDA.device(), Device::Gpu);
        assert_eq!(aicp_engine::tract::KIND.device(), Device::Cpu);
        assert_eq!(aicp_engine::onnxruntime::KIND.device(), Device::Cpu);
    }
}
