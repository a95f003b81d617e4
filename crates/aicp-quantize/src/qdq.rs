//! The rewrite of a float graph into QDQ form: which nodes are quantised ([`plan`]), and the
//! new initializers and QuantizeLinear/DequantizeLinear nodes around them
//! ([`quantize_graph`]).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto};

use aicp_engine::onnx_build::{f32_values, int_attr, node, tensor};

use crate::Options;
use crate::calibrate::Ranges;

/// Operators whose weight (input 1) is quantised.
const QUANTISED_OPS: [&str; 3] = ["Gemm", "MatMul", "Conv"];
/// Operators that pass quantised values through: their output keeps their input's scale and
/// zero point (a ReLU's input takes its output's, whose range starts at 0), so that ONNX
/// Runtime runs them on uint8 without leaving the integer domain.
const PASS_THROUGH_OPS: [&str; 4] = ["Relu", "MaxPool", "Flatten", "Reshape"];
/// QuantizeLinear and DequantizeLinear (int32 included, for biases) are opset 10's...
const MIN_OPSET: i64 = 10;
/// ...and their per-axis scales, for weights per output channel, opset 13's.
const MIN_OPSET_PER_CHANNEL: i64 = 13;

/// What will be quantised in a graph.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes (by index) whose weights become int8.
    pub nodes: Vec<usize>,
    /// The float activations that get a QuantizeLinear/DequantizeLinear pair: what those nodes
    /// read and write, except the graph's outputs.
    pub activations: Vec<String>,
}

/// Finds the quantisable nodes of `proto`'s graph, except those (by index) in `float_nodes`,
/// which stay in float, or says why there are none.
pub fn plan(
    proto: &ModelProto,
    per_channel: bool,
    float_nodes: &HashSet<usize>,
) -> anyhow::Result<Plan> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let opset = crate::opset::of(proto);
    anyhow::ensure!(
        opset >= MIN_OPSET,
        "the model uses ONNX opset {opset}; quantisation needs {MIN_OPSET} or later"
    );
    anyhow::ensure!(
        !per_channel || opset >= MIN_OPSET_PER_CHANNEL,
        "the model uses ONNX opset {opset}; weights per channel need {MIN_OPSET_PER_CHANNEL} \
         or later (quantise it per tensor: leave out --per-channel)"
    );
    let floats: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == DataType::Float as i32)
        .map(|t| t.name.as_str())
        .collect();
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut nodes = Vec::new();
    let mut activations = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let quantisable = QUANTISED_OPS.contains(&node.op_type.as_str())
            && node.domain.is_empty()
            && node.input.len() >= 2
            && floats.contains(node.input[1].as_str())
            && !floats.contains(node.input[0].as_str())
            && node
                .input
                .get(2)
                .is_none_or(|b| b.is_empty() || floats.contains(b.as_str()));
        if !quantisable || float_nodes.contains(&index) {
            continue;
        }
        nodes.push(index);
        // A graph input that reaches this node only through reshapes is quantised where it
        // enters: a caller holding 8-bit pixels can then feed the quantised tensor itself.
        if let Some(input) = reshaped_graph_input(graph, &node.input[0])
            && !activations.contains(&input)
        {
            activations.push(input);
        }
        for tensor in [&node.input[0], &node.output[0]] {
            if !outputs.contains(tensor.as_str()) && !activations.contains(tensor) {
                activations.push(tensor.clone());
            }
        }
    }
    anyhow::ensure!(
        !nodes.is_empty(),
        "nothing to quantise: no Gemm, MatMul or Conv node with a float weight initializer"
    );
    // Activations flow on through pass-through operators.
    for node in &graph.node {
        if PASS_THROUGH_OPS.contains(&node.op_type.as_str())
            && node.domain.is_empty()
            && activations.contains(&node.input[0])
            && !outputs.contains(node.output[0].as_str())
            && !activations.contains(&node.output[0])
        {
            activations.push(node.output[0].clone());
        }
    }
    Ok(Plan { nodes, activations })
}

