//! What an ONNX file declares, read from its protobuf: input and output names, element types
//! and shapes (symbolic dimensions as `None`), and the operator that produces the first output
//! (a trailing Softmax means the model already outputs probabilities); and the rewrite that lets
//! a float32 image model take 8-bit pixels ([`with_pixel_input`]).

use std::collections::HashSet;
use std::path::Path;

use aicp_core::{DataType, Error, ModelSignature, PixelScale, Result, TensorSpec};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::onnx_build::{f32_tensor, f32_values, int_attr, int_values, node};

/// What [`inspect`] found in a model file.
#[derive(Debug, Clone)]
pub struct OnnxInfo {
    pub signature: ModelSignature,
    /// The operator type of the node producing the first output, e.g. "Softmax".
    pub final_op: Option<String>,
    /// Whether the model computes in integers: QDQ pairs (`aicp quantize`, onnxruntime's
    /// `quantize_static`) or quantised operators.
    pub quantized: bool,
}

/// Operators that only a quantised model has.
const QUANTIZED_OPS: [&str; 8] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QGemm",
];

/// Reads the signature and a few facts from the ONNX file at `path`.
pub fn inspect(path: &Path) -> Result<OnnxInfo> {
    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(|e| {
        Error::invalid(format!(
            "{} is not a readable ONNX model: {e}",
            path.display()
        ))
    })?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{} has no graph", path.display())))?;
    // Initializers may be listed as inputs too (older exporters); they are not fed by callers.
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initializers.contains(v.name.as_str()))
        .map(spec)
        .collect::<Result<Vec<_>>>()?;
    let outputs = graph.output.iter().map(spec).collect::<Result<Vec<_>>>()?;
    // A model without inputs (a constant, a generator) is a model; one without outputs is not.
    if outputs.is_empty() {
        return Err(Error::invalid(format!(
            "{} declares no outputs",
            path.display()
        )));
    }
    let final_op = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| *o == outputs[0].name))
        .map(|n| n.op_type.clone());
    let quantized = graph
        .node
        .iter()
        .any(|n| QUANTIZED_OPS.contains(&n.op_type.as_str()));
    Ok(OnnxInfo {
        signature: ModelSignature { inputs, outputs },
        final_op,
        quantized,
    })
}

/// A model rewritten to take 8-bit pixels ([`with_pixel_input`]).
#[derive(Debug)]
pub struct PixelModel {
    pub proto: pb::ModelProto,
    /// Whether the pixels are the model's quantised input as they are (no conversion in
    /// the graph), rather than normalised by a prologue.
    pub quantized: bool,
}

