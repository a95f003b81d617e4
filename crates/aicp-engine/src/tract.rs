//! The tract engine: pure Rust, always available.

use std::path::Path;

use aicp_core::{Error, Input, ModelSignature, Result, Tensor, TensorData};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec,
    TractResult, TypedSimpleState, tract_ndarray, tvec,
};

use crate::{Engine, EngineKind, LoadOptions, Runnable, integer, onnx};

/// Loads models with tract-onnx.
#[derive(Debug, Default, Clone, Copy)]
pub struct TractEngine;

/// Leaves tract's Intel AMX int8 kernels out of its choice, keeping its AVX-512/AVX VNNI
/// ones. With them, integer products (an INT8 model, [`integer`]) crashed the process with
/// SIGSEGV inside `avx512amx_mmm_i32_16x16` (tract 0.23.9), intermittently, when the machine
/// was busy. tract probes the CPU once, on its first use, so every entry into tract in aicp
/// calls this first: the engine's load, the integer rewrite, calibration, `aicp` at start-up. A
/// `TRACT_CPU_ISA` set in the environment is left as the deployer set it.
pub fn without_amx_kernels() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TRACT_CPU_ISA").is_none() {
            tract_onnx::prelude::tract_linalg::knobs::TRACT_CPU_ISA
                .set(Some("-amx-int8".to_string()));
        }
    });
}

/// A model's plan, shared by nothing else, and the state its runs reuse (tract's own shape: a
/// plan spawns a state per thread).
struct TractModel {
    state: TypedSimpleState,
    /// For a quantised model whose input is quantised to the pixels' own scale: the same
    /// model taking the pixels as its quantised input ([`onnx::with_pixel_input`]).
    pixels: Option<TypedSimpleState>,
}

/// tract's plan for `proto`, with a QDQ model's products on tract's integer kernels
/// ([`integer`]). Should tract refuse the rewritten graph, it gets the graph as written.
fn plan(proto: ModelProto) -> TractResult<TypedSimpleState> {
    let build = |proto: &ModelProto| {
        tract_onnx::onnx()
            .model_for_proto_model(proto)
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .and_then(|plan| plan.spawn())
    };
    let quantized = proto
        .graph
        .as_ref()
        .is_some_and(|graph| graph.node.iter().any(|n| n.op_type == "DequantizeLinear"));
    if !quantized {
        return build(&proto);
    }
    match integer::with_integer_ops(proto.clone()) {
        (rewritten, 1..) => build(&rewritten).or_else(|_| build(&proto)),
        _ => build(&proto),
    }
}

impl Engine for TractEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn load(
        &self,
        path: &Path,
        _signature: &ModelSignature,
        options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>> {
        let failed = |e: tract_onnx::prelude::TractError| {
            Error::invalid(format!("tract cannot load {}: {e:#}", path.display()))
        };
        without_amx_kernels();
        // The batch dimension stays symbolic: one plan serves every batch size.
        let proto = tract_onnx::onnx()
            .proto_model_for_path(path)
            .map_err(failed)?;
        let state = plan(proto).map_err(failed)?;
        // Only a model that takes pixels as its quantised input gains from a plan of its own;
        // any other is fed pixels normalised on the host.
        let pixel_model = options
            .pixels
            .map(|scale| onnx::with_pixel_input(path, scale))
            .transpose()?;
        let pixels = match pixel_model {
            Some(model) if model.quantized => Some(plan(model.proto).map_err(failed)?),
            _ => None,
        };
        Ok(Box::new(TractModel { state, pixels }))
    }
}

/// A request's buffer as tract's tensor, as it is: no copy.
fn value<T: Datum>(shape: Vec<usize>, data: Vec<T>) -> Result<TValue> {
    tract_ndarray::ArrayD::from_shape_vec(shape, data)
        .map(IntoTValue::into_tvalue)
        .map_err(|e| Error::internal(format!("tract input: {e}")))
}

