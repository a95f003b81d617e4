//! `model.toml`: what the ONNX file cannot say about a model (its description, task, class
//! labels, expected input range, whether it outputs logits or probabilities, how it was made).
//!
//! ```toml
//! description = "MNIST digit classifier"
//! task = "classification"
//! output = "logits"
//! backend = "auto"     # or "cuda", "onnxruntime", "tract"
//! labels = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
//!
//! [input]
//! range = [0.0, 1.0]
//! normalisation = "pixel / 255: 0 is background, 1 is ink"
//!
//! [batching]               # the scheduler; every key is optional
//! max_batch_size = 1024     # the most samples in one request and in one engine run
//! dynamic = true            # merge concurrent requests into one engine run
//! max_queue_delay_us = 0    # how long a request may wait for others to join its batch
//! preferred_batch_sizes = [] # run as soon as a batch reaches one of these sizes
//! idle_poll_us = 500        # how long an idle instance polls its queue before it sleeps
//! instances = 2             # engine copies on their own threads (default: one per two cores)
//! max_queue_size = 1024     # requests waiting; more are refused as overloaded
//!
//! plan_cache_size = 16      # tract's plans per input shape, for a model it cannot analyse
//!                           # with symbolic shapes (default: --plan-cache-size)
//!
//! [[warmup]]                # samples run through each instance at load, after Triton's
//! name = "one sentence"     # model_warmup; a sample that fails, fails the load
//! [warmup.inputs.input_ids]
//! datatype = "INT64"
//! shape = [1, 16]
//! data = "random"           # "zero" (the default) or "random"; or file = "ids.bin", raw
//!                           # little-endian values beside model.toml
//!
//! [preprocess.image]        # pictures in: /api/v1/ml/classify/image, V2's BYTES "image"
//! resize = 256               # shorter side to 256 (or [width, height]), then
//! crop = [224, 224]          # the centre 224 x 224; mean and std per channel, after
//! mean = [0.485, 0.456, 0.406] # scale (1/255 unless given): ImageNet's
//! std = [0.229, 0.224, 0.225]  # (see `ImagePreprocess` for every key)
//!
//! [preprocess.text]          # text in: /api/v1/ml/embed, /classify/text, V2's BYTES "text"
//! tokenizer = "tokenizer.json" # Hugging Face's, beside model.toml
//! max_length = 128
//! pad_to_multiple_of = 8     # optional: pad to a multiple, so requests share shapes
//!
//! [postprocess]              # what the ML API's text routes answer
//! kind = "embedding"         # or "classification" (softmax, top-k, labels), "none"
//! pooling = "mean"           # or "cls"; over the attention mask
//! normalize = true
//!
//! [[steps]]                 # a chain: models of the directory run one after another, each
//! model = "encoder"          # one's outputs feeding the next one's inputs by name; the chain's
//! [[steps]]                  # inputs are the first step's, its outputs the last step's
//! model = "head"
//! inputs = { features = "encoder.last_hidden_state" } # where a name does not match
//!
//! [training]          # free-form: how the model was trained
//! dataset = "mnist"
//!
//! [quantization]      # free-form: how `aicp quantize` made it from a float model
//! origin = "mnist version 1"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The contents of a `model.toml`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the model does, for example "classification".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Whether the first output holds logits or probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputKind>,
    /// Class names, indexed by class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    /// Which engine serves the model; `auto` (the default) picks the fastest available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// How many plans tract keeps, one per concrete input shape, for a model it cannot analyse
    /// with symbolic shapes; the server's `--plan-cache-size` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_cache_size: Option<usize>,
    /// Samples each instance runs at load, before it serves (Triton's `model_warmup`). Without
    /// any, a best-effort sample of zeros is run; a declared sample that fails fails the load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warmup: Vec<WarmupSample>,
    /// How a picture or a text becomes the model's input tensors, in the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Preprocess>,
    /// What the ML API makes of the model's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postprocess: Option<Postprocess>,
    /// For a chain: the models it runs, in order, each one's outputs feeding the next one's
    /// inputs by name. A chain's directory holds no versions of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ChainStep>,
    /// How the model was made, for people; only `test_accuracy` is read (the drawing page
    /// picks the most accurate model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<toml::Table>,
    /// How the model was quantised (`aicp quantize`), for people; its `test_accuracy`, the
    /// quantised model's own, takes the place of the training's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<toml::Table>,
}

