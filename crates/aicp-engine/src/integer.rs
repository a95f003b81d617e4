//! The rewrite that lets tract run a QDQ model (`aicp quantize`, onnxruntime's
//! `quantize_static`) on its integer kernels.
//!
//! tract runs a QDQ graph as it is written: the int8 weights are dequantised back to float at
//! load, every product runs in float, and each activation is quantised and dequantised around
//! it, so an INT8 model ran slower than its float original. Two rewrites make it run the way
//! ONNX Runtime fuses it:
//!
//! - **Pass-through.** `DequantizeLinear → Flatten | Reshape | MaxPool → QuantizeLinear`, with
//!   the same scale and zero point on both sides, runs the operator on the quantised tensor
//!   itself; a Relu between the two, with zero point 0, is dropped (no quantised value is
//!   below it).
//! - **Integer products.** A Gemm, MatMul or Conv whose input and int8 weight (symmetric, per
//!   tensor or per output channel) are dequantised, and whose bias, if any, is int32 at input
//!   scale × weight scale, becomes `MatMulInteger`/`ConvInteger`, the bias added in int32, and
//!   one float multiply by input scale × weight scale: the integer kernel's sum, scaled once.
//!
//! Both are exact: the rewritten graph gives the QDQ graph's answers (tested against ONNX
//! Runtime on the bundled models). A node that does not match the pattern exactly stays as it
//! was. The graph is looked up through maps, so a large (or hostile) graph costs time in
//! proportion to its size and the number of folds.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use crate::onnx_build::{f32_tensor, f32_values, int_attr, int_values, ints_attr, node};

/// `proto` with its QDQ products rewritten to integer operators, and how many were.
pub fn with_integer_ops(mut proto: ModelProto) -> (ModelProto, usize) {
    // Its graphs run tract's integer kernels, whichever code runs them.
    crate::tract::without_amx_kernels();
    let Some(graph) = proto.graph.as_mut() else {
        return (proto, 0);
    };
    while fold_pass_through(graph) {}
    let rewrites: Vec<_> = {
        let index = Index::new(graph);
        (0..graph.node.len())
            .filter_map(|i| integer_product(&index, i).map(|rewrite| (i, rewrite)))
            .collect()
    };
    let count = rewrites.len();
    // From the last, so each index still points at its node.
    for (i, (nodes, initializers)) in rewrites.into_iter().rev() {
        graph.node.splice(i..=i, nodes);
        graph.initializer.extend(initializers);
    }
    remove_unread_nodes(graph);
    (proto, count)
}

/// A graph's tensors by name: the initializers, the node making each, how many nodes read it.
struct Index<'g> {
    graph: &'g GraphProto,
    initializers: HashMap<&'g str, &'g TensorProto>,
    producers: HashMap<&'g str, usize>,
    readers: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Self {
        let mut producers = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for output in &node.output {
                producers.insert(output.as_str(), i);
            }
            for input in &node.input {
                readers.entry(input.as_str()).or_default().push(i);
            }
        }
        Self {
            graph,
            initializers: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            producers,
            readers,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    fn initializer(&self, name: &str) -> Option<&'g TensorProto> {
        self.initializers.get(name).copied()
    }

    fn readers(&self, tensor: &str) -> &[usize] {
        self.readers.get(tensor).map_or(&[], Vec::as_slice)
    }

    fn is_graph_output(&self, tensor: &str) -> bool {
        self.outputs.contains(tensor)
    }

    /// The quantisation of a QuantizeLinear or DequantizeLinear node, read from its scale and
    /// zero point initializers.
    fn quantization(&self, node: &NodeProto) -> Option<Dequantized> {
        let [value, scale, zero_point] = node.input.as_slice() else {
            return None;
        };
        let zero = self.initializer(zero_point)?;
        Some(Dequantized {
            quantized: value.clone(),
            zero_point_name: zero_point.clone(),
            scale: f32_values(self.initializer(scale)?)?,
            zero_point: int_values(zero)?,
            zero_point_type: zero.data_type,
            axis: int_attribute(node, "axis", 1),
        })
    }

    /// How `tensor` is dequantised, if a DequantizeLinear makes it.
    fn dequantized(&self, tensor: &str) -> Option<Dequantized> {
        let node = &self.graph.node[*self.producers.get(tensor)?];
        (node.op_type == "DequantizeLinear" && node.domain.is_empty())
            .then(|| self.quantization(node))
            .flatten()
    }
}

/// A tensor made by a DequantizeLinear whose scale and zero point are initializers.
struct Dequantized {
    /// The quantised tensor.
    quantized: String,
    zero_point_name: String,
    scale: Vec<f32>,
    zero_point: Vec<i64>,
    zero_point_type: i32,
    /// The axis of a per-channel scale.
    axis: i64,
}

impl Dequantized {
    fn per_tensor(&self) -> bool {
        self.scale.len() == 1 && self.zero_point.len() == 1
    }

    /// The same quantisation as `other`: same type, scale and zero point.
    fn same_as(&self, other: &Dequantized) -> bool {
        self.zero_point_type == other.zero_point_type
            && self.scale == other.scale
            && self.zero_point == other.zero_point
    }
}

