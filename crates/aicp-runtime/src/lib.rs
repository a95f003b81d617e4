//! Everything behind a request: the model [`repository`] (found by [`discovery`],
//! loaded by [`loading`] on the [`engines`], reloaded by the [`reload`] table, its [`chain`]s
//! resolved against it), input validation
//! ([`service`]), pictures and texts made inputs ([`preprocessing`]), each model's batching [`policy`], queue, dynamic batcher and engine instances
//! on dedicated threads ([`scheduler`]), and keeping the served models in step with the model
//! directory ([`control`]). Front ends translate their wire formats into [`InferInput`]s for
//! the model [`Runtime::model`] found, [`Runtime::run`] them, and never reach past this crate.

pub mod chain;
pub mod control;
pub mod discovery;
pub mod engines;
pub mod loading;
pub mod policy;
pub mod preprocessing;
pub mod reload;
pub mod repository;
pub mod scheduler;
pub mod scores;
pub mod served;
pub mod service;
pub mod stats;
mod warmup;

pub use aicp_core::Batching;
pub use aicp_engine::registry::Device as EngineDevice;
pub use aicp_engine::{EngineKind, GpuMinBatch};
pub use control::{ControlMode, ModelControl};
pub use engines::{Engines, GpuUse};
pub use policy::{Device, Policy};
pub use repository::{ModelEntry, ModelState, Repository, VersionState};
pub use scheduler::{QueueState, Scheduler};
pub use scores::{softmax, top_k};
pub use served::{Runner, ServedModel};
pub use service::{InferInput, InferResponse, Runtime, Ticket};
pub use stats::{CountAndDuration, Stats, StatsSnapshot};
