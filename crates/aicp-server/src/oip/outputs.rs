//! Choosing and rendering the outputs of an inference, shared by both transports: every output
//! or the ones asked for, each as its tensor of its own type or, with the classification
//! extension, as its top classes in Triton's `"value:index:label"` strings.

use aicp_core::{DataType, Error, Result, Tensor, TensorData};
use aicp_runtime::{ServedModel, top_k};

/// An output a request asks for, and how.
#[derive(Debug, Clone, Default)]
pub struct OutputRequest {
    pub name: String,
    /// The classification extension: the top N classes as strings instead of the tensor.
    pub classification: Option<usize>,
    /// Raw bytes after the JSON (REST's binary tensor data extension).
    pub binary: bool,
}

/// An output ready to encode: its data in its own type (BYTES for classification).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
    pub binary: bool,
}

/// Checks, before a request runs, the outputs it asks for: each one the model's, with a
/// classification of at least 1.
pub fn check_outputs(model: &ServedModel, requested: &[OutputRequest]) -> Result<()> {
    let specs = &model.signature.outputs;
    for want in requested {
        if !specs.iter().any(|s| s.name == want.name) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "model {:?} has no output {:?}; its outputs: {}",
                model.name,
                want.name,
                names.join(", ")
            )));
        }
        if want.classification == Some(0) {
            return Err(Error::invalid(format!(
                "output {:?}: classification must be at least 1",
                want.name
            )));
        }
        let spec = specs.iter().find(|s| s.name == want.name);
        if want.classification.is_some() && spec.is_some_and(|s| s.datatype == DataType::Bytes) {
            return Err(Error::invalid(format!(
                "output {:?} is BYTES: classification ranks numbers",
                want.name
            )));
        }
    }
    Ok(())
}

/// The outputs a request asked for ([`check_outputs`] checked them; every output, in the
/// model's order, when it named none), each as a tensor or as its top classes.
/// `default_binary` applies to outputs not named.
pub fn select_outputs(
    model: &ServedModel,
    outputs: Vec<Tensor>,
    requested: &[OutputRequest],
    default_binary: bool,
) -> Vec<Output> {
    let specs = &model.signature.outputs;
    if requested.is_empty() {
        return specs
            .iter()
            .zip(outputs)
            .map(|(spec, tensor)| Output {
                name: spec.name.clone(),
                shape: tensor.shape,
                data: tensor.data,
                binary: default_binary,
            })
            .collect();
    }
    requested
        .iter()
        .filter_map(|want| {
            let index = specs.iter().position(|s| s.name == want.name)?;
            let tensor = outputs.get(index)?;
            let (shape, data) = match want.classification {
                None => (tensor.shape.clone(), tensor.data.clone()),
                Some(n) => classify(model, tensor, n),
            };
            Some(Output {
                name: want.name.clone(),
                shape,
                data,
                binary: want.binary,
            })
        })
        .collect()
}

/// The classification extension, as Triton renders it: for each sample (each row when the model
/// batches), the top `n` values high to low as `"value:index"`, with `":label"` appended when
/// model.toml names the class. The value is the output's own (a logit for a logits model);
/// [`check_outputs`] made sure it is a number.
fn classify(model: &ServedModel, tensor: &Tensor, n: usize) -> (Vec<usize>, TensorData) {
    let values = tensor.data.to_f32().unwrap_or_default();
    let batched = model.max_batch_size() > 0 && !tensor.shape.is_empty();
    let rows = if batched { tensor.shape[0].max(1) } else { 1 };
    let per_row = values.len() / rows;
    let n = n.min(per_row);
    let strings = values
        .chunks(per_row.max(1))
        .flat_map(|row| {
            top_k(row, n)
                .into_iter()
                .map(|(index, value)| match model.metadata.labels.get(index) {
                    Some(label) => format!("{value:.6}:{index}:{label}"),
                    None => format!("{value:.6}:{index}"),
                })
        })
        .map(String::into_bytes)
        .collect();
    let shape = if batched { vec![rows, n] } else { vec![n] };
    (shape, TensorData::Bytes(strings))
}
