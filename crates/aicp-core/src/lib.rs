//! Types every aicp crate shares: errors with kinds, tensors and model signatures, model
//! metadata, the JSON array reader, and the IDX files MNIST-style datasets come in. Light on
//! purpose: no engine, no runtime, no framework.

pub mod data;
pub mod error;
pub mod idx;
pub mod metadata;
pub mod name;
pub mod nested;
pub mod tensor;

pub use data::TensorData;
pub use error::{Error, ErrorKind, Result, panic_message};
pub use metadata::{
    Backend, Batching, ChainStep, ColorOrder, ImagePreprocess, ImagePreset, InputSpec, Layout,
    ModelMetadata, OutputKind, Padding, Pooling, Postprocess, PostprocessKind, Preprocess, Resize,
    ResizeFilter, TextPreprocess, WarmupData, WarmupInput, WarmupSample,
};
pub use name::validate_model_name;
pub use nested::NestedArray;
pub use tensor::{
    DataType, Input, ModelSignature, PixelScale, Pixels, Tensor, TensorSpec, max_difference,
};
