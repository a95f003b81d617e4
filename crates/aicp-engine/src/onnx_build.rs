//! Pieces of ONNX graphs, for the code that writes and rewrites models: training's export, the
//! quantiser, the uint8-pixel rewrite ([`crate::onnx::with_pixel_input`]) and tract's integer
//! rewrite ([`crate::integer`]); and the readers of the initializer values they check. One
//! spelling of each.

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

/// A node of `op_type` reading `inputs` and writing `output`.
pub fn node(
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

pub fn int_attr(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

pub fn ints_attr(name: &str, values: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

/// An initializer of `data_type` from its little-endian bytes (ONNX's `raw_data` is
/// little-endian whatever the host).
pub fn tensor(
    name: &str,
    dims: &[usize],
    data_type: DataType,
    raw_data: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

/// A float32 initializer.
pub fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Float, bytes)
}

/// One dimension of a declared input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim<'a> {
    /// A dimension the model leaves open, by name (`N` for a batch).
    Named(&'a str),
    Fixed(usize),
}

/// A graph input or output: a tensor of `elem_type` shaped `dims`.
pub fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match *d {
                Dim::Named(name) => Value::DimParam(name.into()),
                Dim::Fixed(n) => Value::DimValue(n as i64),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float32 initializer's values, from `raw_data` or `float_data`; `None` for another type.
pub fn f32_values(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.float_data.clone());
    }
    let bytes = t.raw_data.chunks_exact(4);
    bytes.remainder().is_empty().then(|| {
        bytes
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// An 8- or 32-bit integer initializer's values, from `raw_data` or `int32_data` (where ONNX
/// widens the narrow types); `None` for another type.
pub fn int_values(t: &pb::TensorProto) -> Option<Vec<i64>> {
    let raw = &t.raw_data;
    let widened = || t.int32_data.iter().map(|&v| i64::from(v)).collect();
    match DataType::try_from(t.data_type).ok()? {
        DataType::Uint8 | DataType::Int8 | DataType::Int32 if raw.is_empty() => Some(widened()),
        DataType::Uint8 => Some(raw.iter().map(|&v| i64::from(v)).collect()),
        DataType::Int8 => Some(raw.iter().map(|&v| i64::from(v as i8)).collect()),
        DataType::Int32 => {
            let words = raw.chunks_exact(4);
            words.remainder().is_empty().then(|| {
                words
                    .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect()
            })
        }
        _ => None,
    }
}