/// The model at `path` with its one float32 input turned into uint8 pixels, normalised inside
/// the graph by `Cast`, `Mul` and `Add` nodes placed before everything else: an engine that
/// runs the graph on a GPU then moves one byte per value to the device instead of four, and
/// converts there. A quantised model whose input is quantised to the pixels' own scale needs
/// no conversion at all: the pixels are its quantised input, and its QuantizeLinear goes.
pub fn with_pixel_input(path: &Path, scale: PixelScale) -> Result<PixelModel> {
    let failed = |why: String| Error::invalid(format!("{}: {why}", path.display()));
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| failed(format!("not a readable ONNX model: {e}")))?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| failed("no graph".into()))?;
    let initializers: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut fed = graph
        .input
        .iter_mut()
        .filter(|v| !initializers.contains(&v.name));
    let (Some(input), None) = (fed.next(), fed.next()) else {
        return Err(failed("pixels need a model with exactly one input".into()));
    };
    use pb::tensor_proto::DataType as T;
    use pb::type_proto::Value;
    let Some(Value::TensorType(tensor)) = input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return Err(failed(format!("input {:?} is not a tensor", input.name)));
    };
    if tensor.elem_type != T::Float as i32 {
        return Err(failed(format!(
            "input {:?} is not float32; pixels are normalised only into float32",
            input.name
        )));
    }
    tensor.elem_type = T::Uint8 as i32;
    let name = input.name.clone();
    if let Some(quantizers) = pixel_quantizers(graph, &name, scale) {
        // The input's only readers quantise it to exactly the pixels: drop them, and let
        // what read their output read the pixels.
        graph.node.retain(|n| !quantizers.contains(&n.output[0]));
        for node in &mut graph.node {
            for value in node.input.iter_mut().filter(|v| quantizers.contains(*v)) {
                value.clone_from(&name);
            }
        }
        return Ok(PixelModel {
            proto,
            quantized: true,
        });
    }
    // Every node that read the float input reads the normalised pixels instead.
    let normalised = format!("{name}__normalised");
    for node in &mut graph.node {
        for value in node.input.iter_mut().filter(|v| **v == name) {
            value.clone_from(&normalised);
        }
    }
    let (cast, step, scaled, offset) = (
        format!("{name}__float"),
        format!("{name}__pixel_step"),
        format!("{name}__scaled"),
        format!("{name}__pixel_offset"),
    );
    for (constant, value) in [(&step, scale.step), (&offset, scale.offset)] {
        graph.initializer.push(f32_tensor(constant, &[], &[value]));
    }
    let node = |op: &str, inputs: &[&str], output: &str, attributes| {
        node(op, output, inputs, output, attributes)
    };
    let prologue = [
        node(
            "Cast",
            &[&name],
            &cast,
            vec![int_attr("to", T::Float as i64)],
        ),
        node("Mul", &[&cast, &step], &scaled, vec![]),
        node("Add", &[&scaled, &offset], &normalised, vec![]),
    ];
    graph.node.splice(0..0, prologue);
    Ok(PixelModel {
        proto,
        quantized: false,
    })
}

/// The outputs of the QuantizeLinear nodes that read `input`, if they are its only readers
/// and each quantises it to uint8 with the pixels' own scale and zero point
/// (`value = (pixel - zero point) * scale` is `scale`'s map of 0-255, as `[0, 1]` with scale
/// 1/255 and zero point 0): the pixels themselves.
fn pixel_quantizers(graph: &pb::GraphProto, input: &str, scale: PixelScale) -> Option<Vec<String>> {
    let readers: Vec<&pb::NodeProto> = graph
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == input))
        .collect();
    let initializer = |name: &str| graph.initializer.iter().find(|t| t.name == name);
    let mut outputs = Vec::new();
    for node in readers {
        let [x, node_scale, zero_point] = node.input.as_slice() else {
            return None;
        };
        if node.op_type != "QuantizeLinear" || !node.domain.is_empty() || x != input {
            return None;
        }
        let node_scale = scalar_f32(initializer(node_scale)?)?;
        let zero_point = scalar_u8(initializer(zero_point)?)?;
        let expected_zero = -scale.offset / scale.step;
        let same_scale = (node_scale - scale.step).abs() <= 1e-6 * scale.step.abs();
        if !same_scale || (f32::from(zero_point) - expected_zero).abs() > 1e-3 {
            return None;
        }
        outputs.push(node.output.first()?.clone());
    }
    (!outputs.is_empty()).then_some(outputs)
}

fn scalar_f32(t: &pb::TensorProto) -> Option<f32> {
    match f32_values(t)?[..] {
        [v] => Some(v),
        _ => None,
    }
}

fn scalar_u8(t: &pb::TensorProto) -> Option<u8> {
    if t.data_type != pb::tensor_proto::DataType::Uint8 as i32 {
        return None;
    }
    match int_values(t)?[..] {
        [v] => u8::try_from(v).ok(),
        _ => None,
    }
}

fn spec(value: &pb::ValueInfoProto) -> Result<TensorSpec> {
    use pb::type_proto::Value;
    let tensor = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(tensor)) => tensor,
        _ => {
            return Err(Error::invalid(format!(
                "{:?} is not a tensor; only tensor inputs and outputs are supported",
                value.name
            )));
        }
    };
    // No shape at all: the rank is open. A dimension without a value (a symbol, or nothing)
    // varies; so does a declared 0, which some exporters write for "unknown".
    let shape = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => {
                    Some(n as usize)
                }
                _ => None,
            })
            .collect()
    });
    Ok(TensorSpec {
        name: value.name.clone(),
        datatype: datatype(tensor.elem_type),
        shape,
    })
}