/// What a report calls a node: its name, else its first output's.
pub fn node_name(node: &NodeProto) -> String {
    match (node.name.is_empty(), node.output.first()) {
        (true, Some(output)) => output.clone(),
        _ => node.name.clone(),
    }
}

/// Operators that only change a tensor's shape.
const RESHAPE_OPS: [&str; 2] = ["Flatten", "Reshape"];

/// The graph input `tensor` is made from by a chain of reshapes (one or more), if it is.
fn reshaped_graph_input(graph: &pb::GraphProto, tensor: &str) -> Option<String> {
    let mut current = tensor;
    let mut steps = 0;
    while let Some(producer) = graph
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == current))
    {
        if !RESHAPE_OPS.contains(&producer.op_type.as_str()) || !producer.domain.is_empty() {
            return None;
        }
        current = producer.input.first()?;
        steps += 1;
    }
    (steps > 0 && graph.input.iter().any(|i| i.name == current)).then(|| current.to_string())
}

/// Moves every Constant node that holds a tensor into the graph's initializers, where the
/// quantiser finds weights: exporters such as Paddle2ONNX write every weight as a Constant.
pub fn lift_constants(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let mut kept = Vec::with_capacity(graph.node.len());
    for n in std::mem::take(&mut graph.node) {
        let value = (n.op_type == "Constant" && n.domain.is_empty() && n.output.len() == 1)
            .then(|| n.attribute.iter().find(|a| a.name == "value"))
            .flatten()
            .and_then(|a| a.t.clone());
        match value {
            Some(mut tensor) => {
                tensor.name = n.output[0].clone();
                graph.initializer.push(tensor);
            }
            None => kept.push(n),
        }
    }
    graph.node = kept;
}

/// A copy of each of `graph`'s initializers, by name: the float weights a rewrite reads while
/// it changes the graph.
pub(crate) fn initializers_by_name(graph: &pb::GraphProto) -> HashMap<String, TensorProto> {
    graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect()
}

/// uint8 scale and zero point covering `[low, high]` (which includes 0).
fn activation_params([low, high]: [f32; 2]) -> (f32, u8) {
    let (low, high) = (low.min(0.0), high.max(0.0));
    let scale = (high - low) / 255.0;
    if scale <= 0.0 || !scale.is_finite() {
        return (1.0, 0);
    }
    let zero_point = (-low / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero_point)
}

