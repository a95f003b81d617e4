//! Texts to a text model's inputs, as model.toml's `[preprocess.text]` says: Hugging Face's
//! tokenizer (a `tokenizer.json` beside the model, read with the `tokenizers` crate), its
//! maximum length, truncation and padding, and the ids, attention mask and token types laid
//! into the inputs of those names that the model has, in each input's integer type.

use std::path::Path;

use aicp_core::{DataType, ModelSignature, Padding, Tensor, TensorData, TextPreprocess};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

/// The most bytes a tokenizer.json may have (multilingual ones reach about 20 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;
/// The maximum length when model.toml and the model say none.
const DEFAULT_MAX_LENGTH: usize = 512;

/// What a model input takes from an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ids,
    Mask,
    TypeIds,
}

impl Role {
    fn of(name: &str) -> Option<Self> {
        match name {
            "input_ids" => Some(Self::Ids),
            "attention_mask" => Some(Self::Mask),
            "token_type_ids" => Some(Self::TypeIds),
            _ => None,
        }
    }
}

/// A tokenizer ready for one model's inputs.
pub struct TextTransform {
    tokenizer: Tokenizer,
    max_length: usize,
    truncation: bool,
    padding: Padding,
    /// `longest` rounds up to a multiple of this (1: not at all).
    multiple: usize,
    pad_id: u32,
    /// The model's inputs, in its order: name, what each takes, its integer type.
    inputs: Vec<(String, Role, DataType)>,
}

impl std::fmt::Debug for TextTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTransform")
            .field("max_length", &self.max_length)
            .field("truncation", &self.truncation)
            .field("padding", &self.padding)
            .finish_non_exhaustive()
    }
}

/// Texts made ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// One tensor per model input, by name, `[texts, length]`.
    pub inputs: Vec<(String, Tensor)>,
    /// The attention mask, `texts x length`: 1 for a text's tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Tokens per text, padding included.
    pub length: usize,
}

/// One token of a text, as TEI's `/tokenize` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub text: String,
    pub special: bool,
    /// Its bytes in the text, `None` for a special token.
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

