//! What an ONNX file declares, read from its protobuf: input and output names, element types
//! and shapes (symbolic dimensions as `None`), and the operator that produces the first output
//! (a trailing Softmax means the model already outputs probabilities).

use std::collections::HashSet;
use std::path::Path;

use aicp_core::{DataType, Error, ModelSignature, Result, TensorSpec};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

/// What [`inspect`] found in a model file.
#[derive(Debug, Clone)]
pub struct OnnxInfo {
    pub signature: ModelSignature,
    /// The operator type of the node producing the first output, e.g. "Softmax".
    pub final_op: Option<String>,
}

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
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::invalid(format!(
            "{} declares {} inputs and {} outputs; at least one of each is needed",
            path.display(),
            inputs.len(),
            outputs.len()
        )));
    }
    let final_op = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| *o == outputs[0].name))
        .map(|n| n.op_type.clone());
    Ok(OnnxInfo {
        signature: ModelSignature { inputs, outputs },
        final_op,
    })
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
    let shape = tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => {
                        Some(n as usize)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
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
        Ok(T::String) => DataType::String,
        _ => DataType::Other,
    }
}
