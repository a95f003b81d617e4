//! ONNX engines behind one small trait. [`tract`] (pure Rust) is always available;
//! [`onnxruntime`] is used when ONNX Runtime's shared library can be loaded at run time.
//! [`onnx`] reads what a model file declares, the same way for every engine.

pub mod onnx;
pub mod onnxruntime;
pub mod tract;

use std::path::Path;

use aicp_core::{ModelSignature, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::OnnxRuntime => "onnxruntime",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loads model files into runnable models.
pub trait Engine: Send + Sync {
    fn kind(&self) -> EngineKind;

    /// Loads and optimises the model at `path`, whose signature [`onnx::inspect`] read.
    fn load(&self, path: &Path, signature: &ModelSignature) -> Result<Box<dyn Runnable>>;
}

/// A loaded model, ready to run batches. Safe to call from several threads at once.
pub trait Runnable: Send + Sync {
    /// Runs one batch: one tensor per model input, in signature order, each shaped as the
    /// model declares with the batch first. Returns one tensor per output, in signature order.
    /// Takes the inputs by value so an engine that needs to own them need not copy them.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>>;
}
