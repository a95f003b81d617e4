//! Everything behind an [`InferRequest`]: the model [`repository`] (scanning, loading, states),
//! input validation and execution on dedicated threads ([`service`], [`executor`]). Front ends
//! translate their wire formats into an `InferRequest` and never reach past this crate.

pub mod executor;
pub mod repository;
pub mod service;
pub mod stats;

pub use executor::Executor;
pub use repository::{Engines, ModelEntry, ModelState, Repository, ServedModel, VersionState};
pub use service::{InferInput, InferRequest, InferResponse, Runtime, softmax, top_k};
pub use stats::{CountAndDuration, Stats, StatsSnapshot};