fn int_attribute(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// Folds one pass-through operator between a DequantizeLinear and a QuantizeLinear of the same
/// quantisation; false when there is none left.
fn fold_pass_through(graph: &mut GraphProto) -> bool {
    let found = {
        let index = Index::new(graph);
        graph.node.iter().enumerate().find_map(|(i, op)| {
            let kind = op.op_type.as_str();
            if !op.domain.is_empty()
                || !["Flatten", "Reshape", "MaxPool", "Relu"].contains(&kind)
                || op.output.len() != 1
                || index.is_graph_output(&op.output[0])
            {
                return None;
            }
            let input = index.dequantized(op.input.first()?)?;
            let &[reader] = index.readers(&op.output[0]) else {
                return None;
            };
            let quantizer = &graph.node[reader];
            let output = (quantizer.op_type == "QuantizeLinear" && quantizer.domain.is_empty())
                .then(|| index.quantization(quantizer))
                .flatten()?;
            let zero_floor =
                input.zero_point == [0] && input.zero_point_type == DataType::Uint8 as i32;
            // A graph lists a node after what it reads; one that does not is left alone.
            let foldable = reader > i
                && input.per_tensor()
                && input.same_as(&output)
                && (kind != "Relu" || zero_floor)
                && !index.is_graph_output(&quantizer.output[0]);
            foldable.then(|| (i, reader, input.quantized, quantizer.output[0].clone()))
        })
    };
    let Some((op, quantizer, quantized, requantized)) = found else {
        return false;
    };
    // The QuantizeLinear comes after the operator: removing it leaves the operator's index.
    graph.node.remove(quantizer);
    if graph.node[op].op_type == "Relu" {
        // The quantised values are its answer: what read the requantised tensor reads them.
        graph.node.remove(op);
        for node in &mut graph.node {
            for value in node.input.iter_mut().filter(|v| **v == requantized) {
                value.clone_from(&quantized);
            }
        }
    } else {
        let op = &mut graph.node[op];
        op.input[0] = quantized;
        op.output[0] = requantized;
    }
    true
}

/// The integer form of the product at `index` and the initializers it adds, if the product
/// matches the pattern.
fn integer_product(index: &Index, at: usize) -> Option<(Vec<NodeProto>, Vec<TensorProto>)> {
    let product = &index.graph.node[at];
    let kind = product.op_type.as_str();
    if !product.domain.is_empty() || !["Gemm", "MatMul", "Conv"].contains(&kind) {
        return None;
    }
    let input = index.dequantized(product.input.first()?)?;
    let weight = index.dequantized(product.input.get(1)?)?;
    let weight_tensor = index.initializer(&weight.quantized)?;
    let transposed = kind == "Gemm" && int_attribute(product, "transB", 0) == 1;
    let weight_rank = weight_tensor.dims.len();
    // The output channel: a Conv weight's first axis, a [K, N] weight's last.
    let channel_axis = if kind == "Conv" || transposed { 0 } else { 1 };
    let channels = *weight_tensor.dims.get(channel_axis)? as usize;
    let gemm_plain = ["alpha", "beta"].iter().all(|name| {
        product
            .attribute
            .iter()
            .find(|a| a.name == *name)
            .is_none_or(|a| a.f == 1.0)
    }) && int_attribute(product, "transA", 0) == 0;
    let well_formed = input.per_tensor()
        && weight_tensor.data_type == DataType::Int8 as i32
        && weight.zero_point.iter().all(|&z| z == 0)
        && (weight.scale.len() == 1
            || (weight.scale.len() == channels && weight.axis == channel_axis as i64))
        && (if kind == "Conv" {
            weight_rank >= 3
        } else {
            weight_rank == 2
        })
        && (kind != "Gemm" || gemm_plain);
    if !well_formed {
        return None;
    }
    let rescale: Vec<f32> = weight.scale.iter().map(|w| input.scale[0] * w).collect();
    // Where the channel axis lies in the output: after the batch for a Conv, last otherwise.
    let spatial = if kind == "Conv" { weight_rank - 2 } else { 0 };
    let channel_dims = |len: usize| -> Vec<usize> {
        if len == 1 && spatial == 0 {
            vec![]
        } else {
            std::iter::once(len)
                .chain(std::iter::repeat_n(1, spatial))
                .collect()
        }
    };
    let output = &product.output[0];
    let name = |suffix: &str| format!("{output}__{suffix}");
    let mut nodes = Vec::new();
    let mut added = Vec::new();
    let weight_name = if transposed {
        let transposed_name = name("weight_t");
        let perm = ints_attr("perm", &[1, 0]);
        nodes.push(node(
            "Transpose",
            &transposed_name,
            &[&weight.quantized],
            &transposed_name,
            vec![perm],
        ));
        transposed_name
    } else {
        weight.quantized.clone()
    };
    let mut sum = name("int");
    let integer_op = if kind == "Conv" {
        "ConvInteger"
    } else {
        "MatMulInteger"
    };
    let attributes = if kind == "Conv" {
        product.attribute.clone()
    } else {
        vec![]
    };
    nodes.push(node(
        integer_op,
        &sum,
        &[&input.quantized, &weight_name, &input.zero_point_name],
        &sum,
        attributes,
    ));
    if let Some(bias) = product.input.get(2).filter(|b| !b.is_empty()) {
        let bias = index.dequantized(bias)?;
        let values = index.initializer(&bias.quantized)?;
        let at_product_scale = values.data_type == DataType::Int32 as i32
            && values.dims.iter().product::<i64>() == channels as i64
            && bias.zero_point.iter().all(|&z| z == 0)
            && (0..channels).all(|c| {
                let expected = rescale[c.min(rescale.len() - 1)];
                let actual = bias.scale[c.min(bias.scale.len() - 1)];
                (actual - expected).abs() <= 1e-6 * expected.abs()
            });
        if !at_product_scale {
            return None;
        }
        let mut shaped = values.clone();
        shaped.name = name("bias");
        shaped.dims = channel_dims(channels).iter().map(|&d| d as i64).collect();
        let biased = name("int_biased");
        nodes.push(node("Add", &biased, &[&sum, &shaped.name], &biased, vec![]));
        added.push(shaped);
        sum = biased;
    }
    let float = name("float");
    nodes.push(node(
        "Cast",
        &float,
        &[&sum],
        &float,
        vec![int_attr("to", DataType::Float as i64)],
    ));
    added.push(f32_tensor(
        &name("rescale"),
        &channel_dims(rescale.len()),
        &rescale,
    ));
    nodes.push(node(
        "Mul",
        output,
        &[&float, &name("rescale")],
        output,
        vec![],
    ));
    Some((nodes, added))
}

/// Removes the nodes whose outputs nothing reads (the DequantizeLinear nodes the rewrites
/// bypassed, and what only they read), in one sweep from the last node: a graph lists each
/// node after the nodes it reads.
fn remove_unread_nodes(graph: &mut GraphProto) {
    let mut reads: HashMap<String, usize> = HashMap::new();
    for input in graph.node.iter().flat_map(|n| &n.input) {
        *reads.entry(input.clone()).or_default() += 1;
    }
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node).into_iter().rev() {
        let read = node
            .output
            .iter()
            .any(|o| reads.get(o).is_some_and(|&n| n > 0) || outputs.contains(o));
        if read {
            kept.push(node);
        } else {
            for input in &node.input {
                if let Some(n) = reads.get_mut(input) {
                    *n -= 1;
                }
            }
        }
    }
    kept.reverse();
    graph.node = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_build::tensor;

    fn graph(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, output: &str) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                initializer: initializers,
                output: vec![tract_onnx::pb::ValueInfoProto {
                    name: output.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn scale_and_zero() -> Vec<TensorProto> {
        vec![
            f32_tensor("s", &[], &[0.5]),
            tensor("z", &[], DataType::Uint8, vec![0]),
        ]
    }

    /// Crafted graphs that do not match are left as they are, without a panic.
    #[test]
    fn graphs_that_do_not_match_stay_as_they_are() {
        // The QuantizeLinear listed before the Relu it reads.
        let out_of_order = graph(
            vec![
                node("DequantizeLinear", "dq", &["x", "s", "z"], "dq", vec![]),
                node("QuantizeLinear", "q", &["relu", "s", "z"], "q", vec![]),
                node("Relu", "relu", &["dq"], "relu", vec![]),
                node("DequantizeLinear", "y", &["q", "s", "z"], "y", vec![]),
            ],
            scale_and_zero(),
            "y",
        );
        // A Conv whose int8 weight has one dimension.
        let mut initializers = scale_and_zero();
        initializers.push(tensor("w", &[4], DataType::Int8, vec![1, 2, 3, 4]));
        let flat_weight = graph(
            vec![
                node("DequantizeLinear", "dq", &["x", "s", "z"], "dq", vec![]),
                node("DequantizeLinear", "wdq", &["w", "s", "z"], "wdq", vec![]),
                node("Conv", "y", &["dq", "wdq"], "y", vec![]),
            ],
            initializers,
            "y",
        );
        for model in [out_of_order, flat_weight] {
            let (rewritten, count) = with_integer_ops(model.clone());
            assert_eq!((count, rewritten), (0, model));
        }
    }

    /// A ReLU between a dequantise and a requantise of the same zero-point-0 quantisation is
    /// dropped, and what read the requantised tensor reads the quantised one.
    #[test]
    fn a_relu_on_quantised_values_folds_away() {
        let model = graph(
            vec![
                node("DequantizeLinear", "dq", &["x", "s", "z"], "dq", vec![]),
                node("Relu", "relu", &["dq"], "relu", vec![]),
                node("QuantizeLinear", "q", &["relu", "s", "z"], "q", vec![]),
                node("DequantizeLinear", "y", &["q", "s", "z"], "y", vec![]),
            ],
            scale_and_zero(),
            "y",
        );
        let (rewritten, _) = with_integer_ops(model);
        let nodes = rewritten.graph.unwrap().node;
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes[0].input[0], "x");
    }
}
