//! The tract engine: pure Rust, always available.

use std::path::Path;

use aicp_core::{Error, Input, ModelSignature, Result, Tensor};
use tract_onnx::prelude::{
    Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec, TypedSimpleState,
    tract_ndarray,
};

use crate::{Engine, EngineKind, LoadOptions, Runnable};

/// Loads models with tract-onnx.
#[derive(Debug, Default, Clone, Copy)]
pub struct TractEngine;

/// A model's plan, shared by nothing else, and the state its runs reuse (tract's own shape: a
/// plan spawns a state per thread).
struct TractModel {
    state: TypedSimpleState,
}

impl Engine for TractEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn load(
        &self,
        path: &Path,
        _signature: &ModelSignature,
        _options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>> {
        let failed = |e: tract_onnx::prelude::TractError| {
            Error::invalid(format!("tract cannot load {}: {e:#}", path.display()))
        };
        // The batch dimension stays symbolic: one plan serves every batch size.
        let state = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .and_then(|plan| plan.spawn())
            .map_err(failed)?;
        Ok(Box::new(TractModel { state }))
    }
}

impl Runnable for TractModel {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        // The request's buffers become tract's tensors as they are: no copy (pixels are
        // normalised into new ones).
        let values = inputs
            .into_iter()
            .map(Input::into_f32)
            .map(|t| {
                tract_ndarray::ArrayD::from_shape_vec(t.shape, t.data)
                    .map(|array| array.into_tvalue())
            })
            .collect::<std::result::Result<TVec<TValue>, _>>()
            .map_err(|e| Error::internal(format!("tract input: {e}")))?;
        let outputs = self
            .state
            .run(values)
            .map_err(|e| Error::internal(format!("tract inference failed: {e:#}")))?;
        outputs
            .iter()
            .map(|value| {
                let value = value
                    .cast_to::<f32>()
                    .map_err(|e| Error::internal(format!("tract output is not numeric: {e}")))?;
                let view = value
                    .to_plain_array_view::<f32>()
                    .map_err(|e| Error::internal(format!("tract output: {e}")))?;
                Ok(Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
    }
}
