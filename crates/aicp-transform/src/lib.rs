//! What happens to a request before and after the model, as its model.toml declares: a picture
//! or a text made the model's input tensors ([`image`], [`text`]), and hidden states pooled
//! into embeddings ([`pool`]). [`Transforms::load`] checks the declaration against the model
//! once, when it loads; a declaration that cannot serve the model fails the load, with the
//! reason.

pub mod image;
pub mod pool;
pub mod text;

use std::path::Path;

use aicp_core::{ModelMetadata, ModelSignature, Pooling, PostprocessKind};

pub use crate::image::{ImageTransform, Picture, Sample};
pub use crate::text::{Encoded, TextTransform, Token};

/// A model's preprocessing and postprocessing, ready to run.
#[derive(Debug, Default)]
pub struct Transforms {
    /// Pictures in: declared, or MNIST's for a model of one 28 x 28 input (what the picture
    /// routes have always done).
    pub image: Option<ImageTransform>,
    /// Texts in.
    pub text: Option<TextTransform>,
    pub post: Post,
}

/// What the ML API makes of the outputs, resolved against the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Post {
    pub kind: PostprocessKind,
    /// The output it reads, by position.
    pub output: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

impl Transforms {
    /// Readies what `metadata` declares for a model of `signature`, reading files from
    /// `dir`, model.toml's directory.
    pub fn load(
        metadata: &ModelMetadata,
        signature: &ModelSignature,
        dir: Option<&Path>,
    ) -> Result<Self, String> {
        let preprocess = metadata.preprocess.clone().unwrap_or_default();
        if preprocess.image.is_some() && preprocess.text.is_some() {
            return Err("[preprocess] declares both image and text; a model takes one".into());
        }
        let image = match &preprocess.image {
            Some(spec) => Some(
                ImageTransform::new(spec, signature)
                    .map_err(|e| format!("[preprocess.image]: {e}"))?,
            ),
            None if preprocess.text.is_none() => ImageTransform::mnist_default(signature),
            None => None,
        };
        let text = match (&preprocess.text, dir) {
            (Some(spec), Some(dir)) => Some(
                TextTransform::load(spec, signature, dir)
                    .map_err(|e| format!("[preprocess.text]: {e}"))?,
            ),
            _ => None,
        };
        let post = Post::resolve(metadata, signature, text.is_some())?;
        Ok(Self { image, text, post })
    }
}

impl Post {
    fn resolve(
        metadata: &ModelMetadata,
        signature: &ModelSignature,
        text: bool,
    ) -> Result<Self, String> {
        let declared = metadata.postprocess.clone().unwrap_or_default();
        let output = match &declared.output {
            None => 0,
            Some(name) => signature
                .outputs
                .iter()
                .position(|o| &o.name == name)
                .ok_or_else(|| {
                    let names: Vec<_> = signature.outputs.iter().map(|o| &o.name).collect();
                    format!("[postprocess] output = {name:?}: the model has no such output; its outputs: {names:?}")
                })?,
        };
        // A text model whose output has a token dimension makes embeddings unless told.
        let tokens = signature
            .outputs
            .get(output)
            .and_then(|o| o.shape.as_ref())
            .is_some_and(|s| s.len() == 3);
        let kind = match metadata.postprocess {
            Some(_) => declared.kind,
            None if text && tokens => PostprocessKind::Embedding,
            None => PostprocessKind::Classification,
        };
        Ok(Self {
            kind,
            output,
            pooling: declared.pooling.unwrap_or_default(),
            normalize: declared.normalize.unwrap_or(true),
        })
    }
}
