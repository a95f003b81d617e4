//! Everything behind an [`InferRequest`]: the model [`repository`] (scanning, loading, states),
//! input validation ([`service`]), and each model's queue, dynamic batcher and engine instances
//! on dedicated threads ([`scheduler`]), and keeping the served models in step with the model
//! directory ([`control`]). Front ends translate their wire formats into an
//! `InferRequest` and never reach past this crate.

pub mod control;
pub mod repository;
pub mod scheduler;
pub mod service;
pub mod stats;

pub use aicp_core::Batching;
pub use aicp_engine::{EngineKind, GpuMinBatch};
pub use control::{ControlMode, ModelControl};
pub use repository::{
    Engines, GpuUse, ModelEntry, ModelState, Repository, ServedModel, VersionState,
};
pub use scheduler::{Policy, QueueState, Scheduler};
pub use service::{InferInput, InferRequest, InferResponse, Runtime, softmax, top_k};
pub use stats::{CountAndDuration, Stats, StatsSnapshot};
