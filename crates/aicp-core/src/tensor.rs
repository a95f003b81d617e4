//! Tensors as the serving path carries them: a shape and typed row-major data
//! ([`TensorData`]), 8-bit pixels for float image models, and the signature a model declares for
//! its inputs and outputs.

use serde::Serialize;

use crate::data::TensorData;
use crate::error::{Error, Result};

/// A dense tensor of any element type.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose shape must account for every value.
    pub fn new(shape: Vec<usize>, data: impl Into<TensorData>) -> Result<Self> {
        let data = data.into();
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(Error::invalid(format!(
                "shape {shape:?} needs {expected} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// The float32 values, when the tensor is FP32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.data.as_f32()
    }

    /// Rows `start..end` of the first dimension, as a tensor of their own.
    pub fn rows(&self, start: usize, end: usize) -> Tensor {
        let rows = self.shape.first().copied().unwrap_or(1).max(1);
        let per_row = self.data.len() / rows;
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = end - start;
        }
        Tensor {
            shape,
            data: self.data.slice(start * per_row, end * per_row),
        }
    }
}

/// How a pixel (0-255) becomes a model's input value: `offset + pixel * step`. From the model's
/// declared input range, so that 0 maps to its low end and 255 to its high end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelScale {
    pub offset: f32,
    pub step: f32,
}

impl PixelScale {
    /// The map of 0..=255 onto `[low, high]`.
    pub fn for_range([low, high]: [f32; 2]) -> Self {
        Self {
            offset: low,
            step: (high - low) / 255.0,
        }
    }

    pub fn apply(self, pixel: u8) -> f32 {
        self.offset + f32::from(pixel) * self.step
    }
}

/// 8-bit pixels for a model that takes float32 images: a quarter of the bytes to carry (and to
/// copy to a GPU), normalised by [`PixelScale`] by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// The model's input shape, batch first.
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    pub scale: PixelScale,
}

impl Pixels {
    /// The float32 tensor the model sees.
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: TensorData::F32(self.data.iter().map(|&p| self.scale.apply(p)).collect()),
        }
    }
}

/// One input of a batch, as an engine takes it: a tensor of the model's own type, or 8-bit
/// pixels for a model that takes float32 images, which the engine normalises (on the host, or
/// where it computes).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Tensor(Tensor),
    Pixels(Pixels),
}

impl Input {
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::Tensor(tensor) => &tensor.shape,
            Self::Pixels(pixels) => &pixels.shape,
        }
    }

    /// The element type the request carries: UINT8 for pixels.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Tensor(tensor) => tensor.datatype(),
            Self::Pixels(_) => DataType::U8,
        }
    }

    /// The pixels of a batch that is one pixel input (what an engine with a path of its own for
    /// pixels runs there); else the inputs back, as they were.
    pub fn lone_pixels(inputs: Vec<Input>) -> std::result::Result<Pixels, Vec<Input>> {
        match <[Input; 1]>::try_from(inputs) {
            Ok([Self::Pixels(pixels)]) => Ok(pixels),
            Ok([other]) => Err(vec![other]),
            Err(inputs) => Err(inputs),
        }
    }

    /// The tensor the model sees: pixels normalised here, on the host.
    pub fn into_tensor(self) -> Tensor {
        match self {
            Self::Tensor(tensor) => tensor,
            Self::Pixels(pixels) => pixels.to_tensor(),
        }
    }

    /// `parts` (one request's input each, of one kind and type, and of one sample shape)
    /// stacked along the batch dimension into one input of `samples` samples. Parts of
    /// different kinds or types are an error: they cannot share an engine run.
    pub fn stack(parts: &[&Input], samples: usize) -> Result<Input> {
        let Some(first) = parts.first() else {
            return Err(Error::internal("no input to stack"));
        };
        let mut shape = first.shape().to_vec();
        if let Some(batch) = shape.first_mut() {
            *batch = samples;
        }
        let one_kind = || Error::internal("a batch's requests must give their inputs of one kind");
        Ok(match first {
            Self::Tensor(_) => {
                let data = parts
                    .iter()
                    .map(|part| match part {
                        Self::Tensor(tensor) => Some(&tensor.data),
                        Self::Pixels(_) => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(one_kind)?;
                Self::Tensor(Tensor::new(shape, TensorData::concat(&data)?)?)
            }
            Self::Pixels(pixels) => {
                let mut data = Vec::with_capacity(element_count(&shape)?);
                for part in parts {
                    let Self::Pixels(part) = part else {
                        return Err(one_kind());
                    };
                    data.extend_from_slice(&part.data);
                }
                Self::Pixels(Pixels {
                    data,
                    shape,
                    scale: pixels.scale,
                })
            }
        })
    }
}

impl From<Tensor> for Input {
    fn from(tensor: Tensor) -> Self {
        Self::Tensor(tensor)
    }
}

impl From<Pixels> for Input {
    fn from(pixels: Pixels) -> Self {
        Self::Pixels(pixels)
    }
}

/// The largest difference between `a` and `b`, element by element (over the shorter of the
/// two); a NaN on either side counts as infinite, where `f32::max` would skip it and let a
/// NaN output pass a comparison.
pub fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .map(|d| if d.is_nan() { f32::INFINITY } else { d })
        .fold(0.0, f32::max)
}

