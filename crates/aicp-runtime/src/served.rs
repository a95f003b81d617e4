//! A model version that serves: what it is (signature, metadata, engine, device), how its
//! requests are batched, its statistics, and what runs it: its scheduler, or a chain of other
//! models.

use std::sync::Arc;

use aicp_core::{ModelMetadata, ModelSignature, OutputKind, PixelScale};
use aicp_engine::EngineKind;
use aicp_transform::Transforms;

use crate::chain::Chain;
use crate::policy::Policy;
use crate::scheduler::{Completed, QueueState, Scheduler};
use crate::stats::Stats;

/// A model version that is loaded, warmed up and ready to run.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    /// The engine that runs it; `None` for a chain, whose steps have theirs.
    pub engine: Option<EngineKind>,
    /// Where its engine runs it: `cpu`, or the GPU (`cuda:0 NVIDIA H200`); for a chain, where
    /// its steps run.
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
    /// What runs its requests.
    pub runner: Runner,
}

/// What runs a served model's requests.
pub enum Runner {
    /// Its own queue and engine instances.
    Scheduler(Scheduler),
    /// Other models of the repository, one after another.
    Chain(Chain),
}

impl Runner {
    /// Requests waiting and running now; a chain's wait in its steps' queues.
    pub fn state(&self) -> QueueState {
        match self {
            Self::Scheduler(scheduler) => scheduler.state(),
            Self::Chain(_) => QueueState::default(),
        }
    }

    /// Runs one request's inputs (checked against the model's signature, holding `samples`
    /// samples) before `deadline`.
    pub(crate) async fn run(
        &self,
        inputs: Vec<aicp_core::Input>,
        samples: usize,
        deadline: Option<std::time::Instant>,
    ) -> aicp_core::Result<Completed> {
        match self {
            Self::Scheduler(scheduler) => scheduler.submit(inputs, samples, deadline).await,
            Self::Chain(chain) => chain.run(inputs, deadline).await,
        }
    }
}

impl ServedModel {
    /// What runs it, in a word: its engine's name, or `chain`.
    pub fn engine_name(&self) -> &'static str {
        self.engine.map_or("chain", EngineKind::name)
    }

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
