//! Moving a model of ONNX opset 11 or 12 to opset 13, whose DequantizeLinear takes a scale per
//! channel: what weights per channel need. Only the operators whose meaning changed between
//! those opsets are rewritten:
//!
//! - Squeeze, Unsqueeze, ReduceSum and Split take their axes (or split sizes) as an input
//!   instead of an attribute;
//! - Softmax, LogSoftmax and Hardmax worked on the input flattened to two dimensions at `axis`,
//!   and now work along `axis` alone: unless `axis` is the last dimension (-1), each becomes
//!   `Reshape(op(Flatten(x, axis), axis = -1), Shape(x))`, which is the old meaning exactly.
//!
//! Every other operator means the same at 13.

use aicp_engine::onnx_build::{int_attr, node, tensor};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto};

/// The opset whose DequantizeLinear takes per-axis scales.
pub const PER_AXIS: i64 = 13;

/// The model's default-domain opset.
pub fn of(proto: &ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version)
}

/// The default-domain opset of the model in `bytes` (protobuf), if it reads.
pub fn of_bytes(bytes: &[u8]) -> Option<i64> {
    <ModelProto as prost::Message>::decode(bytes)
        .ok()
        .map(|proto| of(&proto))
}

/// Moves `proto` from opset 11 or 12 to 13 (see the module's documentation); a model already
/// at 13 or later is left as it is. Returns the opset it had.
pub fn upgrade_to_13(proto: &mut ModelProto) -> anyhow::Result<i64> {
    let from = of(proto);
    if from >= PER_AXIS {
        return Ok(from);
    }
    anyhow::ensure!(
        (11..PER_AXIS).contains(&from),
        "the model uses ONNX opset {from}; weights per channel need opset {PER_AXIS}, and aicp \
         moves models of opset 11 or 12 there (quantise it per tensor: leave out --per-channel)"
    );
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    anyhow::ensure!(
        graph.node.iter().all(|n| n
            .attribute
            .iter()
            .all(|a| a.g.is_none() && a.graphs.is_empty())),
        "the model has subgraphs (If, Loop, Scan), which aicp does not move to opset \
         {PER_AXIS}: quantise it per tensor (leave out --per-channel)"
    );
    let mut initializers = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (index, mut n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        let attribute_input = match n.op_type.as_str() {
            "Squeeze" | "Unsqueeze" | "ReduceSum" => "axes",
            "Split" => "split",
            _ => "",
        };
        if default_domain
            && !attribute_input.is_empty()
            && let Some(at) = n.attribute.iter().position(|a| a.name == attribute_input)
        {
            let values = n.attribute.remove(at).ints;
            let name = format!("{}_{attribute_input}_{index}", n.output[0]);
            initializers.push(tensor(
                &name,
                &[values.len()],
                DataType::Int64,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            n.input.truncate(1);
            n.input.push(name);
            nodes.push(n);
            continue;
        }
        if default_domain && matches!(n.op_type.as_str(), "Softmax" | "LogSoftmax" | "Hardmax") {
            // Opset 11's default axis is 1.
            let axis = n
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(1, |a| a.i);
            if axis == -1 {
                nodes.push(n);
                continue;
            }
            nodes.extend(flattened(n, axis, index));
            continue;
        }
        nodes.push(n);
    }
    graph.node = nodes;
    graph.initializer.extend(initializers);
    for import in &mut proto.opset_import {
        if import.domain.is_empty() || import.domain == "ai.onnx" {
            import.version = PER_AXIS;
        }
    }
    Ok(from)
}

/// `op(x)` with opset 11's meaning at opset 13: `Reshape(op(Flatten(x, axis), -1), Shape(x))`.
fn flattened(original: NodeProto, axis: i64, index: usize) -> Vec<NodeProto> {
    let x = &original.input[0];
    let y = &original.output[0];
    let at = |what: &str| format!("{y}_{what}_{index}");
    let op = NodeProto {
        input: vec![at("flat")],
        output: vec![at("flat_out")],
        attribute: vec![int_attr("axis", -1)],
        ..original.clone()
    };
    vec![
        node("Shape", &at("shape_node"), &[x], &at("shape"), vec![]),
        node(
            "Flatten",
            &at("flatten"),
            &[x],
            &at("flat"),
            vec![int_attr("axis", axis)],
        ),
        op,
        node(
            "Reshape",
            &at("reshape"),
            &[&at("flat_out"), &at("shape")],
            y,
            vec![],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use aicp_engine::onnx_build::{Dim, ints_attr, value_info};
    use tract_onnx::pb;
    use tract_onnx::prelude::*;

    use super::*;

    /// `x` [2, 3, 4] through opset 11's meanings: Softmax over the last two dimensions
    /// flattened (axis 1), Unsqueeze and Squeeze by attribute, ReduceSum over axis 2 by
    /// attribute, and Split into [1, 3] along axis 2 by attribute.
    fn opset_11() -> ModelProto {
        let nodes = vec![
            node(
                "Softmax",
                "softmax",
                &["x"],
                "soft",
                vec![int_attr("axis", 1)],
            ),
            node(
                "Unsqueeze",
                "unsqueeze",
                &["soft"],
                "wide",
                vec![ints_attr("axes", &[0])],
            ),
            node(
                "Squeeze",
                "squeeze",
                &["wide"],
                "narrow",
                vec![ints_attr("axes", &[0])],
            ),
            node(
                "ReduceSum",
                "sum",
                &["narrow"],
                "sum",
                vec![ints_attr("axes", &[2]), int_attr("keepdims", 1)],
            ),
            NodeProto {
                op_type: "Split".into(),
                name: "split".into(),
                input: vec!["narrow".into()],
                output: vec!["first".into(), "rest".into()],
                attribute: vec![int_attr("axis", 2), ints_attr("split", &[1, 3])],
                ..Default::default()
            },
        ];
        let dims = [Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(4)];
        let float = |name: &str| value_info(name, DataType::Float, &dims);
        ModelProto {
            ir_version: 6,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 11,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: nodes,
                input: vec![float("x")],
                output: ["soft", "sum", "first", "rest"]
                    .iter()
                    .map(|name| pb::ValueInfoProto {
                        name: (*name).into(),
                        ..float(name)
                    })
                    .map(|mut v| {
                        // Shapes left to the engine.
                        if let Some(pb::type_proto::Value::TensorType(t)) =
                            v.r#type.as_mut().and_then(|t| t.value.as_mut())
                        {
                            t.shape = None;
                        }
                        v
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(proto: &ModelProto) -> Vec<Vec<f32>> {
        let input: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let plan = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::Array3::from_shape_vec((2, 3, 4), input).unwrap();
        plan.run(tvec!(Tensor::from(x).into_tvalue()))
            .unwrap()
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_model_moved_to_opset_13_answers_as_before() {
        let old = opset_11();
        let mut new = old.clone();
        assert_eq!(upgrade_to_13(&mut new).unwrap(), 11);
        assert_eq!(of(&new), 13);
        let ops: Vec<&str> = new
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            ops,
            [
                "Shape",
                "Flatten",
                "Softmax",
                "Reshape",
                "Unsqueeze",
                "Squeeze",
                "ReduceSum",
                "Split"
            ]
        );
        let (before, after) = (run(&old), run(&new));
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.len(), a.len());
            assert!(
                b.iter().zip(a).all(|(x, y)| (x - y).abs() < 1e-6),
                "{b:?} {a:?}"
            );
        }
        // The softmax ran over the last two dimensions together: each of the two rows of 12
        // sums to 1.
        let soft = &after[0];
        assert!((soft[..12].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Opset 10 is not moved.
        let mut older = opset_11();
        older.opset_import[0].version = 10;
        assert!(
            upgrade_to_13(&mut older)
                .unwrap_err()
                .to_string()
                .contains("opset 11 or 12")
        );
    }
}
