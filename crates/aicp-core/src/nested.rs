//! Reading a JSON value or (nested) array of values straight into a shape and flat typed data,
//! without building a JSON tree: `[[1, 2], [3, 4]]` becomes shape `[2, 2]` and data
//! `[1, 2, 3, 4]`. Ragged arrays, mixed nesting and values the element type cannot hold
//! (300 as INT8, 1e39 as FP32, 1.5 as an integer) are rejected with a message that says where.
//!
//! [`NestedArray::from_json`] is the hot path for request bodies: it scans JSON text that is
//! already known to be valid (a `RawValue`'s) and parses each number straight into its type,
//! which is several times faster than going through serde for every element. Whatever it does
//! not expect (a string, a ragged array, a value that does not fit) sends it to the serde
//! reader, whose message then says exactly what is wrong.

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
    /// A JSON number token, when it fits exactly; `None` sends the caller to the serde reader.
    fn parse(_token: &str) -> Option<Self> {
        None
    }
    /// The number `mantissa / 10^scale` (negated when `negative`) read from a plain decimal of at
    /// most 7 digits, when it fits exactly; `None` sends the caller to [`Element::parse`].
    fn from_decimal(_negative: bool, _mantissa: u32, _scale: u32) -> Option<Self> {
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

            fn parse(token: &str) -> Option<Self> {
                // Rust's float parser: correctly rounded (Eisel-Lemire).
                token.parse::<$t>().ok().filter(|v| v.is_finite())
            }

            fn from_decimal(negative: bool, mantissa: u32, scale: u32) -> Option<Self> {
                // With at most 7 digits, the mantissa and the power of ten are both exact in
                // this type, so their quotient is correctly rounded (Clinger's fast path).
                let value = mantissa as $t / (POWERS_OF_TEN[scale as usize] as $t);
                Some(if negative { -value } else { value })
            }
        }
    };
}

/// Powers of ten, all exact in f32 and f64.
const POWERS_OF_TEN: [u32; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

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

            fn parse(token: &str) -> Option<Self> {
                token.parse().ok()
            }

            fn from_decimal(negative: bool, mantissa: u32, scale: u32) -> Option<Self> {
                if scale > 0 {
                    return None;
                }
                let value = i64::from(mantissa);
                <$t>::try_from(if negative { -value } else { value }).ok()
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

impl<T: Element> NestedArray<T> {
    /// Reads JSON text holding a value or a (nested) array of values.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        match scan(text) {
            Some(array) => Ok(array),
            None => serde_json::from_str(text),
        }
    }
}

/// How deeply arrays may nest: serde_json's own limit (it refuses a 128th level), which the fast
/// reader keeps too so that both readers accept the same texts.
const MAX_DEPTH: usize = 127;

/// The fast reader behind [`NestedArray::from_json`]: brackets, commas, whitespace and numbers
/// only, in JSON's grammar, at most [`MAX_DEPTH`] deep, rectangular, every value fitting `T`.
/// Anything else (including text that is not JSON at all) is `None`, for the serde reader to
/// explain.
fn scan<T: Element>(text: &str) -> Option<NestedArray<T>> {
    let bytes = text.as_bytes();
    let mut shape: Vec<usize> = Vec::new();
    // Elements seen so far in each array still open, outermost first.
    let mut open: Vec<usize> = Vec::new();
    let mut leaf_depth = None;
    // Where JSON's grammar is: after a value or a `]` comes a `,` or a `]`; after a `[` or a `,`
    // comes a value or a `[` (or, right after a `[`, its `]`).
    let mut after_value = false;
    let mut after_comma = false;
    // Room for values written like "0.12, "; a body of shorter ones grows the vector once or twice.
    let mut data = Vec::with_capacity(bytes.len() / 6 + 1);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                // A second value at the top level, or a value where a separator belongs.
                if after_value
                    || open.len() >= MAX_DEPTH
                    || open.is_empty() && (!shape.is_empty() || !data.is_empty())
                {
                    return None;
                }
                if let Some(count) = open.last_mut() {
                    *count += 1;
                }
                if open.len() == shape.len() {
                    shape.push(usize::MAX);
                }
                open.push(0);
                after_comma = false;
                i += 1;
            }
            b']' => {
                if after_comma {
                    return None;
                }
                let count = open.pop()?;
                let depth = open.len();
                match shape[depth] {
                    usize::MAX => shape[depth] = count,
                    expected if expected != count => return None,
                    _ => {}
                }
                if count == 0 && leaf_depth.is_none() {
                    leaf_depth = Some(depth + 1);
                }
                if leaf_depth.is_some_and(|leaf| leaf < depth + 1) {
                    return None;
                }
                after_value = true;
                i += 1;
            }
            b',' => {
                if !after_value || open.is_empty() {
                    return None;
                }
                after_value = false;
                after_comma = true;
                i += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'-' | b'0'..=b'9' => {
                if after_value || open.is_empty() && !data.is_empty() {
                    return None;
                }
                // One pass reads the token and, for the common short plain decimal such as
                // `0.123`, its value; anything else goes to the element's own parser.
                let start = i;
                let negative = bytes[i] == b'-';
                i += usize::from(negative);
                let (mut mantissa, mut digits, mut scale) = (0u32, 0u32, 0u32);
                let (mut dot, mut plain) = (false, true);
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'0'..=b'9' => {
                            mantissa = mantissa.wrapping_mul(10).wrapping_add(u32::from(c - b'0'));
                            digits += 1;
                            scale += u32::from(dot);
                        }
                        b'.' if !dot => dot = true,
                        b'.' | b'e' | b'E' | b'+' | b'-' => plain = false,
                        _ => break,
                    }
                    i += 1;
                }
                let token = &bytes[start..i];
                // JSON's number: no leading zeros, digits on both sides of the dot.
                let well_formed = if plain {
                    let integer = digits - scale;
                    let unsigned = &token[usize::from(negative)..];
                    integer >= 1 && (!dot || scale >= 1) && !(integer > 1 && unsigned[0] == b'0')
                } else {
                    json_number(token)
                };
                if !well_formed || *leaf_depth.get_or_insert(open.len()) != open.len() {
                    return None;
                }
                let value = match (plain && digits <= 7)
                    .then(|| T::from_decimal(negative, mantissa, scale))
                    .flatten()
                {
                    Some(value) => value,
                    None => T::parse(&text[start..i])?,
                };
                data.push(value);
                if let Some(count) = open.last_mut() {
                    *count += 1;
                }
                after_value = true;
                after_comma = false;
            }
            _ => return None,
        }
    }
    if !open.is_empty() || leaf_depth.is_none() && shape.is_empty() {
        return None;
    }
    Some(NestedArray { shape, data })
}