impl TextTransform {
    /// Reads `spec.tokenizer` from `dir` and checks the model's inputs: each must be one a
    /// tokenizer fills, `input_ids` among them, of a 32- or 64-bit integer type.
    pub fn load(
        spec: &TextPreprocess,
        signature: &ModelSignature,
        dir: &Path,
    ) -> Result<Self, String> {
        let name = spec.tokenizer.as_deref().unwrap_or("tokenizer.json");
        let path = aicp_core::metadata::file_inside(dir, name)?;
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("tokenizer {name:?}: {e}"))?
            .len();
        if size > MAX_TOKENIZER_BYTES {
            return Err(format!(
                "tokenizer {name:?} has {size} bytes, more than the {MAX_TOKENIZER_BYTES} a \
                 tokenizer may"
            ));
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("tokenizer {name:?}: {e}"))?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| format!("tokenizer {name:?} is not a Hugging Face tokenizer.json: {e}"))?;
        let mut inputs = Vec::new();
        let mut model_length = None;
        for input in &signature.inputs {
            let role = Role::of(&input.name).ok_or_else(|| {
                format!(
                    "input {:?} is not one a tokenizer fills: [preprocess.text] fills \
                     input_ids, attention_mask and token_type_ids",
                    input.name
                )
            })?;
            if !matches!(input.datatype, DataType::I64 | DataType::I32) {
                return Err(format!(
                    "input {:?} takes {}; a tokenizer fills INT64 or INT32",
                    input.name, input.datatype
                ));
            }
            match input.shape.as_deref() {
                None | Some([_, _]) => {}
                Some(_) => {
                    return Err(format!(
                        "input {:?} has shape {:?}; a tokenizer fills [batch, sequence]",
                        input.name,
                        input.display_shape()
                    ));
                }
            }
            model_length = model_length.or(input.shape.as_ref().and_then(|s| s[1]));
            inputs.push((input.name.clone(), role, input.datatype));
        }
        if !inputs.iter().any(|(_, role, _)| *role == Role::Ids) {
            return Err("the model has no input_ids input for a tokenizer to fill".into());
        }
        let max_length = spec
            .max_length
            .or(model_length)
            .unwrap_or(DEFAULT_MAX_LENGTH);
        if max_length == 0 {
            return Err("max_length must be at least 1".into());
        }
        if let Some(fixed) = model_length.filter(|&l| l < max_length) {
            return Err(format!(
                "max_length = {max_length}, but the model takes sequences of {fixed}"
            ));
        }
        // A model of fixed sequence length takes every text padded to it.
        let padding = match model_length {
            Some(_) => Padding::MaxLength,
            None => spec.padding.unwrap_or_default(),
        };
        let truncation = spec.truncation.unwrap_or(true);
        let multiple = spec.pad_to_multiple_of.unwrap_or(1);
        if multiple == 0 {
            return Err("pad_to_multiple_of must be at least 1".into());
        }
        tokenizer
            .with_truncation(Some(TruncationParams {
                // One token past the limit when truncation is off, so that a text too long
                // can be told and refused without tokenising it whole.
                max_length: if truncation {
                    max_length
                } else {
                    max_length + 1
                },
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("tokenizer {name:?}: {e}"))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .unwrap_or(0);
        Ok(Self {
            tokenizer,
            max_length,
            truncation,
            padding,
            multiple,
            pad_id,
            inputs,
        })
    }

    /// Each text's encoding; with `offsets`, where each token is in the text. The model's
    /// inputs do not need them, and leaving them out saves about a fifth of the tokenizer's
    /// time (measured with `perf` under `aicp bench --protocol embed`).
    fn encode_each(&self, texts: &[&str], offsets: bool) -> Result<Vec<Encoding>, String> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let encoding = if offsets {
                    self.tokenizer.encode(*text, true)
                } else {
                    self.tokenizer.encode_fast(*text, true)
                };
                let encoding =
                    encoding.map_err(|e| format!("text {i}: the tokenizer failed: {e}"))?;
                if !self.truncation && encoding.len() > self.max_length {
                    return Err(format!(
                        "text {i} is longer than the model's {} tokens, and truncation is off",
                        self.max_length
                    ));
                }
                Ok(encoding)
            })
            .collect()
    }

    /// Tokenises `texts` and pads them to one length: the inputs the model takes.
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded, String> {
        let encodings = self.encode_each(texts, false)?;
        let length = match self.padding {
            Padding::MaxLength => self.max_length,
            Padding::Longest => {
                let longest = encodings.iter().map(Encoding::len).max().unwrap_or(0);
                longest
                    .next_multiple_of(self.multiple)
                    .min(self.max_length.max(longest))
            }
        };
        let padded = |values: fn(&Encoding) -> &[u32], pad: u32| {
            let mut out = Vec::with_capacity(texts.len() * length);
            for encoding in &encodings {
                let values = values(encoding);
                out.extend_from_slice(values);
                out.resize(out.len() + length - values.len(), pad);
            }
            out
        };
        let mask = padded(Encoding::get_attention_mask, 0);
        let shape = vec![texts.len(), length];
        let inputs = self
            .inputs
            .iter()
            .map(|(name, role, datatype)| {
                let values = match role {
                    Role::Ids => padded(Encoding::get_ids, self.pad_id),
                    Role::Mask => mask.clone(),
                    Role::TypeIds => padded(Encoding::get_type_ids, 0),
                };
                let data = match datatype {
                    DataType::I32 => {
                        TensorData::I32(values.into_iter().map(|v| v as i32).collect())
                    }
                    _ => TensorData::I64(values.into_iter().map(i64::from).collect()),
                };
                let tensor = Tensor {
                    shape: shape.clone(),
                    data,
                };
                (name.clone(), tensor)
            })
            .collect();
        Ok(Encoded {
            inputs,
            mask,
            length,
        })
    }

    /// Each text's tokens, special ones included, as the model would get them (before
    /// padding).
    pub fn tokens(&self, texts: &[&str]) -> Result<Vec<Vec<Token>>, String> {
        let encodings = self.encode_each(texts, true)?;
        Ok(encodings
            .iter()
            .map(|encoding| {
                let special = encoding.get_special_tokens_mask();
                encoding
                    .get_ids()
                    .iter()
                    .zip(encoding.get_tokens())
                    .zip(encoding.get_offsets())
                    .zip(special)
                    .map(|(((&id, text), &(start, stop)), &special)| Token {
                        id,
                        text: text.clone(),
                        special: special == 1,
                        start: (special == 0).then_some(start),
                        stop: (special == 0).then_some(stop),
                    })
                    .collect()
            })
            .collect())
    }

    /// The most tokens a text becomes.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

#[cfg(test)]
mod tests {
    use aicp_core::TensorSpec;

    use super::*;

    /// A WordPiece tokenizer.json of a few words, BERT's way: lowercase, split on whitespace and
    /// punctuation, [CLS] ... [SEP].
    const TOKENIZER: &str = include_str!("testdata/wordpiece.json");