/// The quantised model: `plan`'s weights in int8, its activations between Q/DQ pairs.
pub fn quantize_graph(
    mut proto: ModelProto,
    plan: &Plan,
    ranges: &Ranges,
    options: &Options,
) -> anyhow::Result<ModelProto> {
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let initializers = initializers_by_name(graph);
    let mut new_initializers = Vec::new();
    let mut replaced: HashSet<String> = HashSet::new();
    // Each quantised weight's axis and scales, and the quantised biases, by name.
    let mut weights: HashMap<String, (usize, Vec<f32>)> = HashMap::new();
    let mut biases: HashSet<String> = HashSet::new();
    // Weight and bias dequantisation: they read initializers only, so they go first.
    let mut weight_nodes: Vec<NodeProto> = Vec::new();
    // Each activation's QuantizeLinear and DequantizeLinear, placed after what makes it.
    let mut pairs: HashMap<String, Vec<NodeProto>> = HashMap::new();

    // Each activation's scale and zero point: calibrated, then shared along pass-through
    // operators in graph order.
    let mut params: HashMap<String, (f32, u8)> = HashMap::new();
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    for name in &plan.activations {
        let range = match options.input_range {
            // The declared range: for pixels in [0, 1], scale 1/255 and zero point 0, so the
            // quantised input is the pixels themselves.
            Some(declared) if graph_inputs.contains(name.as_str()) => declared,
            _ => ranges.get(name)?,
        };
        params.insert(name.clone(), activation_params(range));
    }
    let readers = |tensor: &str| {
        graph
            .node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == tensor))
            .count()
    };
    for n in &graph.node {
        let (Some(input), Some(output)) = (n.input.first(), n.output.first()) else {
            continue;
        };
        if !PASS_THROUGH_OPS.contains(&n.op_type.as_str()) {
            continue;
        }
        match (params.get(input).copied(), params.get(output).copied()) {
            // A ReLU read only here: its input takes the output's range, which clips below 0
            // as the ReLU would.
            (Some(_), Some(out)) if n.op_type == "Relu" && readers(input) == 1 => {
                params.insert(input.clone(), out);
            }
            (Some(inp), Some(_)) if n.op_type != "Relu" => {
                params.insert(output.clone(), inp);
            }
            _ => {}
        }
    }

    // Activations: `x` is replaced by `x_dq` = DequantizeLinear(QuantizeLinear(x)) wherever a
    // node reads it.
    let mut activation_scales = HashMap::new();
    for name in &plan.activations {
        let (scale, zero_point) = params[name];
        activation_scales.insert(name.clone(), scale);
        let (s, z) = (format!("{name}_scale"), format!("{name}_zero_point"));
        new_initializers.push(scalar_f32(&s, scale));
        new_initializers.push(tensor_u8(&z, &[], &[zero_point]));
        let quantize = node(
            "QuantizeLinear",
            &format!("{name}_quantize"),
            &[name, &s, &z],
            &format!("{name}_q"),
            vec![],
        );
        let dequantize = node(
            "DequantizeLinear",
            &format!("{name}_dequantize"),
            &[&format!("{name}_q"), &s, &z],
            &format!("{name}_dq"),
            vec![],
        );
        pairs.insert(name.clone(), vec![quantize, dequantize]);
    }

    let quantised: HashSet<usize> = plan.nodes.iter().copied().collect();
    let mut rewritten = Vec::with_capacity(graph.node.len());
    for (index, original) in graph.node.iter().enumerate() {
        let mut n = original.clone();
        // Every reader of a quantised activation reads its dequantised copy.
        for input in n.input.iter_mut() {
            if activation_scales.contains_key(input.as_str()) {
                *input = format!("{input}_dq");
            }
        }
        if quantised.contains(&index) {
            let input_scale = *activation_scales
                .get(&original.input[0])
                .ok_or_else(|| anyhow::anyhow!("{} was not calibrated", original.input[0]))?;
            let weight = &initializers[&original.input[1]];
            let axis = output_axis(original, weight)?;
            // A weight several nodes read (along the same axis) is quantised once.
            let w = &original.input[1];
            let w = match weights.get(w) {
                Some((done_axis, _)) if *done_axis == axis => w.clone(),
                Some(_) => format!("{w}_{index}"),
                None => w.clone(),
            };
            if !weights.contains_key(&w) {
                let (q, scales) = quantize_weight(weight, axis, options.per_channel)?;
                let (ws, wz) = (format!("{w}_scale"), format!("{w}_zero_point"));
                new_initializers.push(tensor_i8(&format!("{w}_q"), &weight.dims, &q));
                new_initializers.push(vector_or_scalar_f32(&ws, &scales));
                new_initializers.push(tensor_i8(&wz, &shape_of(&scales), &vec![0; scales.len()]));
                let axis_attr = (scales.len() > 1).then(|| int_attr("axis", axis as i64));
                weight_nodes.push(node(
                    "DequantizeLinear",
                    &format!("{w}_dequantize"),
                    &[&format!("{w}_q"), &ws, &wz],
                    &format!("{w}_dq"),
                    axis_attr.into_iter().collect(),
                ));
                weights.insert(w.clone(), (axis, scales));
            }
            let scales = &weights[&w].1;
            replaced.insert(original.input[1].clone());
            n.input[1] = format!("{w}_dq");
            if let Some(b) = original.input.get(2).filter(|b| !b.is_empty()) {
                let bias = float_values(&initializers[b])?;
                // int32 at the scale of input times weight, as the integer kernels accumulate.
                let bias_scales: Vec<f32> = (0..bias.len())
                    .map(|c| input_scale * scales[if scales.len() > 1 { c } else { 0 }])
                    .collect();
                let q: Vec<i32> = bias
                    .iter()
                    .zip(&bias_scales)
                    .map(|(&v, &s)| {
                        (f64::from(v) / f64::from(s))
                            .round()
                            .clamp(f64::from(i32::MIN), f64::from(i32::MAX))
                            as i32
                    })
                    .collect();
                // A bias shared by nodes of different input scales is quantised for each.
                let b = if biases.insert(b.clone()) {
                    b.clone()
                } else {
                    format!("{b}_{index}")
                };
                let (bs, bz) = (format!("{b}_scale"), format!("{b}_zero_point"));
                new_initializers.push(tensor_i32(&format!("{b}_q"), &[bias.len()], &q));
                // One scale for the whole bias when the weight has one: a per-axis
                // DequantizeLinear is opset 13's.
                let per_axis = scales.len() > 1;
                let bias_scales = if per_axis {
                    bias_scales
                } else {
                    bias_scales[..1].to_vec()
                };
                new_initializers.push(vector_or_scalar_f32(&bs, &bias_scales));
                new_initializers.push(tensor_i32(
                    &bz,
                    &shape_of(&bias_scales),
                    &vec![0; bias_scales.len()],
                ));
                weight_nodes.push(node(
                    "DequantizeLinear",
                    &format!("{b}_dequantize"),
                    &[&format!("{b}_q"), &bs, &bz],
                    &format!("{b}_dq"),
                    per_axis.then(|| int_attr("axis", 0)).into_iter().collect(),
                ));
                replaced.insert(original.input[2].clone());
                n.input[2] = format!("{b}_dq");
            }
        }
        rewritten.push(n);
    }

    // Topological order: weights first, a graph input's pair next, then each node followed by
    // the pairs of what it makes.
    let mut ordered = weight_nodes;
    for input in &graph.input {
        ordered.extend(pairs.remove(&input.name).unwrap_or_default());
    }
    for n in rewritten {
        let made: Vec<NodeProto> = n
            .output
            .iter()
            .flat_map(|o| pairs.remove(o).unwrap_or_default())
            .collect();
        ordered.push(n);
        ordered.extend(made);
    }
    graph.node = ordered;
    // A float weight goes unless a node left in float still reads it.
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    graph
        .initializer
        .retain(|t| !replaced.contains(&t.name) || read.contains(t.name.as_str()));
    graph.initializer.extend(new_initializers);
    Ok(proto)
}

