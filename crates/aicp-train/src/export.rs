//! Writing a trained network as an ONNX model: `input` float32 `[N, C, H, W]` -> the network's
//! layers as ONNX nodes (Conv, Relu, MaxPool, Flatten, Gemm) -> `logits` `[N, classes]`, with a
//! dynamic batch dimension and the weights as initializers. Dropout is not part of the graph:
//! it only acts in training. The protobuf types are tract-onnx's (generated from onnx.proto).

use prost::Message;
use tract_onnx::pb;

use aicp_engine::onnx_build::{Dim, f32_tensor, int_attr, ints_attr, node, value_info};
use pb::tensor_proto::DataType;

use crate::model::Layer;

/// The opset the graph is written against; Conv, MaxPool, Flatten, Gemm and Relu have been
/// stable since.
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

/// The shape of one sample between layers, checked as the graph is written.
#[derive(Debug, Clone, Copy)]
enum Activation {
    Image([usize; 3]),
    Rows(usize),
}

/// Encodes the network as ONNX protobuf bytes, or says where its layers do not fit the images.
pub fn onnx_bytes(layers: &[Layer], info: &ExportInfo) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        layers.iter().any(|l| matches!(l, Layer::Dense(_))),
        "cannot export a network without dense layers"
    );
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut current = INPUT_NAME.to_string();
    let mut shape = Activation::Image(info.sample_shape);
    for (i, layer) in layers.iter().enumerate() {
        let is_last = i + 1 == layers.len();
        let output = if is_last {
            OUTPUT_NAME.to_string()
        } else {
            format!("layer{i}")
        };
        let name = format!("layer{i}");
        match (layer, shape) {
            (Layer::Flatten, Activation::Image([c, h, w])) => {
                nodes.push(node(
                    "Flatten",
                    &name,
                    &[&current],
                    &output,
                    vec![int_attr("axis", 1)],
                ));
                shape = Activation::Rows(c * h * w);
            }
            (Layer::Relu, _) => nodes.push(node("Relu", &name, &[&current], &output, vec![])),
            (Layer::Conv(conv), Activation::Image([c, h, w])) => {
                anyhow::ensure!(
                    conv.inputs == c && conv.kernel <= h && conv.kernel <= w,
                    "layer {i}: a {k}x{k} convolution of {} channels does not fit a {c}x{h}x{w} \
                     activation",
                    conv.inputs,
                    k = conv.kernel
                );
                let (weight, bias) = (format!("conv{i}.weight"), format!("conv{i}.bias"));
                let k = conv.kernel;
                initializers.push(f32_tensor(&weight, &[conv.outputs, c, k, k], &conv.weight));
                initializers.push(f32_tensor(&bias, &[conv.outputs], &conv.bias));
                nodes.push(node(
                    "Conv",
                    &name,
                    &[&current, &weight, &bias],
                    &output,
                    vec![ints_attr("kernel_shape", &[k, k])],
                ));
                shape = Activation::Image([conv.outputs, h - k + 1, w - k + 1]);
            }
            (&Layer::MaxPool { size }, Activation::Image([c, h, w])) => {
                anyhow::ensure!(
                    size >= 1 && size <= h && size <= w,
                    "layer {i}: {size}x{size} pooling does not fit a {c}x{h}x{w} activation"
                );
                nodes.push(node(
                    "MaxPool",
                    &name,
                    &[&current],
                    &output,
                    vec![
                        ints_attr("kernel_shape", &[size, size]),
                        ints_attr("strides", &[size, size]),
                    ],
                ));
                shape = Activation::Image([c, h / size, w / size]);
            }
            (Layer::Dense(dense), Activation::Rows(features)) => {
                anyhow::ensure!(
                    dense.inputs == features,
                    "layer {i}: a dense layer that takes {} inputs follows one that gives {features}",
                    dense.inputs
                );
                let (weight, bias) = (format!("dense{i}.weight"), format!("dense{i}.bias"));
                initializers.push(f32_tensor(
                    &weight,
                    &[dense.inputs, dense.outputs],
                    &dense.weight,
                ));
                initializers.push(f32_tensor(&bias, &[dense.outputs], &dense.bias));
                // burn stores weights as [inputs, outputs], which is Gemm's B without transposition.
                nodes.push(node(
                    "Gemm",
                    &name,
                    &[&current, &weight, &bias],
                    &output,
                    vec![int_attr("transB", 0)],
                ));
                shape = Activation::Rows(dense.outputs);
            }
            (layer, shape) => {
                anyhow::bail!("layer {i}: {layer:?} cannot follow an activation of shape {shape:?}")
            }
        }
        current = output;
    }
    let Activation::Rows(classes) = shape else {
        anyhow::bail!("the network must end in rows of logits, not an image {shape:?}");
    };
    let [c, h, w] = info.sample_shape;
    let batch = Dim::Named(BATCH_DIM);
    let graph = pb::GraphProto {
        name: "aicp".into(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info(
            INPUT_NAME,
            DataType::Float,
            &[batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
        )],
        output: vec![value_info(
            OUTPUT_NAME,
            DataType::Float,
            &[batch, Dim::Fixed(classes)],
        )],
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