fn datatype(elem_type: i32) -> DataType {
    use pb::tensor_proto::DataType as T;
    match T::try_from(elem_type) {
        Ok(T::Float) => DataType::F32,
        Ok(T::Double) => DataType::F64,
        Ok(T::Float16) => DataType::F16,
        Ok(T::Bfloat16) => DataType::BF16,
        Ok(T::Int8) => DataType::I8,
        Ok(T::Int16) => DataType::I16,
        Ok(T::Int32) => DataType::I32,
        Ok(T::Int64) => DataType::I64,
        Ok(T::Uint8) => DataType::U8,
        Ok(T::Uint16) => DataType::U16,
        Ok(T::Uint32) => DataType::U32,
        Ok(T::Uint64) => DataType::U64,
        Ok(T::Bool) => DataType::Bool,
        Ok(T::String) => DataType::Bytes,
        _ => DataType::Other,
    }
}

#[cfg(test)]
mod tests {
    use aicp_core::{Pixels, Tensor};

    use super::*;
    use crate::Engine;
    use crate::bundled_model;
    use crate::tract::TractEngine;

    /// Runs `proto` on tract, fed `pixels` as uint8.
    fn run_uint8(proto: &pb::ModelProto, pixels: &Pixels) -> Tensor {
        use tract_onnx::prelude::{
            InferenceModelExt, IntoRunnable, IntoTValue, tract_ndarray, tvec,
        };
        let plan = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let input =
            tract_ndarray::ArrayD::from_shape_vec(pixels.shape.clone(), pixels.data.clone())
                .unwrap()
                .into_tvalue();
        let output = plan.run(tvec![input]).unwrap().remove(0);
        crate::tract::tensor_of(&output).unwrap()
    }

    #[test]
    fn the_pixel_graph_normalises_as_the_host_does() {
        let model = bundled_model();
        let scale = PixelScale::for_range([-0.5, 2.0]);
        let pixel_model = with_pixel_input(&model, scale).unwrap();
        assert!(!pixel_model.quantized);
        let proto = pixel_model.proto;
        let graph = proto.graph.as_ref().unwrap();
        let ops: Vec<&str> = graph
            .node
            .iter()
            .take(3)
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops, ["Cast", "Mul", "Add"]);
        let pixels = Pixels {
            shape: vec![3, 1, 28, 28],
            data: (0..3 * 784).map(|i| (i * 37 % 256) as u8).collect(),
            scale,
        };
        let through_graph = run_uint8(&proto, &pixels);
        let info = inspect(&model).unwrap();
        let floats = TractEngine
            .load(&model, &info.signature, &Default::default())
            .unwrap()
            .run(vec![pixels.to_tensor().into()])
            .unwrap()
            .remove(0);
        assert_eq!(through_graph.shape, floats.shape);
        let worst =
            aicp_core::max_difference(through_graph.as_f32().unwrap(), floats.as_f32().unwrap());
        assert!(
            worst < 1e-4,
            "uint8 graph and host normalisation differ by {worst}"
        );
    }

    #[test]
    fn pixels_need_one_float_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.onnx");
        let mut proto = tract_onnx::onnx()
            .proto_model_for_path(bundled_model())
            .unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let mut second = graph.input[0].clone();
        second.name = "second".into();
        graph.input.push(second);
        std::fs::write(&path, prost::Message::encode_to_vec(&proto)).unwrap();
        let err = with_pixel_input(&path, PixelScale::for_range([0.0, 1.0])).unwrap_err();
        assert!(err.message.contains("exactly one input"), "{err}");
        let missing = dir.path().join("missing.onnx");
        let err = with_pixel_input(&missing, PixelScale::for_range([0.0, 1.0])).unwrap_err();
        assert!(err.message.contains("not a readable ONNX model"), "{err}");
    }
}