/// The axis of a node's weight that runs over its outputs.
fn output_axis(node: &NodeProto, weight: &TensorProto) -> anyhow::Result<usize> {
    let trans_b = node
        .attribute
        .iter()
        .find(|a| a.name == "transB")
        .is_some_and(|a| a.i != 0);
    Ok(match (node.op_type.as_str(), weight.dims.len()) {
        ("Conv", _) => 0,
        ("Gemm", 2) if trans_b => 0,
        ("Gemm", 2) | ("MatMul", 2) => 1,
        (op, rank) => anyhow::bail!("cannot quantise a {op} weight of rank {rank}"),
    })
}

/// Symmetric int8 weights (in `[-127, 127]`) and their scales: one, or one per index of `axis`.
pub(crate) fn quantize_weight(
    weight: &TensorProto,
    axis: usize,
    per_channel: bool,
) -> anyhow::Result<(Vec<i8>, Vec<f32>)> {
    let values = float_values(weight)?;
    let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
    let channels = if per_channel { dims[axis] } else { 1 };
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| {
        if per_channel {
            (i / inner) % dims[axis]
        } else {
            0
        }
    };
    let mut largest = vec![0.0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        largest[c] = largest[c].max(v.abs());
    }
    let scales: Vec<f32> = largest
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    Ok((q, scales))
}