/// A request's tensor as tract's, of the same type: moved, not copied (BYTES become the Rust
/// strings tract holds, so they must be UTF-8).
pub(crate) fn tract_value(tensor: Tensor) -> Result<TValue> {
    let Tensor { shape, data } = tensor;
    match data {
        TensorData::Bool(v) => value(shape, v),
        TensorData::U8(v) => value(shape, v),
        TensorData::U16(v) => value(shape, v),
        TensorData::U32(v) => value(shape, v),
        TensorData::U64(v) => value(shape, v),
        TensorData::I8(v) => value(shape, v),
        TensorData::I16(v) => value(shape, v),
        TensorData::I32(v) => value(shape, v),
        TensorData::I64(v) => value(shape, v),
        TensorData::F16(v) => value(shape, v),
        TensorData::F32(v) => value(shape, v),
        TensorData::F64(v) => value(shape, v),
        TensorData::BF16(_) => Err(Error::invalid(
            "tract has no BF16 tensors: serve this model with ONNX Runtime",
        )),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, bytes)| {
                    String::from_utf8(bytes).map_err(|_| {
                        Error::invalid(format!(
                            "BYTES element {i} is not UTF-8: tract takes strings as text"
                        ))
                    })
                })
                .collect::<Result<Vec<String>>>()?;
            value(shape, strings)
        }
    }
}

/// One of tract's values as a tensor of the same type.
pub(crate) fn tensor_of(value: &TValue) -> Result<Tensor> {
    fn values<T: Datum + Clone>(value: &TValue) -> Result<Vec<T>> {
        value
            .to_plain_array_view::<T>()
            .map(|view| view.iter().cloned().collect())
            .map_err(|e| Error::internal(format!("tract output: {e}")))
    }
    let data = match value.datum_type() {
        DatumType::Bool => TensorData::Bool(values(value)?),
        DatumType::U8 => TensorData::U8(values(value)?),
        DatumType::U16 => TensorData::U16(values(value)?),
        DatumType::U32 => TensorData::U32(values(value)?),
        DatumType::U64 => TensorData::U64(values(value)?),
        DatumType::I8 => TensorData::I8(values(value)?),
        DatumType::I16 => TensorData::I16(values(value)?),
        DatumType::I32 => TensorData::I32(values(value)?),
        DatumType::I64 => TensorData::I64(values(value)?),
        DatumType::F16 => TensorData::F16(values(value)?),
        DatumType::F32 => TensorData::F32(values(value)?),
        DatumType::F64 => TensorData::F64(values(value)?),
        DatumType::String => TensorData::Bytes(
            values::<String>(value)?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        ),
        // Shapes tract computes symbolically come out as its dimension type: ONNX says INT64.
        DatumType::TDim => {
            let integers = value
                .cast_to::<i64>()
                .map_err(|e| Error::internal(format!("tract output: {e}")))?;
            TensorData::I64(
                integers
                    .to_plain_array_view::<i64>()
                    .map_err(|e| Error::internal(format!("tract output: {e}")))?
                    .iter()
                    .copied()
                    .collect(),
            )
        }
        other => {
            return Err(Error::internal(format!(
                "tract gave an output of type {other:?}, which the protocols cannot carry"
            )));
        }
    };
    Tensor::new(value.shape().to_vec(), data)
}

impl Runnable for TractModel {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        // Pixels as they are to a model that takes them as its quantised input.
        let (state, values) = match (&mut self.pixels, Input::lone_pixels(inputs)) {
            (Some(state), Ok(pixels)) => (state, tvec![value(pixels.shape, pixels.data)?]),
            (_, inputs) => {
                let inputs =
                    inputs.map_or_else(|inputs| inputs, |pixels| vec![Input::Pixels(pixels)]);
                // Any other pixels are normalised on the host.
                let values = inputs
                    .into_iter()
                    .map(|input| tract_value(input.into_tensor()))
                    .collect::<Result<TVec<TValue>>>()?;
                (&mut self.state, values)
            }
        };
        let outputs = state
            .run(values)
            .map_err(|e| Error::internal(format!("tract inference failed: {e:#}")))?;
        outputs.iter().map(tensor_of).collect()
    }
}
