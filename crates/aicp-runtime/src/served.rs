//! A model version that serves: what it is (signature, metadata, engine, device), how its
//! requests are batched, its statistics, and its scheduler.

use std::sync::Arc;

use aicp_core::{ModelMetadata, ModelSignature, OutputKind, PixelScale};
use aicp_engine::EngineKind;
use aicp_transform::Transforms;

use crate::policy::Policy;
use crate::scheduler::Scheduler;
use crate::stats::Stats;

/// A model version that is loaded, warmed up and ready to run.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub engine: EngineKind,
    /// Where its engine runs it: `cpu`, or the GPU (`cuda:0 NVIDIA H200`).
    pub device: String,
    pub signature: ModelSignature,
    /// How 8-bit pixels become its input, when it takes them: its one input is float32 and its
    /// model.toml declares the input range. UINT8 requests are then normalised by the engine.
    pub pixels: Option<PixelScale>,
    /// Whether the first output holds logits (softmax to get probabilities) or probabilities.
    pub output: OutputKind,
    pub metadata: Arc<ModelMetadata>,
    /// How pictures and texts become its inputs, and what the ML API makes of its outputs.
    pub transforms: Arc<Transforms>,
    /// How its requests are queued, batched and run.
    pub policy: Policy,
    /// What a user should know about how it serves: the engine it fell back from and why, a
    /// warm-up that failed (the model serves; its first request pays what the warm-up would
    /// have).
    pub notes: Vec<String>,
    pub stats: Arc<Stats>,
    /// Its queue and engine instances.
    pub scheduler: Scheduler,
}

impl ServedModel {
    /// The most samples one request may carry; 0 when the model has no variable batch
    /// dimension (its inputs are then fed exactly as declared).
    pub fn max_batch_size(&self) -> usize {
        self.policy.max_batch_size
    }

    /// Probabilities from one row of the first output: softmax of logits, or the row itself
    /// when the model already outputs probabilities (so softmax is never applied twice).
    pub fn probabilities(&self, row: &[f32]) -> Vec<f32> {
        match self.output {
            OutputKind::Logits => crate::scores::softmax(row),
            OutputKind::Probabilities => row.to_vec(),
        }
    }

    /// The class label of output index `class`: from model.toml, else the index.
    pub fn label(&self, class: usize) -> String {
        self.metadata
            .labels
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }
}
