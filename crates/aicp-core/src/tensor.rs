//! Tensors as the serving path carries them: a shape and row-major float32 data, and the
//! signature a model declares for its inputs and outputs.

use serde::Serialize;

use crate::error::{Error, Result};

/// A dense float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor whose shape must account for every value.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(Error::invalid(format!(
                "shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }
}

/// The product of `shape`, or an error when a dimension is zero or the product overflows.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    if let Some(i) = shape.iter().position(|&d| d == 0) {
        return Err(Error::invalid(format!(
            "shape {shape:?}: dimension {i} is 0; every dimension must be at least 1"
        )));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::invalid(format!("shape {shape:?} is too large")))
}

/// An element type as ONNX names it, in the Open Inference Protocol's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DataType {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    U8,
    #[serde(rename = "UINT16")]
    U16,
    #[serde(rename = "UINT32")]
    U32,
    #[serde(rename = "UINT64")]
    U64,
    #[serde(rename = "INT8")]
    I8,
    #[serde(rename = "INT16")]
    I16,
    #[serde(rename = "INT32")]
    I32,
    #[serde(rename = "INT64")]
    I64,
    #[serde(rename = "FP16")]
    F16,
    #[serde(rename = "FP32")]
    F32,
    #[serde(rename = "FP64")]
    F64,
    #[serde(rename = "BYTES")]
    String,
    #[serde(rename = "OTHER")]
    Other,
}

/// One input or output of a model. `shape[i]` is `None` for a dimension fixed only at run
/// time (the batch, usually).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// The fixed size of one sample: the product of every dimension after the first. `None` when
    /// one of them is variable.
    pub fn sample_elements(&self) -> Option<usize> {
        self.shape
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, d| acc.checked_mul((*d)?))
    }

    /// The shape with `-1` for variable dimensions, as listings show it.
    pub fn display_shape(&self) -> Vec<i64> {
        self.shape
            .iter()
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect()
    }
}

/// What a model takes and gives, read from its file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_must_match_the_data() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.message, "shape [2, 3] needs 6 values, got 5");
        let err = Tensor::new(vec![2, 0], vec![]).unwrap_err();
        assert!(err.message.contains("dimension 1 is 0"), "{err}");
        let err = element_count(&[usize::MAX, 2]).unwrap_err();
        assert!(err.message.contains("too large"), "{err}");
    }

    #[test]
    fn sample_elements_skip_the_batch() {
        let spec = TensorSpec {
            name: "input".into(),
            datatype: DataType::F32,
            shape: vec![None, Some(1), Some(28), Some(28)],
        };
        assert_eq!(spec.sample_elements(), Some(784));
        assert_eq!(spec.display_shape(), vec![-1, 1, 28, 28]);
        let variable = TensorSpec {
            shape: vec![None, None],
            ..spec
        };
        assert_eq!(variable.sample_elements(), None);
    }
}