pub(crate) fn float_values(t: &TensorProto) -> anyhow::Result<Vec<f32>> {
    f32_values(t)
        .ok_or_else(|| anyhow::anyhow!("initializer {} is not a whole float tensor", t.name))
}

fn shape_of(values: &[f32]) -> Vec<usize> {
    if values.len() > 1 {
        vec![values.len()]
    } else {
        vec![]
    }
}

pub(crate) fn vector_or_scalar_f32(name: &str, values: &[f32]) -> TensorProto {
    tensor(
        name,
        &shape_of(values),
        DataType::Float,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

fn scalar_f32(name: &str, value: f32) -> TensorProto {
    tensor(name, &[], DataType::Float, value.to_le_bytes().to_vec())
}

fn tensor_u8(name: &str, dims: &[usize], values: &[u8]) -> TensorProto {
    tensor(name, dims, DataType::Uint8, values.to_vec())
}

pub(crate) fn tensor_i8(
    name: &str,
    dims: &[impl Copy + TryInto<i64>],
    values: &[i8],
) -> TensorProto {
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| d.try_into().ok().unwrap_or(0) as usize)
        .collect();
    tensor(
        name,
        &dims,
        DataType::Int8,
        values.iter().map(|&v| v as u8).collect(),
    )
}

fn tensor_i32(name: &str, dims: &[usize], values: &[i32]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Int32,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// A test graph, `x -> MatMul(w) -> h -> MatMul(w) -> y`: one weight read twice (tied, as
/// embeddings often are).
#[cfg(test)]
pub(crate) fn tied_matmuls() -> ModelProto {
    use aicp_engine::onnx_build::{Dim, f32_tensor, value_info};
    let rows = [Dim::Named("N"), Dim::Fixed(2)];
    ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "tied".into(),
            node: vec![
                node("MatMul", "first", &["x", "w"], "h", vec![]),
                node("MatMul", "second", &["h", "w"], "y", vec![]),
            ],
            input: vec![value_info("x", DataType::Float, &rows)],
            output: vec![value_info("y", DataType::Float, &rows)],
            initializer: vec![f32_tensor("w", &[2, 2], &[1.0, -0.5, 0.25, 2.0])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initializer_names(proto: &ModelProto) -> Vec<&str> {
        let mut names: Vec<&str> = proto
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        names.sort();
        names
    }

    fn quantised(float_nodes: &[usize]) -> ModelProto {
        let proto = tied_matmuls();
        let plan = plan(&proto, false, &float_nodes.iter().copied().collect()).unwrap();
        let ranges = Ranges(
            [("x", [-1.0, 1.0]), ("h", [-2.0, 2.0])]
                .into_iter()
                .map(|(name, range)| (name.to_string(), range))
                .collect(),
        );
        quantize_graph(proto, &plan, &ranges, &Options::default()).unwrap()
    }

    #[test]
    fn a_shared_weight_is_quantised_once_and_kept_while_a_float_node_reads_it() {
        let both = quantised(&[]);
        assert_eq!(
            initializer_names(&both),
            [
                "h_scale",
                "h_zero_point",
                "w_q",
                "w_scale",
                "w_zero_point",
                "x_scale",
                "x_zero_point"
            ]
        );
        // The second MatMul in float: it reads the float weight, and only its input, `h`, which
        // the first makes, is quantised with the first's.
        let first = quantised(&[1]);
        assert_eq!(
            initializer_names(&first),
            [
                "h_scale",
                "h_zero_point",
                "w",
                "w_q",
                "w_scale",
                "w_zero_point",
                "x_scale",
                "x_zero_point"
            ]
        );
        let graph = first.graph.unwrap();
        let second = graph.node.iter().find(|n| n.name == "second").unwrap();
        assert_eq!(second.input, ["h_dq", "w"]);
    }
}