/// One step of a chain: a model of the same directory, and where its inputs come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainStep {
    /// The model it runs.
    pub model: String,
    /// The version it runs; the model's highest ready version when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Where each of the model's inputs comes from, for those not fed by name: input name to
    /// `"<step model>.<output>"` (an earlier step's output) or to one of the chain's inputs.
    /// An input left out takes the previous step's output of its name, else the chain's input
    /// of its name; the first step's inputs are the chain's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub inputs: std::collections::BTreeMap<String, String>,
}

/// One warm-up sample: a value for every input of the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupSample {
    /// What the sample stands for, for the log and for errors.
    pub name: String,
    /// One per model input, by name.
    pub inputs: std::collections::BTreeMap<String, WarmupInput>,
}

/// One input of a warm-up sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupInput {
    /// The protocols' name of its type (`FP32`, `INT64`, `BYTES`, ...): the input's own.
    pub datatype: String,
    /// Its shape, batch first when the model batches.
    pub shape: Vec<usize>,
    /// `zero` (the default) or `random` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<WarmupData>,
    /// A file beside model.toml holding the values raw (little-endian; BYTES elements each a
    /// 4-byte length and its bytes), instead of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Made-up values of a warm-up input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarmupData {
    Zero,
    Random,
}

/// How raw data becomes a model's inputs: a picture, or a text. A model has one or the other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePreprocess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextPreprocess>,
}

/// How a picture becomes one sample of an image model's input, in this order: decode, colour,
/// resize, centre crop, `pixel * scale`, `(value - mean) / std` per channel, layout, the
/// input's datatype. With `preset = "mnist"` the picture is made MNIST-like instead (grey,
/// light ink on dark, cropped to the ink, 20 pixels in 28, centred by mass), as the bundled
/// digit models want, and only `input` may be given besides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<ImagePreset>,
    /// The input it feeds; the model's only input when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The channels and their order: `rgb` (the default), `bgr` or `gray`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorOrder>,
    /// `N`: the shorter side to N pixels, aspect kept; `[width, height]`: exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
    /// The resampling filter: `bilinear` (the default; antialiased when shrinking, as PIL and
    /// torchvision's), `nearest`, `bicubic` or `lanczos3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<ResizeFilter>,
    /// `[width, height]` cut from the centre, after the resize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<[u32; 2]>,
    /// Each 8-bit value is multiplied by this first; 1/255 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    /// Subtracted per channel (one value, or one per channel), after the scale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f32>,
    /// Divided by per channel, after the mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f32>,
    /// `NCHW` (the default) or `NHWC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// A named image preparation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagePreset {
    /// MNIST's digits: 28 x 28 grey, light ink on dark, cropped, scaled and centred by mass.
    Mnist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    #[default]
    Rgb,
    Bgr,
    Gray,
}

impl ColorOrder {
    pub fn channels(self) -> usize {
        match self {
            Self::Rgb | Self::Bgr => 3,
            Self::Gray => 1,
        }
    }
}

/// How a picture is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resize {
    /// Its shorter side to this many pixels, its aspect kept (torchvision's `Resize(n)`).
    ShorterSide(u32),
    /// Exactly `[width, height]`.
    Exact([u32; 2]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    Nearest,
    #[default]
    Bilinear,
    Bicubic,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Layout {
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// How a text becomes a text model's inputs: Hugging Face's tokenizer, whose ids, attention
/// mask and token types fill the inputs named `input_ids`, `attention_mask` and
/// `token_type_ids`, those the model has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextPreprocess {
    /// Hugging Face's `tokenizer.json`, beside model.toml (the default name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// The most tokens a text becomes, special tokens included; 512 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Whether a longer text is cut to `max_length` (the default) or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<bool>,
    /// `longest` (the default: a request's texts are padded to its longest) or `max_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Padding>,
    /// With `longest`: the length rounded up to a multiple of this (Hugging Face's
    /// `pad_to_multiple_of`), so that concurrent requests of texts of about the same length
    /// share a shape, and the batcher can run them together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to_multiple_of: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    #[default]
    Longest,
    MaxLength,
}

/// What the ML API makes of a model's outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postprocess {
    /// `classification` by default.
    #[serde(default)]
    pub kind: PostprocessKind,
    /// The output it reads; the first when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Embeddings: `mean` over the attention mask (the default) or `cls`, the first token's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// Embeddings: whether they are scaled to unit length (L2); true by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostprocessKind {
    /// Softmax when the output is logits, then the top classes with their labels.
    #[default]
    Classification,
    /// One vector per text: pooled hidden states.
    Embedding,
    /// The outputs as they are.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Cls,
}

