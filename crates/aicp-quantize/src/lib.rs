//! Post-training INT8 quantisation of float ONNX models, for any model ONNX Runtime's own
//! quantiser takes:
//!
//! - **static** (`minmax`, `percentile`, `entropy`), in the QDQ format that ONNX Runtime fuses
//!   into integer kernels and TensorRT reads ([`qdq`]):
//!   - the weights of every Gemm, MatMul and Conv whose weight is an initializer become int8
//!     (symmetric, per tensor or per output channel) behind a DequantizeLinear; their biases
//!     int32 at the scale of input times weight;
//!   - the activations those operators read and write get a QuantizeLinear/DequantizeLinear
//!     pair (uint8, per tensor), with scales and zero points calibrated on real samples
//!     ([`mod@calibrate`]) of any inputs, each at its own shape ([`samples`]);
//!   - every other operator stays in float. Scales are fixed in the file, so a sample's answer
//!     never depends on the samples it is batched with;
//!   - weights per channel need opset 13: a model of opset 11 or 12 is moved there first
//!     ([`opset`]).
//! - **dynamic** ([`dynamic`]): int8 weights for MatMul and Gemm, their activations quantised at
//!   run time from each run's own range; no calibration. What text encoders use on CPUs.

pub mod calibrate;
pub mod dynamic;
pub mod opset;
pub mod qdq;
pub mod samples;

use aicp_core::ModelSignature;
use aicp_engine::Engine;
use serde::Serialize;

pub use calibrate::{Method, Ranges, calibrate};
pub use qdq::quantize_graph;
pub use samples::Sample;

/// How to quantise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Options {
    pub method: Method,
    /// One weight scale per output channel instead of one per tensor.
    pub per_channel: bool,
    /// The range the model's input is declared to take (model.toml `[input] range`), used for
    /// the input instead of a calibrated one: every value in it stays representable, and
    /// `[0, 1]` makes the quantised input exactly the 8-bit pixels.
    pub input_range: Option<[f32; 2]>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::MinMax,
            per_channel: false,
            input_range: None,
        }
    }
}

/// Quantises the float ONNX model in `model` (protobuf bytes, a model of `signature`); a
/// static method calibrates its activations on `samples`, run on `engine`. Returns the
/// quantised model's bytes.
pub fn quantize(
    engine: &dyn Engine,
    model: &[u8],
    signature: &ModelSignature,
    samples: &[Sample],
    options: &Options,
) -> anyhow::Result<Vec<u8>> {
    aicp_engine::tract::without_amx_kernels();
    use prost::Message;
    let mut proto = tract_onnx::pb::ModelProto::decode(model)
        .map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    if options.method == Method::Dynamic {
        return Ok(dynamic::quantize_dynamic(proto, options.per_channel)?.encode_to_vec());
    }
    if options.per_channel {
        opset::upgrade_to_13(&mut proto)?;
    }
    qdq::lift_constants(&mut proto);
    let plan = qdq::plan(&proto, options.per_channel)?;
    let ranges = calibrate(
        engine,
        &proto,
        signature,
        &plan.activations,
        samples,
        options.method,
    )?;
    let quantized = quantize_graph(proto, &plan, &ranges, options)?;
    Ok(quantized.encode_to_vec())
}
