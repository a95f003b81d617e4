//! Reading a JSON number or (nested) array of numbers straight into a shape and flat float32
//! data, without building a JSON tree: `[[1, 2], [3, 4]]` becomes shape `[2, 2]` and data
//! `[1, 2, 3, 4]`. Ragged arrays, mixed nesting and values outside float32's finite range are
//! rejected with a message that says where.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// A rectangular array of numbers of any rank (0 for a bare number).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NestedArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl<'de> Deserialize<'de> for NestedArray {
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

#[derive(Default)]
struct Builder {
    shape: Vec<usize>,
    data: Vec<f32>,
    /// The depth at which numbers were found; every number must be at the same depth.
    leaf_depth: Option<usize>,
}

struct Level<'a> {
    builder: &'a mut Builder,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Level<'_> {
    fn number<E: de::Error>(self, value: f64) -> Result<(), E> {
        let b = self.builder;
        match b.leaf_depth {
            None => b.leaf_depth = Some(self.depth),
            Some(depth) if depth != self.depth => {
                return Err(E::custom(format!(
                    "array is not rectangular: numbers found at nesting depths {depth} and {}",
                    self.depth
                )));
            }
            Some(_) => {}
        }
        let value32 = value as f32;
        if !value32.is_finite() {
            return Err(E::custom(format!(
                "value {value} at index {} is not a finite float32",
                b.data.len()
            )));
        }
        b.data.push(value32);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64)
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
                builder: b,
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
                "array is not rectangular: it mixes numbers and lists at the same depth",
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
            err.contains("expected a number or an array of numbers"),
            "{err}"
        );
        let err = parse("[1, null]").unwrap_err();
        assert!(err.contains("expected a number"), "{err}");
        let err = parse("[1e39]").unwrap_err();
        assert!(err.contains("not a finite float32"), "{err}");
    }
}