/// What a model's first output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Logits,
    Probabilities,
}

/// The engine a model asks for: `auto` (the fastest available), or an engine by its name
/// (`cuda`, `onnxruntime`, `tract`: aicp-engine's registry), checked when the model loads.
/// A GPU engine asked for where there is none leaves the model to `auto`'s CPU choice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Auto,
    Engine(String),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Engine(name) => name,
        })
    }
}

impl Serialize for Backend {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::Auto => "auto",
            Self::Engine(name) => name,
        })
    }
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(match name.as_str() {
            "auto" => Self::Auto,
            _ => Self::Engine(name),
        })
    }
}

/// What the model expects as input values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Inclusive bounds on every input value, for example `[0.0, 1.0]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f32; 2]>,
    /// How raw data becomes input values, for people (for example "pixel / 255").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<String>,
}

/// How requests to the model are queued, batched and run (Triton's dynamic batcher knobs). Also
/// the shape of the server's batching flags. A key left out takes the server's flag, else the
/// default for the model's device: `aicp_runtime::policy` resolves them all, in one place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// The most samples one request may carry, and one engine run (Triton's
    /// `max_batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// Whether concurrent requests are merged into one engine run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
    /// How long the oldest waiting request may wait for others to join its batch, in
    /// microseconds; with 0, a batch holds what is already waiting, and never waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay_us: Option<u64>,
    /// Batch sizes that run at once, without waiting out the queue delay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_batch_sizes: Vec<usize>,
    /// How long an idle instance keeps polling its queue (yielding its core to any other thread
    /// that wants it) before it sleeps, in microseconds: a request arriving meanwhile starts
    /// without a thread wake-up; 0 sleeps at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_poll_us: Option<u64>,
    /// Copies of the model, each run by its own thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    /// Requests that may wait for an instance; more are refused as overloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<usize>,
}

/// A `model.toml` that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid model metadata in {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The file `name` names inside a model's directory `dir` (a warm-up sample, a tokenizer),
/// refusing any path that leads outside it: a root, `..`, or a link that points away.
pub fn file_inside(dir: &Path, name: &str) -> Result<std::path::PathBuf, String> {
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || name.is_empty() {
        return Err(format!(
            "file {name:?}: expected a path inside the model's directory, without .. or a root"
        ));
    }
    let unreadable = |e: std::io::Error| format!("file {name:?}: {e}");
    let dir = dir.canonicalize().map_err(unreadable)?;
    let path = dir.join(relative).canonicalize().map_err(unreadable)?;
    if !path.starts_with(&dir) {
        return Err(format!("file {name:?} leads outside the model's directory"));
    }
    Ok(path)
}

