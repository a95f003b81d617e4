//! Everything behind an [`InferRequest`]: the model [`repository`] (scanning, loading, states),
//! input validation and execution on dedicated threads ([`service`], [`executor`]). Front ends
//! translate their wire formats into an `InferRequest` and never reach past this crate.

pub mod executor;
pub mod repository;
pub mod service;

pub use executor::Executor;
pub use repository::{Engines, ModelEntry, ModelState, Repository, ServedModel, VersionState};
pub use service::{InferRequest, InferResponse, Runtime, softmax, top_k};
