//! Writing a trained MLP as an ONNX model: `input` float32 `[N, C, H, W]` -> Flatten ->
//! (Gemm -> Relu)* -> Gemm -> `logits` `[N, classes]`, with a dynamic batch dimension and the
//! weights as initializers. The protobuf types are tract-onnx's (generated from onnx.proto).

use prost::Message;
use tract_onnx::pb;

use crate::model::DenseLayer;

/// The opset the graph is written against; Flatten, Gemm and Relu have been stable since.
pub const OPSET: i64 = 13;
/// ONNX IR version 8 goes with opset 13..=17 and is read by every current runtime.
const IR_VERSION: i64 = 8;
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";
const BATCH_DIM: &str = "N";

/// Describes the exported model for readers of the file.
#[derive(Debug, Clone)]
pub struct ExportInfo<'a> {
    /// The per-sample input shape, for example `[1, 28, 28]`.
    pub sample_shape: [usize; 3],
    pub doc: &'a str,
    /// Extra key/value pairs stored as ONNX metadata_props.
    pub metadata: Vec<(String, String)>,
}

/// Encodes the model as ONNX protobuf bytes.
pub fn onnx_bytes(layers: &[DenseLayer], info: &ExportInfo) -> anyhow::Result<Vec<u8>> {
    let features: usize = info.sample_shape.iter().product();
    let Some(first) = layers.first() else {
        anyhow::bail!("cannot export a network without layers");
    };
    if first.inputs != features {
        anyhow::bail!(
            "the first layer takes {} inputs but samples of shape {:?} have {features}",
            first.inputs,
            info.sample_shape
        );
    }
    let mut nodes = vec![node(
        "Flatten",
        "flatten",
        &[INPUT_NAME],
        "flat",
        vec![int_attr("axis", 1)],
    )];
    let mut initializers = Vec::new();
    let mut current = "flat".to_string();
    for (i, layer) in layers.iter().enumerate() {
        let (weight, bias) = (format!("dense{i}.weight"), format!("dense{i}.bias"));
        initializers.push(float_tensor(
            &weight,
            &[layer.inputs, layer.outputs],
            &layer.weight,
        ));
        initializers.push(float_tensor(&bias, &[layer.outputs], &layer.bias));
        let is_last = i + 1 == layers.len();
        let gemm_out = if is_last {
            OUTPUT_NAME.to_string()
        } else {
            format!("dense{i}")
        };
        // burn stores weights as [inputs, outputs], which is Gemm's B without transposition.
        nodes.push(node(
            "Gemm",
            &format!("gemm{i}"),
            &[&current, &weight, &bias],
            &gemm_out,
            vec![int_attr("transB", 0)],
        ));
        current = gemm_out;
        if !is_last {
            let relu_out = format!("relu{i}");
            nodes.push(node(
                "Relu",
                &format!("relu{i}"),
                &[&current],
                &relu_out,
                vec![],
            ));
            current = relu_out;
        }
    }
    let [c, h, w] = info.sample_shape;
    let classes = layers.last().map_or(0, |l| l.outputs);
    let graph = pb::GraphProto {
        name: "mlp".into(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info(
            INPUT_NAME,
            &[Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
        )],
        output: vec![value_info(OUTPUT_NAME, &[Dim::Batch, Dim::Fixed(classes)])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "aicp".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: info.doc.into(),
        graph: Some(graph),
        metadata_props: info
            .metadata
            .iter()
            .map(|(key, value)| pb::StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

enum Dim {
    Batch,
    Fixed(usize),
}

fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op_type.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        // ONNX raw_data is little-endian whatever the host.
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam(BATCH_DIM.into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