impl ModelMetadata {
    /// The model's accuracy on held-out data, when given as a number: `[quantization]
    /// test_accuracy` for a quantised model, else `[training] test_accuracy`.
    pub fn test_accuracy(&self) -> Option<f64> {
        let read = |table: &Option<toml::Table>| table.as_ref()?.get("test_accuracy")?.as_float();
        read(&self.quantization).or_else(|| read(&self.training))
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn read(path: &Path) -> Result<Self, MetadataError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| MetadataError::Invalid {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of a table, as dotted paths (`batching.max_batch_size`, `steps[].model`).
    fn key_paths(value: &toml::Value, at: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    key_paths(value, &path, out);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    key_paths(item, &format!("{at}[]"), out);
                }
            }
            _ => out.push(at.to_string()),
        }
    }

    /// docs/reference/model-toml.md shows every key: its example parses (so every key it shows
    /// exists), and every key of a model.toml with every field set is in the example. A new
    /// field fails to compile here until it is set below, then fails this test until the page
    /// shows it.
    #[test]
    fn the_reference_page_shows_every_key() {
        let package = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let page = std::fs::read_to_string(
            std::path::Path::new(&package).join("../../docs/reference/model-toml.md"),
        )
        .unwrap();
        let example = page
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("the page's example");
        let shown: ModelMetadata = toml::from_str(example).unwrap();
        let table = |pairs: &[(&str, toml::Value)]| -> Option<toml::Table> {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        let every = ModelMetadata {
            description: Some("d".into()),
            task: Some("t".into()),
            output: Some(OutputKind::Logits),
            labels: vec!["0".into()],
            input: Some(InputSpec {
                range: Some([0.0, 1.0]),
                normalisation: Some("n".into()),
            }),
            backend: Some(Backend::Auto),
            batching: Some(Batching {
                max_batch_size: Some(1),
                dynamic: Some(true),
                max_queue_delay_us: Some(0),
                preferred_batch_sizes: vec![1],
                idle_poll_us: Some(0),
                instances: Some(1),
                max_queue_size: Some(1),
            }),
            plan_cache_size: Some(1),
            warmup: vec![WarmupSample {
                name: "w".into(),
                inputs: [(
                    "input_ids".to_string(),
                    WarmupInput {
                        datatype: "INT64".into(),
                        shape: vec![1],
                        data: Some(WarmupData::Random),
                        file: Some("f".into()),
                    },
                )]
                .into(),
            }],
            preprocess: Some(Preprocess {
                image: Some(ImagePreprocess {
                    preset: Some(ImagePreset::Mnist),
                    input: Some("i".into()),
                    color: Some(ColorOrder::Rgb),
                    resize: Some(Resize::ShorterSide(1)),
                    filter: Some(ResizeFilter::Bilinear),
                    crop: Some([1, 1]),
                    scale: Some(1.0),
                    mean: vec![0.0],
                    std: vec![1.0],
                    layout: Some(Layout::Nchw),
                }),
                text: Some(TextPreprocess {
                    tokenizer: Some("t".into()),
                    max_length: Some(1),
                    truncation: Some(true),
                    padding: Some(Padding::Longest),
                    pad_to_multiple_of: Some(1),
                }),
            }),
            postprocess: Some(Postprocess {
                kind: PostprocessKind::Embedding,
                output: Some("o".into()),
                pooling: Some(Pooling::Mean),
                normalize: Some(true),
            }),
            steps: vec![ChainStep {
                model: "m".into(),
                version: Some(1),
                inputs: [("input_ids".to_string(), "input_ids".to_string())].into(),
            }],
            training: table(&[("epochs", 30.into()), ("test_accuracy", 0.9.into())]),
            quantization: table(&[("method", "static".into())]),
        };
        let paths = |metadata: &ModelMetadata| {
            let mut out = Vec::new();
            key_paths(&toml::Value::try_from(metadata).unwrap(), "", &mut out);
            out
        };
        let shown = paths(&shown);
        let missing: Vec<String> = paths(&every)
            .into_iter()
            .filter(|key| !shown.contains(key))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/reference/model-toml.md does not show {missing:?}"
        );
    }

    #[test]
    fn round_trips_a_full_file() {
        let mut training = toml::Table::new();
        training.insert("dataset".into(), "mnist".into());
        let metadata = ModelMetadata {
            description: Some("digits".into()),
            task: Some("classification".into()),
            output: Some(OutputKind::Logits),
            labels: (0..10).map(|d| d.to_string()).collect(),
            input: Some(InputSpec {
                range: Some([0.0, 1.0]),
                normalisation: Some("pixel / 255".into()),
            }),
            backend: Some(Backend::Engine("onnxruntime".into())),
            batching: Some(Batching {
                max_batch_size: Some(64),
                dynamic: Some(true),
                max_queue_delay_us: Some(100),
                preferred_batch_sizes: vec![16, 64],
                idle_poll_us: Some(0),
                instances: Some(2),
                max_queue_size: Some(256),
            }),
            plan_cache_size: Some(4),
            warmup: vec![WarmupSample {
                name: "one".into(),
                inputs: [(
                    "ids".to_string(),
                    WarmupInput {
                        datatype: "INT64".into(),
                        shape: vec![1, 8],
                        data: Some(WarmupData::Random),
                        file: None,
                    },
                )]
                .into(),
            }],
            preprocess: Some(Preprocess {
                image: Some(ImagePreprocess {
                    resize: Some(Resize::ShorterSide(256)),
                    crop: Some([224, 224]),
                    mean: vec![0.5],
                    layout: Some(Layout::Nhwc),
                    ..Default::default()
                }),
                text: Some(TextPreprocess {
                    max_length: Some(64),
                    padding: Some(Padding::MaxLength),
                    ..Default::default()
                }),
            }),
            postprocess: Some(Postprocess {
                kind: PostprocessKind::Embedding,
                pooling: Some(Pooling::Cls),
                ..Default::default()
            }),
            steps: vec![ChainStep {
                model: "head".into(),
                version: Some(2),
                inputs: [("features".to_string(), "encoder.pooled".to_string())].into(),
            }],
            training: Some(training.clone()),
            quantization: None,
        };
        assert_eq!(
            ModelMetadata::from_toml(&metadata.to_toml()).unwrap(),
            metadata
        );
    }

    #[test]
    fn preprocessing_reads_as_written() {
        let metadata = ModelMetadata::from_toml(
            "[preprocess.image]\nresize = [320, 240]\nlayout = \"NHWC\"\ncolor = \"bgr\"\n\
             [postprocess]\nkind = \"none\"\n",
        )
        .unwrap();
        let image = metadata.preprocess.unwrap().image.unwrap();
        assert_eq!(image.resize, Some(Resize::Exact([320, 240])));
        assert_eq!(image.layout, Some(Layout::Nhwc));
        assert_eq!(image.color, Some(ColorOrder::Bgr));
        assert_eq!(metadata.postprocess.unwrap().kind, PostprocessKind::None);
        let err = ModelMetadata::from_toml("[preprocess.image]\nlayout = \"CHW\"").unwrap_err();
        assert!(err.to_string().contains("NCHW"), "{err}");
    }

    #[test]
    fn a_chain_reads_as_written() {
        let metadata = ModelMetadata::from_toml(
            "[[steps]]\nmodel = \"encoder\"\n[[steps]]\nmodel = \"head\"\n\
             inputs = { features = \"encoder.last_hidden_state\" }\n",
        )
        .unwrap();
        assert_eq!(metadata.steps.len(), 2);
        assert_eq!(
            metadata.steps[1].inputs["features"],
            "encoder.last_hidden_state"
        );
        let err = ModelMetadata::from_toml("[[steps]]\nmodle = \"x\"").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
    }

    #[test]
    fn a_quantised_models_own_accuracy_comes_first() {
        let table = |accuracy: f64| {
            let mut t = toml::Table::new();
            t.insert("test_accuracy".into(), accuracy.into());
            Some(t)
        };
        let mut metadata = ModelMetadata {
            training: table(0.98),
            ..Default::default()
        };
        assert_eq!(metadata.test_accuracy(), Some(0.98));
        metadata.quantization = table(0.97);
        assert_eq!(metadata.test_accuracy(), Some(0.97));
    }

    #[test]
    fn an_empty_file_is_valid_and_unknown_keys_are_named() {
        assert_eq!(
            ModelMetadata::from_toml("").unwrap(),
            ModelMetadata::default()
        );
        let err = ModelMetadata::from_toml("lables = [\"a\"]").unwrap_err();
        assert!(err.to_string().contains("lables"), "{err}");
        let err = ModelMetadata::from_toml("output = \"scores\"").unwrap_err();
        assert!(err.to_string().contains("scores"), "{err}");
    }
}
