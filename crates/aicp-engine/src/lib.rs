//! ONNX engines behind one small trait. [`tract`] (pure Rust) is always available;
//! [`onnxruntime`] is used when ONNX Runtime's shared library can be loaded at run time, and
//! [`cuda`] (the `cuda` feature) when an NVIDIA GPU and its libraries are found at run time.
//! [`onnx`] reads what a model file declares, the same way for every engine.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod integer;
pub mod onnx;
pub mod onnx_build;
pub mod onnxruntime;
pub mod registry;
pub mod split;
pub mod tract;

use std::path::Path;

use aicp_core::{Input, ModelSignature, PixelScale, Result, Tensor};
use serde::Serialize;

/// Which engine runs a model: its registered name ([`registry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineKind(&'static str);

impl EngineKind {
    /// The engine called `name`, as its module declares it.
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// Where it computes ([`registry::ENGINES`] says; an engine not registered there, such as a
    /// test's, computes on the CPU).
    pub fn device(self) -> registry::Device {
        registry::registration(self.0).map_or(registry::Device::Cpu, |r| r.device)
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<8}`) lines names up in tables.
        f.pad(self.name())
    }
}

impl Serialize for EngineKind {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

/// The GPU engine's kind, named whether or not this build has it (the `cuda` feature), so that
/// a model asking for it is served on the CPU rather than refused.
pub const CUDA: EngineKind = EngineKind::new("cuda");

/// What an engine may prepare for when it loads a model, beyond the file itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// How 8-bit pixels map to the model's input, when the model takes them (its one input is a
    /// float32 image with a declared range). An engine may build a path that normalises them
    /// itself; [`Runnable::run`] is then fed them as they are ([`Input::Pixels`]).
    pub pixels: Option<PixelScale>,
    /// The model's name, for the engine's logs and metrics.
    pub model: String,
    /// How many plans, one per concrete input shape, an engine that makes them keeps
    /// ([`tract`], for a model it cannot analyse with its dimensions left symbolic).
    pub plan_cache: usize,
}

/// The plans per concrete input shape kept by default (`--plan-cache-size`).
pub const DEFAULT_PLAN_CACHE: usize = 16;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pixels: None,
            model: String::new(),
            plan_cache: DEFAULT_PLAN_CACHE,
        }
    }
}

/// Loads model files into runnable models.
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Where the engine runs models: `cpu`, or the GPU it found (`cuda:0 NVIDIA H200`).
    fn device(&self) -> String {
        "cpu".to_string()
    }

    /// Loads and optimises the model at `path`, whose signature [`onnx::inspect`] read.
    fn load(
        &self,
        path: &Path,
        signature: &ModelSignature,
        options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>>;
}

/// One instance of a loaded model, ready to run batches: its own copy of the model and the
/// state a run needs (buffers, sessions, a GPU's stream), owned by the one thread that runs it.
/// It runs through `&mut self`, so an engine keeps that state without locks, and it is `Send`
/// but not `Sync`: it moves to its thread once, and nothing else can reach it there.
pub trait Runnable: Send {
    /// Runs one batch: one input per model input, in signature order, each of the model's own
    /// element type and shaped as the model declares, with the batch first when it batches.
    /// Returns one tensor per output, in signature order and of the output's own type. Takes
    /// the inputs by value so an engine that needs to own them need not copy them.
    ///
    /// An input may come as 8-bit pixels (a model with one float32 input that loaded with
    /// [`LoadOptions::pixels`]): an engine normalises them on the host ([`Input::into_tensor`]),
    /// or moves the bytes as they are and normalises them where it computes.
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>>;

    /// Prepares the calling thread to run this model (a GPU engine makes its stream and
    /// library handles here, which belong to the thread that makes them), so the first request
    /// on the thread does not pay for it. The instance's own thread calls it once, before it
    /// takes requests; the instance never runs on another thread after.
    fn prepare_thread(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which batches a GPU engine leaves to the CPU (`--gpu-min-batch`), where a small batch is
/// faster than the GPU's transfers and kernel launches (see [`split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuMinBatch {
    /// Measured for each model as it loads: the smallest batch the GPU runs faster than the CPU.
    #[default]
    Measured,
    /// Batches smaller than this run on the CPU; 1 sends every batch to the GPU.
    Fixed(usize),
}

impl std::str::FromStr for GpuMinBatch {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Self::Measured),
            _ => match text.parse() {
                Ok(batch) if batch >= 1 => Ok(Self::Fixed(batch)),
                _ => Err(format!(
                    "expected `auto` or a batch size of at least 1, got {text:?}"
                )),
            },
        }
    }
}

impl std::fmt::Display for GpuMinBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Measured => f.write_str("auto"),
            Self::Fixed(batch) => write!(f, "{batch}"),
        }
    }
}

/// The GPU engine, when this build has one ([`cuda`], the `cuda` feature) and it finds a usable
/// GPU; otherwise why not, in words for a start-up message. `min_batch` says which batches it
/// leaves to the CPU.
pub fn probe_gpu(min_batch: GpuMinBatch) -> std::result::Result<Box<dyn Engine>, String> {
    #[cfg(feature = "cuda")]
    {
        cuda::CudaEngine::probe()
            .map(|engine| Box::new(engine.with_min_batch(min_batch)) as Box<dyn Engine>)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = min_batch;
        Err("this build of aicp has no GPU engine (build it with the `cuda` feature)".into())
    }
}

/// The bundled model, found from this package's directory as cargo gives it when it runs the
/// tests (a build directory shared between clones may hold tests another clone compiled).
#[cfg(test)]
fn bundled_model() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../../models/mnist/1/model.onnx")
}

#[cfg(test)]
mod tests {
    use super::GpuMinBatch;

    #[test]
    fn gpu_min_batch_reads_auto_or_a_batch_size() {
        assert_eq!("auto".parse(), Ok(GpuMinBatch::Measured));
        assert_eq!("64".parse(), Ok(GpuMinBatch::Fixed(64)));
        for bad in ["0", "-1", "all", ""] {
            let err = bad.parse::<GpuMinBatch>().unwrap_err();
            assert!(err.contains("expected `auto` or a batch size"), "{err}");
        }
        assert_eq!(GpuMinBatch::Fixed(1).to_string(), "1");
        assert_eq!(GpuMinBatch::Measured.to_string(), "auto");
    }
}
