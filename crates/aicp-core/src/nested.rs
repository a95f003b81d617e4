//! Reading a JSON value or (nested) array of values straight into a shape and flat typed data,
//! without building a JSON tree: `[[1, 2], [3, 4]]` becomes shape `[2, 2]` and data
//! `[1, 2, 3, 4]`. Ragged arrays, mixed nesting and values the element type cannot hold
//! (300 as INT8, 1e39 as FP32, 1.5 as an integer) are rejected with a message that says where.
//!
//! serde_json reads the numbers; each is checked against the element type as it comes, and the
//! shape is built on the way, so a body is read in one pass. (An earlier reader kept arrays raw
//! and scanned them again by hand: serde's own pass was faster for the long decimals clients
//! send, and as fast for short ones.)

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// A rectangular array of `T` of any rank (0 for a bare value).
#[derive(Debug, Clone, PartialEq)]
pub struct NestedArray<T = f32> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

impl<T> Default for NestedArray<T> {
    fn default() -> Self {
        Self {
            shape: Vec::new(),
            data: Vec::new(),
        }
    }
}

/// An element type a JSON value can be read into. Each conversion returns `None` when the value
/// does not fit the type exactly (floats: when it is outside the type's finite range).
pub trait Element: Sized {
    /// The protocol's name for the type, for messages.
    const NAME: &'static str;
    /// What a JSON value of this type looks like, for messages.
    const EXPECTED: &'static str = "a number";

    fn from_f64(value: f64) -> Option<Self>;
    fn from_i64(value: i64) -> Option<Self>;
    fn from_u64(value: u64) -> Option<Self>;
    fn from_bool(_value: bool) -> Option<Self> {
        None
    }
    fn from_str(_value: &str) -> Option<Self> {
        None
    }
}

macro_rules! float_element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const NAME: &'static str = $name;

            fn from_f64(value: f64) -> Option<Self> {
                let narrowed = value as $t;
                narrowed.is_finite().then_some(narrowed)
            }

            fn from_i64(value: i64) -> Option<Self> {
                Some(value as $t)
            }

            fn from_u64(value: u64) -> Option<Self> {
                Some(value as $t)
            }
        }
    };
}

float_element!(f32, "FP32");
float_element!(f64, "FP64");

macro_rules! integer_element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            const EXPECTED: &'static str = "an integer";

            fn from_f64(_value: f64) -> Option<Self> {
                None
            }

            fn from_i64(value: i64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }

            fn from_u64(value: u64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
        }
    };
}

integer_element!(i8, "INT8");
integer_element!(i16, "INT16");
integer_element!(i32, "INT32");
integer_element!(i64, "INT64");
integer_element!(u8, "UINT8");
integer_element!(u16, "UINT16");
integer_element!(u32, "UINT32");
integer_element!(u64, "UINT64");

impl Element for bool {
    const NAME: &'static str = "BOOL";
    const EXPECTED: &'static str = "true or false";

    fn from_f64(_value: f64) -> Option<Self> {
        None
    }

    fn from_i64(_value: i64) -> Option<Self> {
        None
    }

    fn from_u64(_value: u64) -> Option<Self> {
        None
    }

    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
}

/// BYTES elements: JSON strings, as their UTF-8 bytes.
impl Element for Vec<u8> {
    const NAME: &'static str = "BYTES";
    const EXPECTED: &'static str = "a string";

    fn from_f64(_value: f64) -> Option<Self> {
        None
    }

    fn from_i64(_value: i64) -> Option<Self> {
        None
    }

    fn from_u64(_value: u64) -> Option<Self> {
        None
    }

    fn from_str(value: &str) -> Option<Self> {
        Some(value.as_bytes().to_vec())
    }
}

impl<T: Element> NestedArray<T> {
    /// Reads JSON text holding a value or a (nested) array of values.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }
}

impl<'de, T: Element> Deserialize<'de> for NestedArray<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut builder = Builder::default();
        Level {
            builder: &mut builder,
            depth: 0,
        }
        .deserialize(deserializer)?;
        Ok(NestedArray {
            shape: builder.shape,
            data: builder.data,
        })
    }
}

struct Builder<T> {
    shape: Vec<usize>,
    data: Vec<T>,
    /// The depth at which values were found; every value must be at the same depth.
    leaf_depth: Option<usize>,
}