/// Whether `token` is a number as JSON writes it: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]?
/// [0-9]+)?`.
fn json_number(token: &[u8]) -> bool {
    let digits = |t: &[u8]| t.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut rest = token.strip_prefix(b"-").unwrap_or(token);
    match digits(rest) {
        0 => return false,
        n if n > 1 && rest[0] == b'0' => return false,
        n => rest = &rest[n..],
    }
    if let Some(fraction) = rest.strip_prefix(b".") {
        match digits(fraction) {
            0 => return false,
            n => rest = &fraction[n..],
        }
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        match digits(exponent) {
            0 => return false,
            n => rest = &exponent[n..],
        }
    }
    rest.is_empty()
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

    /// The fast reader agrees with the serde reader wherever it answers, and leaves every error
    /// to the serde reader.
    #[test]
    fn the_fast_reader_agrees_with_serde() {
        let same = [
            "3",
            "-0.5",
            "[1, 2.5e-3, -7E2]",
            "[[1, 2, 3],\n [4, 5, 6]]",
            "[[[0], [1]], [[2], [3]], [[4], [5]]]",
            "[]",
            "[[], []]",
            "[0.123,0.5,1]",
        ];
        for json in same {
            let fast = scan::<f32>(json).unwrap_or_else(|| panic!("fast reader refused {json}"));
            assert_eq!(fast, parse(json).unwrap(), "{json}");
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
            assert_eq!(scan::<f32>(json), None, "{json}");
            assert!(NestedArray::<f32>::from_json(json).is_err(), "{json}");
        }
        // Nesting: as deep as serde's reader goes, and no deeper.
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                scan::<f32>(&json).ok_or(()),
                parse(&json).map_err(|_| ()),
                "{depth}"
            );
        }
        assert_eq!(scan::<i8>("[1, 300]"), None);
        assert_eq!(scan::<i64>("[1.5]"), None);
        assert_eq!(scan::<u8>("[[0, 255]]").unwrap().data, vec![0, 255]);
        // Parsed straight to f32, correctly rounded, by the short path and the general one.
        for token in [
            "0.1",
            "0.123",
            "-12.5",
            "1234567",
            "0.000001",
            "3.4028235e38",
            "0.12345678",
        ] {
            let want: f32 = token.parse().unwrap();
            assert_eq!(scan::<f32>(token).unwrap().data, vec![want], "{token}");
        }
        for token in ["0.1", "0.123", "-12.5", "0.12345678", "1e-7"] {
            let want: f64 = token.parse().unwrap();
            assert_eq!(scan::<f64>(token).unwrap().data, vec![want], "{token}");
        }
        for token in ["-7", "300", "0", "-0", "12.5"] {
            let want: Option<i16> = token.parse().ok();
            assert_eq!(scan::<i16>(token).map(|a| a.data[0]), want, "{token}");
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
}
