//! Choosing and rendering the outputs of an inference, shared by both transports: every output
//! or the ones asked for, each as its tensor or, with the classification extension, as its top
//! classes in Triton's `"value:index:label"` strings; and the raw encoding of each.

use aicp_core::{DataType, Error, Result, Tensor};
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

/// An output ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: OutputData,
    pub binary: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    F32(Vec<f32>),
    /// BYTES elements: the classification extension's `value:index[:label]` strings.
    Bytes(Vec<String>),
}

impl OutputData {
    pub fn datatype(&self) -> &'static str {
        match self {
            Self::F32(_) => DataType::F32.name(),
            Self::Bytes(_) => DataType::String.name(),
        }
    }

    /// The raw encoding: little-endian values; each BYTES element as a 4-byte little-endian
    /// length and its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(values) => aicp_core::data::f32_le_bytes(values),
            Self::Bytes(strings) => {
                let mut raw = Vec::with_capacity(strings.iter().map(|s| s.len() + 4).sum());
                for s in strings {
                    raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    raw.extend_from_slice(s.as_bytes());
                }
                raw
            }
        }
    }
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
                data: OutputData::F32(tensor.data),
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
                None => (tensor.shape.clone(), OutputData::F32(tensor.data.clone())),
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
/// model.toml names the class. The value is the output's own (a logit for a logits model).
fn classify(model: &ServedModel, tensor: &Tensor, n: usize) -> (Vec<usize>, OutputData) {
    let batched = model.max_batch_size() > 0 && !tensor.shape.is_empty();
    let rows = if batched { tensor.shape[0].max(1) } else { 1 };
    let per_row = tensor.data.len() / rows;
    let n = n.min(per_row);
    let strings = tensor
        .data
        .chunks(per_row.max(1))
        .flat_map(|row| {
            top_k(row, n)
                .into_iter()
                .map(|(index, value)| match model.metadata.labels.get(index) {
                    Some(label) => format!("{value:.6}:{index}:{label}"),
                    None => format!("{value:.6}:{index}"),
                })
        })
        .collect();
    let shape = if batched { vec![rows, n] } else { vec![n] };
    (shape, OutputData::Bytes(strings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements_are_length_prefixed() {
        let data = OutputData::Bytes(vec!["ab".into(), "".into()]);
        assert_eq!(data.to_bytes(), vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(data.datatype(), "BYTES");
        assert_eq!(OutputData::F32(vec![1.0]).to_bytes(), 1.0f32.to_le_bytes());
    }
}
