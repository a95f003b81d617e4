//! Tensor data in every element type the protocols carry, typed all the way: decoded from their
//! encodings (JSON arrays, raw little-endian bytes, length-prefixed BYTES), stacked and split
//! along the batch, and encoded back. Nothing here converts one type into another but where a
//! caller asks for it by name ([`TensorData::float_as`], the ML API's float arrays).

use half::{bf16, f16};
use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};

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
    /// BYTES (ONNX's STRING): each element a byte string, text as UTF-8 usually.
    Bytes(Vec<Vec<u8>>),
}

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
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Applies `$body` to the vector inside any variant, bound to `$v`, and wraps its result (a
/// vector of the same element type) in the same variant.
macro_rules! map {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::BF16($v) => TensorData::BF16($body),
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
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

/// Encodes elements of a type with `to_le_bytes`.
macro_rules! to_le {
    ($values:expr) => {
        $values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
}

macro_rules! from_vec {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<Vec<$t>> for TensorData {
            fn from(values: Vec<$t>) -> Self {
                Self::$variant(values)
            }
        }

        impl FromIterator<$t> for TensorData {
            fn from_iter<I: IntoIterator<Item = $t>>(values: I) -> Self {
                Self::$variant(values.into_iter().collect())
            }
        })*
    };
}

from_vec!(
    bool => Bool, u8 => U8, u16 => U16, u32 => U32, u64 => U64, i8 => I8, i16 => I16,
    i32 => I32, i64 => I64, f16 => F16, bf16 => BF16, f32 => F32, f64 => F64,
    Vec<u8> => Bytes,
);

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
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` zeros of `datatype` (false, 0, 0.0, empty strings).
    pub fn zeros(datatype: DataType, len: usize) -> Result<Self> {
        Ok(match datatype {
            DataType::Bool => Self::Bool(vec![false; len]),
            DataType::U8 => Self::U8(vec![0; len]),
            DataType::U16 => Self::U16(vec![0; len]),
            DataType::U32 => Self::U32(vec![0; len]),
            DataType::U64 => Self::U64(vec![0; len]),
            DataType::I8 => Self::I8(vec![0; len]),
            DataType::I16 => Self::I16(vec![0; len]),
            DataType::I32 => Self::I32(vec![0; len]),
            DataType::I64 => Self::I64(vec![0; len]),
            DataType::F16 => Self::F16(vec![f16::ZERO; len]),
            DataType::BF16 => Self::BF16(vec![bf16::ZERO; len]),
            DataType::F32 => Self::F32(vec![0.0; len]),
            DataType::F64 => Self::F64(vec![0.0; len]),
            DataType::Bytes => Self::Bytes(vec![Vec::new(); len]),
            DataType::Other => return Err(unsupported(datatype)),
        })
    }

    /// The float32 values, when the data is FP32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Self::F32(values) => Some(values),
            _ => None,
        }
    }

    /// Decodes the protocols' raw encoding of `datatype` (the binary tensor data extension,
    /// gRPC raw contents): little-endian elements, BOOL as bytes 0 or 1, and each BYTES
    /// element as a 4-byte little-endian length followed by that many bytes.
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self> {
        if datatype == DataType::Bytes {
            return Self::length_prefixed(bytes);
        }
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
            DataType::Bytes | DataType::Other => return Err(unsupported(datatype)),
        })
    }

    /// BYTES elements, each a 4-byte little-endian length and its bytes. A length that runs past
    /// the end, or bytes left too short for a length, is refused with where it happened.
    fn length_prefixed(mut bytes: &[u8]) -> Result<Self> {
        let mut elements = Vec::new();
        while !bytes.is_empty() {
            let index = elements.len();
            let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
                return Err(Error::invalid(format!(
                    "BYTES element {index}: {} bytes left, too few for its 4-byte length",
                    bytes.len()
                )));
            };
            let length = u32::from_le_bytes(*prefix) as usize;
            if length > rest.len() {
                return Err(Error::invalid(format!(
                    "BYTES element {index} says it has {length} bytes, but only {} follow",
                    rest.len()
                )));
            }
            let (element, rest) = rest.split_at(length);
            elements.push(element.to_vec());
            bytes = rest;
        }
        Ok(Self::Bytes(elements))
    }

    /// The raw encoding [`TensorData::from_le_bytes`] reads.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Self::U8(v) => v.clone(),
            Self::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Self::U16(v) => to_le!(v),
            Self::U32(v) => to_le!(v),
            Self::U64(v) => to_le!(v),
            Self::I16(v) => to_le!(v),
            Self::I32(v) => to_le!(v),
            Self::I64(v) => to_le!(v),
            Self::F16(v) => to_le!(v),
            Self::BF16(v) => to_le!(v),
            Self::F32(v) => to_le!(v),
            Self::F64(v) => to_le!(v),
            Self::Bytes(v) => {
                let mut raw = Vec::with_capacity(v.iter().map(|e| e.len() + 4).sum());
                for element in v {
                    raw.extend_from_slice(&(element.len() as u32).to_le_bytes());
                    raw.extend_from_slice(element);
                }
                raw
            }
        }
    }

    /// Reads a JSON value (a flat or nested array) as elements of `datatype`: numbers, `true`
    /// and `false` for BOOL, strings for BYTES. Returns the data and the shape the nesting had
    /// (`[n]` for a flat array).
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
            DataType::Bytes => done(read::<Vec<u8>>(json)?, Self::Bytes),
            DataType::Other => return Err(unsupported(datatype)),
        })
    }

    /// Elements `start..end`, as data of their own.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        map!(self, v => v[start..end].to_vec())
    }

    /// `parts` one after the other; all of one type (data of several types never share a run).
    pub fn concat(parts: &[&Self]) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::internal("no data to concatenate"));
        };
        let total = parts.iter().map(|p| p.len()).sum();
        let mut joined = map!(first, v => {
            let mut all = Vec::with_capacity(total);
            all.extend_from_slice(v);
            all
        });
        for part in &parts[1..] {
            match (&mut joined, part) {
                (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
                (Self::U8(a), Self::U8(b)) => a.extend_from_slice(b),
                (Self::U16(a), Self::U16(b)) => a.extend_from_slice(b),
                (Self::U32(a), Self::U32(b)) => a.extend_from_slice(b),
                (Self::U64(a), Self::U64(b)) => a.extend_from_slice(b),
                (Self::I8(a), Self::I8(b)) => a.extend_from_slice(b),
                (Self::I16(a), Self::I16(b)) => a.extend_from_slice(b),
                (Self::I32(a), Self::I32(b)) => a.extend_from_slice(b),
                (Self::I64(a), Self::I64(b)) => a.extend_from_slice(b),
                (Self::F16(a), Self::F16(b)) => a.extend_from_slice(b),
                (Self::BF16(a), Self::BF16(b)) => a.extend_from_slice(b),
                (Self::F32(a), Self::F32(b)) => a.extend_from_slice(b),
                (Self::F64(a), Self::F64(b)) => a.extend_from_slice(b),
                (Self::Bytes(a), Self::Bytes(b)) => a.extend_from_slice(b),
                (joined, part) => {
                    return Err(Error::internal(format!(
                        "cannot join {} data with {}",
                        joined.datatype(),
                        part.datatype()
                    )));
                }
            }
        }
        Ok(joined)
    }

    /// The values as float64, for ranking and comparing them (the classification extension,
    /// tests): numbers as they are, BOOL as 0 and 1. `None` for BYTES.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Self::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
            Self::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Self::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Self::F16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::BF16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Self::F64(v) => v.clone(),
            Self::Bytes(_) => return None,
        })
    }

    /// The values as float32, for scoring classes: float32 as it is, any other number (and
    /// BOOL) through [`Self::to_f64`]. `None` for BYTES.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self {
            Self::F32(v) => Some(v.clone()),
            other => Some(other.to_f64()?.into_iter().map(|x| x as f32).collect()),
        }
    }

    /// Float32 values as the float type `datatype` (FP16, BF16, FP32 or FP64): the one
    /// conversion the seed's ML API makes, whose clients send JSON numbers to any float model.
    /// Refuses a value outside the target's finite range, and any other type.
    pub fn float_as(values: Vec<f32>, datatype: DataType) -> Result<Self> {
        let out_of_range = |i: usize| {
            Error::invalid(format!(
                "value {} at index {i} is outside {datatype}'s range",
                values[i]
            ))
        };
        Ok(match datatype {
            DataType::F32 => Self::F32(values),
            DataType::F64 => Self::F64(values.into_iter().map(f64::from).collect()),
            DataType::F16 => {
                let narrowed: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
                if let Some(i) =
                    (0..values.len()).find(|&i| values[i].is_finite() && !narrowed[i].is_finite())
                {
                    return Err(out_of_range(i));
                }
                Self::F16(narrowed)
            }
            DataType::BF16 => Self::BF16(values.into_iter().map(bf16::from_f32).collect()),
            other => {
                return Err(Error::invalid(format!(
                    "the model takes {other}, not floating-point numbers"
                )));
            }
        })
    }
}

/// JSON: numbers (FP16 and BF16 as the float32 they stand for), `true`/`false`, and strings for
/// BYTES, which must then be UTF-8.
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Bool(v) => v.serialize(serializer),
            Self::U8(v) => v.serialize(serializer),
            Self::U16(v) => v.serialize(serializer),
            Self::U32(v) => v.serialize(serializer),
            Self::U64(v) => v.serialize(serializer),
            Self::I8(v) => v.serialize(serializer),
            Self::I16(v) => v.serialize(serializer),
            Self::I32(v) => v.serialize(serializer),
            Self::I64(v) => v.serialize(serializer),
            Self::F16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            Self::BF16(v) => serializer.collect_seq(v.iter().map(|x| x.to_f32())),
            Self::F32(v) => v.serialize(serializer),
            Self::F64(v) => v.serialize(serializer),
            Self::Bytes(v) => {
                let mut seq = serializer.serialize_seq(Some(v.len()))?;
                for (i, element) in v.iter().enumerate() {
                    let text = std::str::from_utf8(element).map_err(|_| {
                        S::Error::custom(format!(
                            "BYTES element {i} is not UTF-8 text, which JSON cannot carry: ask for the output as binary data"
                        ))
                    })?;
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
        }
    }
}

/// The error for a type aicp cannot carry (anything the protocols have no name for).
pub fn unsupported(datatype: DataType) -> Error {
    Error::invalid(format!(
        "{datatype} tensors are not supported: aicp carries BOOL, the integer and floating-point \
         types and BYTES"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_decode_little_endian_and_encode_back() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let data = TensorData::from_le_bytes(DataType::F32, &raw).unwrap();
        assert_eq!(data, TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(data.to_le_bytes(), raw);
        let data = TensorData::from_le_bytes(DataType::I16, &[0x01, 0x02, 0xff, 0xff]).unwrap();
        assert_eq!(data, TensorData::I16(vec![0x0201, -1]));
        let data = TensorData::from_le_bytes(DataType::F16, &f16::from_f32(0.5).to_le_bytes());
        assert_eq!(data.unwrap(), TensorData::F16(vec![f16::from_f32(0.5)]));
        let err = TensorData::from_le_bytes(DataType::F32, &[0; 7]).unwrap_err();
        assert!(
            err.message.contains("not a whole number of 4-byte"),
            "{err}"
        );
        let err = TensorData::from_le_bytes(DataType::Bool, &[0, 1, 2]).unwrap_err();
        assert!(err.message.contains("BOOL byte 2 at index 2"), "{err}");
        for datatype in [
            DataType::Bool,
            DataType::U64,
            DataType::I8,
            DataType::BF16,
            DataType::F64,
            DataType::Bytes,
        ] {
            let zeros = TensorData::zeros(datatype, 3).unwrap();
            let back = TensorData::from_le_bytes(datatype, &zeros.to_le_bytes()).unwrap();
            assert_eq!(back, zeros, "{datatype}");
        }
    }

    #[test]
    fn bytes_elements_are_length_prefixed_and_lying_lengths_refused() {
        let data = TensorData::Bytes(vec![b"ab".to_vec(), Vec::new()]);
        let raw = data.to_le_bytes();
        assert_eq!(raw, vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(
            TensorData::from_le_bytes(DataType::Bytes, &raw).unwrap(),
            data
        );
        let err = TensorData::from_le_bytes(DataType::Bytes, &[9, 0, 0, 0, b'a']).unwrap_err();
        assert!(
            err.message
                .contains("element 0 says it has 9 bytes, but only 1 follow"),
            "{err}"
        );
        let err = TensorData::from_le_bytes(DataType::Bytes, &[0, 0, 0, 0, 1, 0]).unwrap_err();
        assert!(err.message.contains("element 1: 2 bytes left"), "{err}");
        let huge = TensorData::from_le_bytes(DataType::Bytes, &[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(huge.is_err());
    }

    #[test]
    fn json_reads_each_type_and_keeps_the_nesting() {
        let (data, shape) = TensorData::from_json(DataType::U8, "[[0, 255], [7, 8]]").unwrap();
        assert_eq!(
            (data, shape),
            (TensorData::U8(vec![0, 255, 7, 8]), vec![2, 2])
        );
        let (data, _) = TensorData::from_json(DataType::Bool, "[true, false]").unwrap();
        assert_eq!(data, TensorData::Bool(vec![true, false]));
        let err = TensorData::from_json(DataType::U8, "[256]").unwrap_err();
        assert!(err.message.contains("does not fit UINT8"), "{err}");
        let (data, shape) = TensorData::from_json(DataType::Bytes, r#"["a", "bc"]"#).unwrap();
        assert_eq!(shape, vec![2]);
        assert_eq!(serde_json::to_string(&data).unwrap(), r#"["a","bc"]"#);
        let (data, _) = TensorData::from_json(DataType::F16, "[0.5, 2]").unwrap();
        assert_eq!(serde_json::to_string(&data).unwrap(), "[0.5,2.0]");
        let binary = TensorData::Bytes(vec![vec![0xff]]);
        let err = serde_json::to_string(&binary).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn data_slices_and_joins_only_with_its_own_type() {
        let a = TensorData::I64(vec![1, 2, 3]);
        let b = TensorData::I64(vec![4]);
        assert_eq!(
            TensorData::concat(&[&a, &b]).unwrap(),
            TensorData::I64(vec![1, 2, 3, 4])
        );
        assert_eq!(a.slice(1, 3), TensorData::I64(vec![2, 3]));
        let words = TensorData::Bytes(vec![b"x".to_vec()]);
        assert_eq!(TensorData::concat(&[&words, &words]).unwrap().len(), 2);
        let err = TensorData::concat(&[&a, &words]).unwrap_err();
        assert!(
            err.message.contains("cannot join INT64 data with BYTES"),
            "{err}"
        );
    }

    #[test]
    fn floats_convert_only_into_float_types_within_range() {
        let half = TensorData::float_as(vec![0.5, f32::NAN], DataType::F16).unwrap();
        assert_eq!(half.datatype(), DataType::F16);
        let err = TensorData::float_as(vec![1e6], DataType::F16).unwrap_err();
        assert!(err.message.contains("outside FP16's range"), "{err}");
        let err = TensorData::float_as(vec![1.0], DataType::I64).unwrap_err();
        assert!(
            err.message.contains("takes INT64, not floating-point"),
            "{err}"
        );
        assert_eq!(
            TensorData::Bool(vec![true, false]).to_f64(),
            Some(vec![1.0, 0.0])
        );
        assert_eq!(TensorData::Bytes(vec![]).to_f64(), None);
    }
}
