//! Tensor data in any numeric element type a request may carry, decoded from the protocols'
//! encodings (JSON arrays, raw little-endian bytes), and its one conversion to what the engines
//! take: float32, refused wherever a value would not survive the trip exactly.

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::nested::NestedArray;
use crate::tensor::DataType;

/// Flat, row-major tensor data with its element type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Integers up to 2^24 in magnitude are exact in float32; beyond, some are not.
const F32_EXACT_INTEGER: u64 = 1 << 24;

/// Applies `$body` to the vector inside any variant, bound to `$v`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
        }
    };
}

/// Decodes whole little-endian elements of `$t` (the length is checked by the caller).
macro_rules! le {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(size_of::<$t>())
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks_exact yields whole elements")))
            .collect::<Vec<$t>>()
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::U8(_) => DataType::U8,
            Self::U16(_) => DataType::U16,
            Self::U32(_) => DataType::U32,
            Self::U64(_) => DataType::U64,
            Self::I8(_) => DataType::I8,
            Self::I16(_) => DataType::I16,
            Self::I32(_) => DataType::I32,
            Self::I64(_) => DataType::I64,
            Self::F16(_) => DataType::F16,
            Self::BF16(_) => DataType::BF16,
            Self::F32(_) => DataType::F32,
            Self::F64(_) => DataType::F64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes raw little-endian elements of `datatype` (the binary tensor data extension, gRPC
    /// raw contents). BOOL bytes must be 0 or 1.
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self> {
        let Some(size) = datatype.size() else {
            return Err(unsupported(datatype));
        };
        if !bytes.len().is_multiple_of(size) {
            return Err(Error::invalid(format!(
                "{} bytes of {datatype} data: not a whole number of {size}-byte elements",
                bytes.len()
            )));
        }
        Ok(match datatype {
            DataType::Bool => {
                if let Some(i) = bytes.iter().position(|b| *b > 1) {
                    return Err(Error::invalid(format!(
                        "BOOL byte {} at index {i}: expected 0 or 1",
                        bytes[i]
                    )));
                }
                Self::Bool(bytes.iter().map(|b| *b == 1).collect())
            }
            DataType::U8 => Self::U8(bytes.to_vec()),
            DataType::U16 => Self::U16(le!(bytes, u16)),
            DataType::U32 => Self::U32(le!(bytes, u32)),
            DataType::U64 => Self::U64(le!(bytes, u64)),
            DataType::I8 => Self::I8(bytes.iter().map(|b| *b as i8).collect()),
            DataType::I16 => Self::I16(le!(bytes, i16)),
            DataType::I32 => Self::I32(le!(bytes, i32)),
            DataType::I64 => Self::I64(le!(bytes, i64)),
            DataType::F16 => Self::F16(le!(bytes, u16).into_iter().map(f16::from_bits).collect()),
            DataType::BF16 => {
                Self::BF16(le!(bytes, u16).into_iter().map(bf16::from_bits).collect())
            }
            DataType::F32 => Self::F32(le!(bytes, f32)),
            DataType::F64 => Self::F64(le!(bytes, f64)),
            DataType::String | DataType::Other => return Err(unsupported(datatype)),
        })
    }

    /// Reads a JSON value (a flat or nested array) as elements of `datatype`. Returns the data
    /// and the shape the nesting had (`[n]` for a flat array).
    pub fn from_json(datatype: DataType, json: &str) -> Result<(Self, Vec<usize>)> {
        fn read<T: crate::nested::Element>(json: &str) -> Result<NestedArray<T>> {
            NestedArray::from_json(json).map_err(|e| Error::invalid(e.to_string()))
        }
        fn done<T>(
            array: NestedArray<T>,
            wrap: impl FnOnce(Vec<T>) -> TensorData,
        ) -> (TensorData, Vec<usize>) {
            (wrap(array.data), array.shape)
        }
        Ok(match datatype {
            DataType::Bool => done(read::<bool>(json)?, Self::Bool),
            DataType::U8 => done(read::<u8>(json)?, Self::U8),
            DataType::U16 => done(read::<u16>(json)?, Self::U16),
            DataType::U32 => done(read::<u32>(json)?, Self::U32),
            DataType::U64 => done(read::<u64>(json)?, Self::U64),
            DataType::I8 => done(read::<i8>(json)?, Self::I8),
            DataType::I16 => done(read::<i16>(json)?, Self::I16),
            DataType::I32 => done(read::<i32>(json)?, Self::I32),
            DataType::I64 => done(read::<i64>(json)?, Self::I64),
            DataType::F16 => done(read::<f32>(json)?, |v| {
                Self::F16(v.into_iter().map(f16::from_f32).collect())
            }),
            DataType::BF16 => done(read::<f32>(json)?, |v| {
                Self::BF16(v.into_iter().map(bf16::from_f32).collect())
            }),
            DataType::F32 => done(read::<f32>(json)?, Self::F32),
            DataType::F64 => done(read::<f64>(json)?, Self::F64),
            DataType::String | DataType::Other => return Err(unsupported(datatype)),
        })
    }

    /// The data as float32, the type aicp's engines take. Refuses a value that float32 cannot
    /// hold exactly (an integer above 2^24 in magnitude, a float64 beyond float32's range) rather
    /// than change it silently.
    pub fn into_f32(self) -> Result<Vec<f32>> {
        let datatype = self.datatype();
        let inexact = |i: usize, shown: &dyn std::fmt::Display| {
            Error::invalid(format!(
                "{datatype} value {shown} at index {i} cannot be converted to FP32 exactly"
            ))
        };
        macro_rules! integers {
            ($v:expr, $magnitude:expr) => {{
                if let Some(i) = $v.iter().position(|x| $magnitude(*x) > F32_EXACT_INTEGER) {
                    return Err(inexact(i, &$v[i]));
                }
                $v.into_iter().map(|x| x as f32).collect()
            }};
        }
        Ok(match self {
            Self::F32(v) => v,
            Self::Bool(v) => v.into_iter().map(f32::from).collect(),
            Self::U8(v) => v.into_iter().map(f32::from).collect(),
            Self::U16(v) => v.into_iter().map(f32::from).collect(),
            Self::I8(v) => v.into_iter().map(f32::from).collect(),
            Self::I16(v) => v.into_iter().map(f32::from).collect(),
            Self::F16(v) => v.into_iter().map(f32::from).collect(),
            Self::BF16(v) => v.into_iter().map(f32::from).collect(),
            Self::U32(v) => integers!(v, u64::from),
            Self::U64(v) => integers!(v, |x: u64| x),
            Self::I32(v) => integers!(v, |x: i32| x.unsigned_abs() as u64),
            Self::I64(v) => integers!(v, i64::unsigned_abs),
            Self::F64(v) => {
                let narrowed: Vec<f32> = v.iter().map(|x| *x as f32).collect();
                if let Some(i) =
                    (0..v.len()).find(|&i| v[i].is_finite() && !narrowed[i].is_finite())
                {
                    return Err(Error::invalid(format!(
                        "FP64 value {:?} at index {i} is outside FP32's range",
                        v[i]
                    )));
                }
                narrowed
            }
        })
    }
}

/// The error for a type no engine takes (BYTES, anything unknown).
pub fn unsupported(datatype: DataType) -> Error {
    Error::invalid(format!(
        "{datatype} tensors are not supported: aicp's engines take numeric and BOOL tensors"
    ))
}

/// float32 values as raw little-endian bytes.
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_decode_little_endian() {
        let data = TensorData::from_le_bytes(DataType::F32, &f32_le_bytes(&[1.5, -2.0])).unwrap();
        assert_eq!(data, TensorData::F32(vec![1.5, -2.0]));
        let data = TensorData::from_le_bytes(DataType::I16, &[0x01, 0x02, 0xff, 0xff]).unwrap();
        assert_eq!(data, TensorData::I16(vec![0x0201, -1]));
        let data = TensorData::from_le_bytes(DataType::F16, &f16::from_f32(0.5).to_le_bytes());
        assert_eq!(data.unwrap().into_f32().unwrap(), vec![0.5]);
        let err = TensorData::from_le_bytes(DataType::F32, &[0; 7]).unwrap_err();
        assert!(
            err.message.contains("not a whole number of 4-byte"),
            "{err}"
        );
        let err = TensorData::from_le_bytes(DataType::Bool, &[0, 1, 2]).unwrap_err();
        assert!(err.message.contains("BOOL byte 2 at index 2"), "{err}");
        assert!(TensorData::from_le_bytes(DataType::String, &[]).is_err());
    }

    #[test]
    fn json_reads_each_type_and_keeps_the_nesting() {
        let (data, shape) = TensorData::from_json(DataType::U8, "[[0, 255], [7, 8]]").unwrap();
        assert_eq!(
            (data, shape),
            (TensorData::U8(vec![0, 255, 7, 8]), vec![2, 2])
        );
        let (data, _) = TensorData::from_json(DataType::Bool, "[true, false]").unwrap();
        assert_eq!(data.into_f32().unwrap(), vec![1.0, 0.0]);
        let err = TensorData::from_json(DataType::U8, "[256]").unwrap_err();
        assert!(err.message.contains("does not fit UINT8"), "{err}");
        let err = TensorData::from_json(DataType::String, "[\"a\"]").unwrap_err();
        assert!(
            err.message.contains("BYTES tensors are not supported"),
            "{err}"
        );
    }

    #[test]
    fn conversion_to_f32_is_exact_or_refused() {
        let exact = TensorData::I64(vec![-(1 << 24), 1 << 24])
            .into_f32()
            .unwrap();
        assert_eq!(exact, vec![-16_777_216.0, 16_777_216.0]);
        let err = TensorData::I64(vec![0, (1 << 24) + 1])
            .into_f32()
            .unwrap_err();
        assert_eq!(
            err.message,
            "INT64 value 16777217 at index 1 cannot be converted to FP32 exactly"
        );
        assert!(TensorData::U64(vec![u64::MAX]).into_f32().is_err());
        assert!(TensorData::I32(vec![i32::MIN]).into_f32().is_err());
        assert_eq!(TensorData::F64(vec![0.25]).into_f32().unwrap(), vec![0.25]);
        let err = TensorData::F64(vec![1e300]).into_f32().unwrap_err();
        assert!(
            err.message
                .contains("FP64 value 1e300 at index 0 is outside FP32's range"),
            "{err}"
        );
        assert_eq!(TensorData::I8(vec![-3]).into_f32().unwrap(), vec![-3.0]);
    }
}
