//! Types every aicp crate shares. Light on purpose: no engine, no runtime, no framework.

pub mod metadata;

pub use metadata::{InputSpec, ModelMetadata, OutputKind};