/// The product of `shape` (1 for a scalar, 0 when a dimension is 0), or an error when it
/// overflows.
pub fn element_count(shape: &[usize]) -> Result<usize> {
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
    #[serde(rename = "BF16")]
    BF16,
    #[serde(rename = "FP32")]
    F32,
    #[serde(rename = "FP64")]
    F64,
    /// The protocols' BYTES, ONNX's STRING: byte strings.
    #[serde(rename = "BYTES")]
    Bytes,
    #[serde(rename = "OTHER")]
    Other,
}

impl DataType {
    /// Every type, for parsing names.
    const ALL: [DataType; 15] = [
        Self::Bool,
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F16,
        Self::BF16,
        Self::F32,
        Self::F64,
        Self::Bytes,
        Self::Other,
    ];

    /// The protocol's name: `FP32`, `INT64`, `BYTES`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "UINT8",
            Self::U16 => "UINT16",
            Self::U32 => "UINT32",
            Self::U64 => "UINT64",
            Self::I8 => "INT8",
            Self::I16 => "INT16",
            Self::I32 => "INT32",
            Self::I64 => "INT64",
            Self::F16 => "FP16",
            Self::BF16 => "BF16",
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::Bytes => "BYTES",
            Self::Other => "OTHER",
        }
    }

    /// The type a protocol name stands for; an error that lists the known names otherwise.
    pub fn parse(name: &str) -> Result<Self> {
        let requestable = || Self::ALL.into_iter().filter(|t| *t != Self::Other);
        requestable().find(|t| t.name() == name).ok_or_else(|| {
            let known: Vec<&str> = requestable().map(Self::name).collect();
            Error::invalid(format!(
                "unknown datatype {name:?}; expected one of {}",
                known.join(", ")
            ))
        })
    }

    /// Bytes per element in the raw little-endian encoding; `None` for BYTES and OTHER, whose
    /// elements vary in size.
    pub fn size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::U8 | Self::I8 => Some(1),
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::Bytes | Self::Other => None,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<8}`) lines names up in tables.
        f.pad(self.name())
    }
}

/// One input or output of a model: its name, element type and shape. A dimension is `None`
/// when the model fixes it only at run time (the batch, usually); the whole shape is `None`
/// when the model leaves even its rank open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Option<Vec<Option<usize>>>,
}

impl TensorSpec {
    /// The fixed size of one sample: the product of every dimension after the first (1 for a
    /// scalar). `None` when one of them varies, or the rank is open.
    pub fn sample_elements(&self) -> Option<usize> {
        self.shape
            .as_ref()?
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, d| acc.checked_mul((*d)?))
    }

    /// Whether the first dimension varies: the tensor may have a batch dimension.
    pub fn varies_first(&self) -> bool {
        self.shape
            .as_ref()
            .and_then(|dims| dims.first())
            .is_some_and(Option::is_none)
    }

    /// The shape with `-1` for variable dimensions, as listings show it; `[-1]` when the rank is
    /// open.
    pub fn display_shape(&self) -> Vec<i64> {
        match &self.shape {
            Some(dims) => dims.iter().map(|d| d.map_or(-1, |d| d as i64)).collect(),
            None => vec![-1],
        }
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
    fn inputs_stack_along_the_batch_and_only_with_their_own_kind_and_type() {
        let floats = |samples: usize, value: f32| {
            Input::from(Tensor::new(vec![samples, 2], vec![value; samples * 2]).unwrap())
        };
        let pixels = |samples: usize, value: u8| {
            Input::from(Pixels {
                shape: vec![samples, 2],
                data: vec![value; samples * 2],
                scale: PixelScale::for_range([0.0, 1.0]),
            })
        };
        let stacked = Input::stack(&[&floats(1, 1.0), &floats(2, 2.0)], 3).unwrap();
        assert_eq!(
            stacked,
            Input::from(Tensor::new(vec![3, 2], vec![1.0f32, 1.0, 2.0, 2.0, 2.0, 2.0]).unwrap())
        );
        let stacked = Input::stack(&[&pixels(1, 255), &pixels(1, 0)], 2).unwrap();
        assert_eq!(stacked.shape(), [2, 2]);
        assert_eq!(
            stacked.into_tensor().data,
            TensorData::F32(vec![1.0, 1.0, 0.0, 0.0])
        );
        let err = Input::stack(&[&floats(1, 1.0), &pixels(1, 0)], 2).unwrap_err();
        assert!(err.message.contains("one kind"), "{err}");
        let ids = |values: Vec<i64>| Input::from(Tensor::new(vec![1, 2], values).unwrap());
        let stacked = Input::stack(&[&ids(vec![1, 2]), &ids(vec![3, 4])], 2).unwrap();
        assert_eq!(stacked.datatype(), DataType::I64);
        assert_eq!(stacked.shape(), [2, 2]);
        let err = Input::stack(&[&ids(vec![1, 2]), &floats(1, 1.0)], 2).unwrap_err();
        assert!(
            err.message.contains("cannot join INT64 data with FP32"),
            "{err}"
        );
    }

    #[test]
    fn shapes_must_match_the_data() {
        assert!(Tensor::new(vec![2, 3], vec![0.0f32; 6]).is_ok());
        let err = Tensor::new(vec![2, 3], vec![0.0f32; 5]).unwrap_err();
        assert_eq!(err.message, "shape [2, 3] needs 6 values, got 5");
        // Empty tensors and scalars are tensors too.
        assert!(Tensor::new(vec![2, 0], Vec::<f32>::new()).is_ok());
        assert!(Tensor::new(vec![], vec![7i64]).is_ok());
        let err = element_count(&[usize::MAX, 2]).unwrap_err();
        assert!(err.message.contains("too large"), "{err}");
    }

    #[test]
    fn rows_are_cut_along_the_first_dimension() {
        let words = Tensor::new(
            vec![3, 1],
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        )
        .unwrap();
        let rows = words.rows(1, 3);
        assert_eq!(rows.shape, vec![2, 1]);
        assert_eq!(
            rows.data,
            TensorData::Bytes(vec![b"b".to_vec(), b"c".to_vec()])
        );
    }

    #[test]
    fn max_difference_counts_a_nan_as_infinite() {
        assert_eq!(max_difference(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert_eq!(max_difference(&[f32::NAN, 2.0], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(max_difference(&[0.0], &[f32::NAN]), f32::INFINITY);
    }

    #[test]
    fn pixels_map_onto_the_declared_range() {
        let scale = PixelScale::for_range([-1.0, 1.0]);
        let pixels = Pixels {
            shape: vec![1, 3],
            data: vec![0, 255, 51],
            scale,
        };
        let tensor = pixels.to_tensor();
        assert_eq!(tensor.shape, vec![1, 3]);
        let values = tensor.as_f32().unwrap();
        assert_eq!(values[0], -1.0);
        assert!((values[1] - 1.0).abs() < 1e-6);
        assert!((values[2] - (-0.6)).abs() < 1e-6);
    }

    #[test]
    fn datatype_names_round_trip() {
        for t in DataType::ALL.into_iter().filter(|t| *t != DataType::Other) {
            assert_eq!(DataType::parse(t.name()).unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        let err = DataType::parse("FLOAT32").unwrap_err();
        assert!(err.message.contains("expected one of BOOL, UINT8"), "{err}");
        assert!(DataType::parse("OTHER").is_err());
    }

    #[test]
    fn sample_elements_skip_the_batch() {
        let spec = TensorSpec {
            name: "input".into(),
            datatype: DataType::F32,
            shape: Some(vec![None, Some(1), Some(28), Some(28)]),
        };
        assert_eq!(spec.sample_elements(), Some(784));
        assert!(spec.varies_first());
        assert_eq!(spec.display_shape(), vec![-1, 1, 28, 28]);
        let variable = TensorSpec {
            shape: Some(vec![None, None]),
            ..spec.clone()
        };
        assert_eq!(variable.sample_elements(), None);
        let scalar = TensorSpec {
            shape: Some(vec![]),
            ..spec.clone()
        };
        assert_eq!(scalar.sample_elements(), Some(1));
        assert!(!scalar.varies_first());
        assert_eq!(scalar.display_shape(), Vec::<i64>::new());
        let open = TensorSpec {
            shape: None,
            ..spec
        };
        assert_eq!(open.sample_elements(), None);
        assert!(!open.varies_first());
        assert_eq!(open.display_shape(), vec![-1]);
    }
}
