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
//!   - when the model with all of them in INT8 misses [`Options::max_output_error`], the
//!     operators whose INT8 costs the outputs most stay in float, the fewest that meet it
//!     ([`mixed`]);
//!   - weights per channel need opset 13: a model of opset 11 or 12 is moved there first
//!     ([`opset`]).
//! - **dynamic** ([`dynamic`]): int8 weights for MatMul and Gemm, their activations quantised at
//!   run time from each run's own range; no calibration. What text encoders use on CPUs.

pub mod calibrate;
pub mod dynamic;
pub mod mixed;
pub mod opset;
pub mod qdq;
pub mod samples;

use std::collections::HashSet;

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
    /// For the static methods: the largest relative error of any output against the float
    /// model's, on the calibration samples, that the model with every operator in INT8 may
    /// have before the operators most sensitive to INT8 are kept in float ([`mixed`]).
    /// `None`: all in INT8.
    pub max_output_error: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::MinMax,
            per_channel: false,
            input_range: None,
            max_output_error: None,
        }
    }
}

/// A quantised model.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The model's protobuf bytes.
    pub model: Vec<u8>,
    /// How many operators (Gemm, MatMul, Conv) could be quantised.
    pub operators: usize,
    /// Those of them left in float to meet [`Options::max_output_error`], by name, the most
    /// sensitive to INT8 first.
    pub kept_in_float: Vec<String>,
}

/// Quantises the float ONNX model in `model` (protobuf bytes, a model of `signature`); a
/// static method calibrates its activations on `samples`, run on `engine`, which also checks
/// the result when [`Options::max_output_error`] is set.
pub fn quantize(
    engine: &dyn Engine,
    model: &[u8],
    signature: &ModelSignature,
    samples: &[Sample],
    options: &Options,
) -> anyhow::Result<Quantized> {
    aicp_engine::tract::without_amx_kernels();
    use prost::Message;
    let mut proto = tract_onnx::pb::ModelProto::decode(model)
        .map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    if options.method == Method::Dynamic {
        let (model, operators) = dynamic::quantize_dynamic(proto, options.per_channel)?;
        return Ok(Quantized {
            model: model.encode_to_vec(),
            operators,
            kept_in_float: Vec::new(),
        });
    }
    if options.per_channel {
        opset::upgrade_to_13(&mut proto)?;
    }
    qdq::lift_constants(&mut proto);
    let plan = qdq::plan(&proto, options.per_channel, &HashSet::new())?;
    let ranges = calibrate(
        engine,
        &proto,
        signature,
        &plan.activations,
        samples,
        options.method,
    )?;
    let with_float = |float_nodes: &HashSet<usize>| {
        let plan = qdq::plan(&proto, options.per_channel, float_nodes)?;
        quantize_graph(proto.clone(), &plan, &ranges, options)
    };
    let all_int8 = quantize_graph(proto.clone(), &plan, &ranges, options)?;
    let mut kept = Vec::new();
    if let Some(bound) = options.max_output_error {
        let checker = mixed::Checker::new(engine, &proto, signature, samples)?;
        if checker.error(&all_int8, samples.len())? > bound {
            let found = mixed::keep_in_float(&plan.nodes, bound, |float_nodes, samples| {
                checker.error(&with_float(float_nodes)?, samples)
            })?;
            kept = found.unwrap_or_default();
        }
    }
    let quantized = if kept.is_empty() {
        all_int8
    } else {
        with_float(&kept.iter().copied().collect())?
    };
    let graph = proto.graph.as_ref().expect("planned");
    Ok(Quantized {
        model: quantized.encode_to_vec(),
        operators: plan.nodes.len(),
        kept_in_float: kept
            .iter()
            .map(|&index| qdq::node_name(&graph.node[index]))
            .collect(),
    })
}
