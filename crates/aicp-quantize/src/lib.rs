//! Static post-training INT8 quantisation of float ONNX models, in the QDQ format that ONNX
//! Runtime fuses into integer kernels and TensorRT reads:
//!
//! - the weights of every Gemm, MatMul and Conv whose weight is an initializer become int8
//!   (symmetric, per tensor or per output channel) behind a DequantizeLinear; their biases
//!   int32 at the scale of input times weight;
//! - the activations those operators read and write get a QuantizeLinear/DequantizeLinear pair
//!   (uint8, per tensor), with scales and zero points calibrated on real samples
//!   ([`mod@calibrate`]);
//! - every other operator stays in float.
//!
//! Static only: scales are fixed in the file, so a sample's answer never depends on the
//! samples it is batched with.

pub mod calibrate;
pub mod qdq;
pub mod samples;

use serde::Serialize;

pub use calibrate::{Method, Ranges, calibrate};
pub use qdq::quantize_graph;

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

/// Quantises the float ONNX model in `model` (protobuf bytes), calibrating its activations on
/// `samples`: its single float input for each sample, shaped `sample_shape`, one after
/// another.
/// Returns the QDQ model's bytes.
pub fn quantize(
    model: &[u8],
    samples: &[f32],
    sample_shape: &[usize],
    options: &Options,
) -> anyhow::Result<Vec<u8>> {
    aicp_engine::tract::without_amx_kernels();
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(model)
        .map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    let plan = qdq::plan(&proto)?;
    let ranges = calibrate(
        &proto,
        &plan.activations,
        samples,
        sample_shape,
        options.method,
    )?;
    let quantized = quantize_graph(proto, &plan, &ranges, options)?;
    Ok(quantized.encode_to_vec())
}
