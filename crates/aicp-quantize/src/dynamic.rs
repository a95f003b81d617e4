//! Dynamic quantisation, after ONNX Runtime's `quantize_dynamic`: the weight of every MatMul
//! and Gemm that is an initializer becomes int8 (symmetric; per tensor, or per output column),
//! and the node becomes
//!
//! ```text
//! x_q, x_scale, x_zero = DynamicQuantizeLinear(x)       (uint8, from this run's own range)
//! y = Cast(MatMulInteger(x_q, w_q, x_zero)) * (x_scale * w_scale)  [+ bias, for a Gemm]
//! ```
//!
//! No calibration: each run measures its input's range, so a sample's answer depends a little
//! on the samples it runs with. Everything else stays in float.

use std::collections::{HashMap, HashSet};

use aicp_engine::onnx_build::{int_attr, node};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

use crate::qdq::{
    float_values, initializers_by_name, lift_constants, quantize_weight, tensor_i8,
    vector_or_scalar_f32,
};

/// DynamicQuantizeLinear is opset 11's.
const MIN_OPSET: i64 = 11;

/// `proto` with its MatMul and Gemm nodes on int8 weights, their inputs quantised at run time,
/// and how many nodes that is.
pub fn quantize_dynamic(
    mut proto: ModelProto,
    per_channel: bool,
) -> anyhow::Result<(ModelProto, usize)> {
    let opset = crate::opset::of(&proto);
    anyhow::ensure!(
        opset >= MIN_OPSET,
        "the model uses ONNX opset {opset}; dynamic quantisation needs {MIN_OPSET} or later"
    );
    lift_constants(&mut proto);
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let initializers = initializers_by_name(graph);
    // Each input quantised once, however many nodes read it.
    let mut quantised_inputs: HashMap<String, [String; 3]> = HashMap::new();
    let mut quantised_weights: HashSet<String> = HashSet::new();
    let mut new_initializers = Vec::new();
    let mut rewritten = Vec::with_capacity(graph.node.len());
    let mut count = 0;
    for original in std::mem::take(&mut graph.node) {
        let Some(weight) = weight_of(&original, &initializers) else {
            rewritten.push(original);
            continue;
        };
        count += 1;
        let x = &original.input[0];
        let name = original.output[0].clone();
        let [x_q, x_scale, x_zero] = quantised_inputs
            .entry(x.clone())
            .or_insert_with(|| {
                let names = [
                    format!("{x}_dynamic_q"),
                    format!("{x}_dynamic_scale"),
                    format!("{x}_dynamic_zero_point"),
                ];
                rewritten.push(NodeProto {
                    op_type: "DynamicQuantizeLinear".into(),
                    name: format!("{x}_dynamic_quantize"),
                    input: vec![x.clone()],
                    output: names.to_vec(),
                    ..Default::default()
                });
                names
            })
            .clone();
        let w = format!("{}_dynamic", original.input[1]);
        // A weight two nodes share (tied embeddings) is quantised once.
        if quantised_weights.insert(w.clone()) {
            let (q, scales) = quantize_weight(&weight, 1, per_channel)?;
            new_initializers.push(tensor_i8(&format!("{w}_q"), &weight.dims, &q));
            new_initializers.push(vector_or_scalar_f32(&format!("{w}_scale"), &scales));
        }
        rewritten.push(node(
            "MatMulInteger",
            &format!("{name}_matmul_integer"),
            &[&x_q, &format!("{w}_q"), &x_zero],
            &format!("{name}_int32"),
            vec![],
        ));
        rewritten.push(node(
            "Cast",
            &format!("{name}_cast"),
            &[&format!("{name}_int32")],
            &format!("{name}_float"),
            vec![int_attr("to", DataType::Float as i64)],
        ));
        rewritten.push(node(
            "Mul",
            &format!("{name}_scales"),
            &[&x_scale, &format!("{w}_scale")],
            &format!("{name}_scale"),
            vec![],
        ));
        let bias = (original.op_type == "Gemm")
            .then(|| original.input.get(2).filter(|b| !b.is_empty()))
            .flatten();
        let product = if bias.is_some() {
            format!("{name}_unbiased")
        } else {
            name.clone()
        };
        rewritten.push(node(
            "Mul",
            &format!("{name}_rescale"),
            &[&format!("{name}_float"), &format!("{name}_scale")],
            &product,
            vec![],
        ));
        if let Some(bias) = bias {
            rewritten.push(node(
                "Add",
                &format!("{name}_bias"),
                &[&product, bias],
                &name,
                vec![],
            ));
        }
    }
    anyhow::ensure!(
        count > 0,
        "nothing to quantise dynamically: no MatMul or Gemm node with a float weight initializer"
    );
    graph.node = rewritten;
    graph.initializer.extend(new_initializers);
    // The weights now used only in int8 are dropped.
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let kept: Vec<TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| read.contains(t.name.as_str()))
        .cloned()
        .collect();
    graph.initializer = kept;
    Ok((proto, count))
}

/// The weight of a MatMul or Gemm that dynamic quantisation takes, as `[K, N]` (a Gemm's
/// `transB` weight transposed): a float initializer of rank 2
/// read as the second input, by a node that reads no initializer first. A Gemm qualifies only
/// as a plain product (no `transA`, `alpha` and `beta` of 1).
fn weight_of(node: &NodeProto, initializers: &HashMap<String, TensorProto>) -> Option<TensorProto> {
    if !node.domain.is_empty() || !matches!(node.op_type.as_str(), "MatMul" | "Gemm") {
        return None;
    }
    let weight = initializers.get(node.input.get(1)?)?;
    if weight.data_type != DataType::Float as i32
        || weight.dims.len() != 2
        || initializers.contains_key(&node.input[0])
    {
        return None;
    }
    let attribute = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let trans_b = attribute("transB").is_some_and(|a| a.i != 0);
    if node.op_type == "Gemm"
        && (attribute("transA").is_some_and(|a| a.i != 0)
            || attribute("alpha").is_some_and(|a| a.f != 1.0)
            || attribute("beta").is_some_and(|a| a.f != 1.0))
    {
        return None;
    }
    if !trans_b {
        return Some(weight.clone());
    }
    // [N, K] to [K, N].
    let values = float_values(weight).ok()?;
    let (n, k) = (weight.dims[0] as usize, weight.dims[1] as usize);
    let mut transposed = vec![0.0f32; values.len()];
    for row in 0..n {
        for col in 0..k {
            transposed[col * n + row] = values[row * k + col];
        }
    }
    let mut weight = aicp_engine::onnx_build::f32_tensor(&weight.name, &[k, n], &transposed);
    weight.name = node.input[1].clone();
    Some(weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two MatMuls that share one weight (tied, as embeddings often are) get one int8 copy of
    /// it, and the float weight is dropped.
    #[test]
    fn a_shared_weight_is_quantised_once() {
        let proto = crate::qdq::tied_matmuls();
        let (quantised, operators) = quantize_dynamic(proto, false).unwrap();
        assert_eq!(operators, 2);
        let graph = quantised.graph.unwrap();
        let mut names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["w_dynamic_q", "w_dynamic_scale"]);
        let integer = graph
            .node
            .iter()
            .filter(|n| n.op_type == "MatMulInteger")
            .count();
        assert_eq!(integer, 2);
    }
}