    fn signature(inputs: &[(&str, DataType)]) -> ModelSignature {
        ModelSignature {
            inputs: inputs
                .iter()
                .map(|(name, datatype)| TensorSpec {
                    name: (*name).into(),
                    datatype: *datatype,
                    shape: Some(vec![None, None]),
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    fn load(spec: TextPreprocess, signature: &ModelSignature) -> Result<TextTransform, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), TOKENIZER).unwrap();
        TextTransform::load(&spec, signature, dir.path())
    }

    #[test]
    fn texts_fill_the_inputs_the_model_has_padded_to_the_longest() {
        let signature = signature(&[
            ("input_ids", DataType::I64),
            ("attention_mask", DataType::I64),
            ("token_type_ids", DataType::I32),
        ]);
        let text = load(TextPreprocess::default(), &signature).unwrap();
        let encoded = text.encode(&["The cats sat.", "on"]).unwrap();
        assert_eq!(encoded.length, 7);
        let [(ids_name, ids), (mask_name, mask), (_, types)] = &encoded.inputs[..] else {
            panic!("{:?}", encoded.inputs);
        };
        assert_eq!(
            (ids_name.as_str(), mask_name.as_str()),
            ("input_ids", "attention_mask")
        );
        assert_eq!(ids.shape, [2, 7]);
        assert_eq!(
            ids.data,
            TensorData::I64(vec![2, 4, 5, 9, 6, 10, 3, 2, 7, 3, 0, 0, 0, 0])
        );
        assert_eq!(
            mask.data,
            TensorData::I64(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
        );
        assert_eq!(types.data, TensorData::I32(vec![0; 14]));
        let tokens = text.tokens(&["cats"]).unwrap();
        let words: Vec<_> = tokens[0].iter().map(|t| t.text.as_str()).collect();
        assert_eq!(words, ["[CLS]", "cat", "##s", "[SEP]"]);
        assert_eq!((tokens[0][2].start, tokens[0][2].stop), (Some(3), Some(4)));
        assert_eq!(tokens[0][0].start, None);
    }

    #[test]
    fn long_texts_are_cut_or_refused_and_max_length_pads() {
        let signature = signature(&[("input_ids", DataType::I64)]);
        let spec = TextPreprocess {
            max_length: Some(4),
            ..Default::default()
        };
        let text = load(spec.clone(), &signature).unwrap();
        let encoded = text.encode(&["the cat sat on the mat"]).unwrap();
        assert_eq!(encoded.inputs[0].1.data, TensorData::I64(vec![2, 4, 5, 3]));
        let strict = TextPreprocess {
            truncation: Some(false),
            ..spec.clone()
        };
        let err = load(strict, &signature)
            .unwrap()
            .encode(&["the", "the cat sat on the mat"])
            .unwrap_err();
        assert!(
            err.contains("text 1 is longer than the model's 4 tokens"),
            "{err}"
        );
        let padded = TextPreprocess {
            padding: Some(Padding::MaxLength),
            ..spec
        };
        let encoded = load(padded, &signature).unwrap().encode(&["cat"]).unwrap();
        assert_eq!(encoded.inputs[0].1.data, TensorData::I64(vec![2, 5, 3, 0]));
        let multiple = TextPreprocess {
            max_length: Some(7),
            pad_to_multiple_of: Some(4),
            ..Default::default()
        };
        let text = load(multiple, &signature).unwrap();
        assert_eq!(
            text.encode(&["cat"]).unwrap().length,
            4,
            "3 tokens, padded to 4"
        );
        assert_eq!(
            text.encode(&["the cat sat"]).unwrap().length,
            7,
            "5, to 8 but max 7"
        );
    }

    #[test]
    fn models_and_files_a_tokenizer_cannot_serve_are_refused_with_the_reason() {
        let refuse = |spec: TextPreprocess, signature: ModelSignature, says: &str| {
            let err = load(spec, &signature).unwrap_err();
            assert!(err.contains(says), "{err:?} should say {says:?}");
        };
        let ids = signature(&[("input_ids", DataType::I64)]);
        refuse(
            TextPreprocess::default(),
            signature(&[("input_ids", DataType::F32)]),
            "takes FP32",
        );
        refuse(
            TextPreprocess::default(),
            signature(&[
                ("input_ids", DataType::I64),
                ("pixel_values", DataType::F32),
            ]),
            "\"pixel_values\" is not one a tokenizer fills",
        );
        refuse(
            TextPreprocess::default(),
            signature(&[("attention_mask", DataType::I64)]),
            "no input_ids",
        );
        let missing = TextPreprocess {
            tokenizer: Some("vocab.json".into()),
            ..Default::default()
        };
        refuse(missing, ids.clone(), "vocab.json");
        let outside = TextPreprocess {
            tokenizer: Some("../tokenizer.json".into()),
            ..Default::default()
        };
        refuse(outside, ids.clone(), "inside the model's directory");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{\"version\": ").unwrap();
        let err = TextTransform::load(&TextPreprocess::default(), &ids, dir.path()).unwrap_err();
        assert!(err.contains("not a Hugging Face tokenizer.json"), "{err}");
    }
}