impl<T> Default for Builder<T> {
    fn default() -> Self {
        Self {
            shape: Vec::new(),
            data: Vec::new(),
            leaf_depth: None,
        }
    }
}

struct Level<'a, T> {
    builder: &'a mut Builder<T>,
    depth: usize,
}

impl<'de, T: Element> DeserializeSeed<'de> for Level<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<T: Element> Level<'_, T> {
    fn value<E: de::Error>(self, converted: Option<T>, shown: &dyn fmt::Debug) -> Result<(), E> {
        let b = self.builder;
        match b.leaf_depth {
            None => b.leaf_depth = Some(self.depth),
            Some(depth) if depth != self.depth => {
                return Err(E::custom(format!(
                    "array is not rectangular: values found at nesting depths {depth} and {}",
                    self.depth
                )));
            }
            Some(_) => {}
        }
        let Some(value) = converted else {
            return Err(E::custom(format!(
                "value {shown:?} at index {} does not fit {}: expected {}",
                b.data.len(),
                T::NAME,
                T::EXPECTED
            )));
        };
        b.data.push(value);
        Ok(())
    }
}

impl<'de, T: Element> Visitor<'de> for Level<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} or an array of them ({})", T::EXPECTED, T::NAME)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.value(T::from_f64(v), &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.value(T::from_i64(v), &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.value(T::from_u64(v), &v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match T::from_bool(v) {
            Some(value) => self.value(Some(value), &v),
            None => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match T::from_str(v) {
            Some(value) => self.value(Some(value), &v),
            None => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        let b = self.builder;
        if depth == b.shape.len() {
            // First array seen at this depth: it sets the length, and reserves room.
            b.shape.push(usize::MAX);
            if let Some(hint) = seq.size_hint() {
                b.data.reserve(hint);
            }
        }
        let mut count = 0usize;
        while seq
            .next_element_seed(Level {
                builder: &mut *b,
                depth: depth + 1,
            })?
            .is_some()
        {
            count += 1;
        }
        match b.shape[depth] {
            usize::MAX => b.shape[depth] = count,
            expected if expected != count => {
                return Err(de::Error::custom(format!(
                    "array is not rectangular: lists at nesting depth {depth} have {expected} and {count} elements"
                )));
            }
            _ => {}
        }
        if count == 0 && b.leaf_depth.is_none() {
            b.leaf_depth = Some(depth + 1);
        }
        if b.leaf_depth.is_some_and(|leaf| leaf < depth + 1) {
            return Err(de::Error::custom(
                "array is not rectangular: it mixes values and lists at the same depth",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NestedArray, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn flattens_any_rank() {
        assert_eq!(
            parse("3").unwrap(),
            NestedArray {
                shape: vec![],
                data: vec![3.0]
            }
        );
        assert_eq!(parse("[1, 2.5]").unwrap().shape, vec![2]);
        let m = parse("[[1, 2, 3], [4, 5, 6]]").unwrap();
        assert_eq!(
            (m.shape, m.data),
            (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let t = parse("[[[0], [1]], [[2], [3]], [[4], [5]]]").unwrap();
        assert_eq!(t.shape, vec![3, 2, 1]);
        assert_eq!(parse("[]").unwrap().shape, vec![0]);
        assert_eq!(parse("[[], []]").unwrap().shape, vec![2, 0]);
    }

    #[test]
    fn rejects_ragged_mixed_and_non_numbers() {
        let err = parse("[[1, 2], [3]]").unwrap_err();
        assert!(err.contains("have 2 and 1 elements"), "{err}");
        let err = parse("[[1, 2], 3]").unwrap_err();
        assert!(err.contains("not rectangular"), "{err}");
        let err = parse("[1, [2, 3]]").unwrap_err();
        assert!(err.contains("not rectangular"), "{err}");
        let err = parse("[1, \"2\"]").unwrap_err();
        assert!(
            err.contains("expected a number or an array of them (FP32)"),
            "{err}"
        );
        let err = parse("[1, null]").unwrap_err();
        assert!(err.contains("expected a number"), "{err}");
        let err = parse("[1e39]").unwrap_err();
        assert!(
            err.contains("value 1e39 at index 0 does not fit FP32"),
            "{err}"
        );
        let err = parse("[true]").unwrap_err();
        assert!(err.contains("invalid type: boolean `true`"), "{err}");
    }

    /// JSON text that is not a rectangular array of numbers is refused, whatever is wrong with it.
    #[test]
    fn refuses_anything_but_a_rectangular_array_of_numbers() {
        for json in [
            "3",
            "-0.5",
            "[1, 2.5e-3, -7E2]",
            "[[1, 2, 3],\n [4, 5, 6]]",
            "[[[0], [1]], [[2], [3]], [[4], [5]]]",
            "[]",
            "[[], []]",
            "[0.123,0.5,1]",
        ] {
            assert!(NestedArray::<f32>::from_json(json).is_ok(), "{json}");
        }
        for json in [
            "[[1, 2], [3]]",
            "[[1, 2], 3]",
            "[1, [2, 3]]",
            "[1, \"2\"]",
            "[1e39]",
            "[true]",
            // Not JSON: found by the fuzz tests (tests/fuzz.rs) or in their spirit.
            "0 -",
            "-",
            "1 2",
            "[1 2]",
            "[1,,2]",
            "[,1]",
            "[1,]",
            "[1] [2]",
            "[1] 2",
            "1.2.3",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "--1",
            "1-2",
            ",",
        ] {
            assert!(NestedArray::<f32>::from_json(json).is_err(), "{json}");
        }
        assert!(NestedArray::<i8>::from_json("[1, 300]").is_err());
        assert!(NestedArray::<i64>::from_json("[1.5]").is_err());
        assert_eq!(
            NestedArray::<u8>::from_json("[[0, 255]]").unwrap().data,
            vec![0, 255]
        );
        for token in ["0.1", "0.123", "-12.5", "1234567", "0.000001", "0.12345678"] {
            let want: f32 = token.parse().unwrap();
            assert_eq!(
                NestedArray::<f32>::from_json(token).unwrap().data,
                vec![want],
                "{token}"
            );
        }
    }

    #[test]
    fn integers_and_booleans_must_fit_their_type() {
        let ints: NestedArray<i8> = serde_json::from_str("[[-128, 127]]").unwrap();
        assert_eq!((ints.shape, ints.data), (vec![1, 2], vec![-128, 127]));
        let err = serde_json::from_str::<NestedArray<i8>>("[1, 300]").unwrap_err();
        assert!(
            err.to_string()
                .contains("value 300 at index 1 does not fit INT8"),
            "{err}"
        );
        let err = serde_json::from_str::<NestedArray<u32>>("[-1]").unwrap_err();
        assert!(err.to_string().contains("does not fit UINT32"), "{err}");
        let err = serde_json::from_str::<NestedArray<i64>>("[1.5]").unwrap_err();
        assert!(err.to_string().contains("expected an integer"), "{err}");
        let big: NestedArray<u64> = serde_json::from_str("[18446744073709551615]").unwrap();
        assert_eq!(big.data, vec![u64::MAX]);
        let flags: NestedArray<bool> = serde_json::from_str("[true, false]").unwrap();
        assert_eq!(flags.data, vec![true, false]);
        let err = serde_json::from_str::<NestedArray<bool>>("[1]").unwrap_err();
        assert!(err.to_string().contains("does not fit BOOL"), "{err}");
    }

    #[test]
    fn strings_are_bytes_elements_and_nothing_else() {
        let words: NestedArray<Vec<u8>> =
            serde_json::from_str(r#"[["a", "b\u00e9"], ["", "\n"]]"#).unwrap();
        assert_eq!(words.shape, vec![2, 2]);
        assert_eq!(
            words.data,
            vec![
                b"a".to_vec(),
                "b\u{e9}".as_bytes().to_vec(),
                vec![],
                b"\n".to_vec()
            ]
        );
        let err = serde_json::from_str::<NestedArray<Vec<u8>>>("[1]").unwrap_err();
        assert!(err.to_string().contains("does not fit BYTES"), "{err}");
        let err = serde_json::from_str::<NestedArray<f32>>(r#"["1"]"#).unwrap_err();
        assert!(err.to_string().contains("invalid type: string"), "{err}");
    }
}
