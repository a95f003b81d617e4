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
            data: self.data.iter().map(|&p| self.scale.apply(p)).collect(),
        }
    }
}

/// One input of a batch, as an engine takes it: float32 values, or 8-bit pixels for a model
/// that takes float32 images, which the engine normalises (on the host, or where it computes).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    F32(Tensor),
    Pixels(Pixels),
}

impl Input {
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32(tensor) => &tensor.shape,
            Self::Pixels(pixels) => &pixels.shape,
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

    /// The float32 tensor the model sees: pixels normalised here, on the host.
    pub fn into_f32(self) -> Tensor {
        match self {
            Self::F32(tensor) => tensor,
            Self::Pixels(pixels) => pixels.to_tensor(),
        }
    }

    /// `parts` (one request's input each, of one kind, and of one sample shape) stacked along
    /// the batch dimension into one input of `samples` samples. Parts of different kinds are an
    /// error: they cannot share an engine run.
    pub fn stack(parts: &[&Input], samples: usize) -> Result<Input> {
        let Some(first) = parts.first() else {
            return Err(Error::internal("no input to stack"));
        };
        let mut shape = first.shape().to_vec();
        if let Some(batch) = shape.first_mut() {
            *batch = samples;
        }
        let values = element_count(&shape)?;
        Ok(match first {
            Self::F32(_) => Self::F32(Tensor {
                data: concat(parts, values, |part| match part {
                    Self::F32(tensor) => Some(&tensor.data),
                    Self::Pixels(_) => None,
                })?,
                shape,
            }),
            Self::Pixels(pixels) => Self::Pixels(Pixels {
                data: concat(parts, values, |part| match part {
                    Self::Pixels(pixels) => Some(&pixels.data),
                    Self::F32(_) => None,
                })?,
                shape,
                scale: pixels.scale,
            }),
        })
    }
}

/// The values of every part (`capacity` in all), one after the other; `values` gives a part's,
/// or `None` for a part of another kind, which cannot share the run.
fn concat<'a, T: Copy + 'a>(
    parts: &[&'a Input],
    capacity: usize,
    values: impl Fn(&'a Input) -> Option<&'a Vec<T>>,
) -> Result<Vec<T>> {
    let mut data = Vec::with_capacity(capacity);
    for part in parts {
        let part = values(part).ok_or_else(|| {
            Error::internal("a batch's requests must give their inputs of one kind")
        })?;
        data.extend_from_slice(part);
    }
    Ok(data)
}

impl From<Tensor> for Input {
    fn from(tensor: Tensor) -> Self {
        Self::F32(tensor)
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
    #[serde(rename = "BF16")]
    BF16,
    #[serde(rename = "FP32")]
    F32,
    #[serde(rename = "FP64")]
    F64,
    #[serde(rename = "BYTES")]
    String,
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
        Self::String,
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
            Self::String => "BYTES",
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
            Self::String | Self::Other => None,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    fn inputs_stack_along_the_batch_and_only_with_their_own_kind() {
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
            Input::from(Tensor::new(vec![3, 2], vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0]).unwrap())
        );
        let stacked = Input::stack(&[&pixels(1, 255), &pixels(1, 0)], 2).unwrap();
        assert_eq!(stacked.shape(), [2, 2]);
        assert_eq!(stacked.into_f32().data, [1.0, 1.0, 0.0, 0.0]);
        let err = Input::stack(&[&floats(1, 1.0), &pixels(1, 0)], 2).unwrap_err();
        assert!(err.message.contains("one kind"), "{err}");
    }

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
        assert_eq!(tensor.data[0], -1.0);
        assert!((tensor.data[1] - 1.0).abs() < 1e-6);
        assert!((tensor.data[2] - (-0.6)).abs() < 1e-6);
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
