//! The ML API's text routes, in text-embeddings-inference's shapes: `POST /api/v1/ml/embed`
//! (pooled, normalised vectors), `POST /api/v1/ml/classify/text` (labels and scores) and
//! `POST /api/v1/ml/tokenize` (the tokens a model sees). Texts are tokenised in the server
//! with the model's own `tokenizer.json` ([`aicp_runtime::preprocessing`]).

use std::sync::Arc;
use std::time::Instant;

use aicp_core::{Error, PostprocessKind, Result};
use aicp_runtime::{Runtime, preprocessing};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiErrorBody, body, parse_json};
use crate::ml_api;

type ApiResult<T> = std::result::Result<T, ApiError>;

/// One text, or several.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The texts.
    #[schema(value_type = Vec<String>)]
    inputs: Texts,
    /// Scale each vector to unit length; the model's `[postprocess] normalize` by default.
    normalize: Option<bool>,
    /// The model; the only text-embedding model served when left out.
    model_name: Option<String>,
    /// Accepted for text-embeddings-inference's clients; texts are truncated as the model's
    /// `[preprocess.text]` says.
    #[serde(default, rename = "truncate")]
    _truncate: Option<bool>,
    /// How long the client waits, in milliseconds; past it, 504.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

/// Embed texts: tokenised with the model's tokenizer.json, run, pooled (mean over the
/// attention mask, or the first token) and normalised, as the model's `[postprocess]` says. The
/// answer is one vector per text, as text-embeddings-inference's `/embed` gives it.
#[utoipa::path(post, path = "/api/v1/ml/embed", tag = "ML API",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One vector per text", body = Vec<Vec<f32>>),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, a text too long, or a model that takes no text", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
    ))]
pub async fn embed(
    State(runtime): State<Arc<Runtime>>,
    bytes: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<Vec<f32>>>> {
    let started = Instant::now();
    let request: EmbedRequest = parse_json(&body(bytes)?)?;
    let deadline = ml_api::deadline(started, request.timeout_ms)?;
    let name = text_model(&runtime, request.model_name, PostprocessKind::Embedding)?;
    let model = runtime.model(&name, None)?;
    let post = model.transforms.post.clone();
    let texts = preprocessing::texts(&model, request.inputs.into_vec()).await?;
    let response = runtime.run(model, texts.inputs, deadline).await?;
    let hidden = response
        .outputs
        .get(post.output)
        .ok_or_else(|| Error::internal("the model gave no output to pool"))?;
    let normalize = request.normalize.unwrap_or(post.normalize);
    let vectors = aicp_transform::pool::embeddings(hidden, &texts.mask, post.pooling, normalize)
        .map_err(|e| Error::internal(format!("model {:?}: {e}", response.model.name)))?;
    Ok(Json(vectors))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyTextRequest {
    /// The texts.
    #[schema(value_type = Vec<String>)]
    inputs: Texts,
    /// The model; the only text-classification model served when left out.
    model_name: Option<String>,
    /// How many classes per text, best first; every class by default.
    #[schema(minimum = 1)]
    top_k: Option<usize>,
    /// The model's own scores (logits), not probabilities.
    #[serde(default)]
    raw_scores: bool,
    /// How long the client waits, in milliseconds; past it, 504.
    #[schema(minimum = 1)]
    timeout_ms: Option<u64>,
}

/// A class and its score, as text-embeddings-inference's `/predict` gives them.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelScore {
    /// The class's label from the model's metadata, else its index.
    label: String,
    /// Its probability, or with `raw_scores` the model's own score.
    score: f32,
}

/// Classify texts: one list of labels and scores per text, best first (one list alone for a
/// text sent alone), as text-embeddings-inference's `/predict` answers.
#[utoipa::path(post, path = "/api/v1/ml/classify/text", tag = "ML API",
    request_body = ClassifyTextRequest,
    responses(
        (status = 200, description = "Labels and scores, best first", body = Vec<Vec<LabelScore>>),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, a text too long, or a model that takes no text", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
    ))]
pub async fn classify_text(
    State(runtime): State<Arc<Runtime>>,
    bytes: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let started = Instant::now();
    let request: ClassifyTextRequest = parse_json(&body(bytes)?)?;
    if request.top_k == Some(0) {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = ml_api::deadline(started, request.timeout_ms)?;
    let name = text_model(
        &runtime,
        request.model_name,
        PostprocessKind::Classification,
    )?;
    let model = runtime.model(&name, None)?;
    ml_api::classifies(&model)?;
    let single = matches!(request.inputs, Texts::One(_));
    let texts = preprocessing::texts(&model, request.inputs.into_vec()).await?;
    let response = runtime.run(model, texts.inputs, deadline).await?;
    let model = &response.model;
    let output = &response.outputs[model.transforms.post.output];
    let classes = output.shape.last().copied().unwrap_or(1).max(1);
    let k = request.top_k.unwrap_or(classes);
    let lists: Vec<Vec<LabelScore>> = ml_api::scores(output)
        .chunks(classes)
        .map(|row| {
            let scores = if request.raw_scores {
                row.to_vec()
            } else {
                model.probabilities(row)
            };
            aicp_runtime::top_k(&scores, k)
                .into_iter()
                .map(|(class, score)| LabelScore {
                    label: model.label(class),
                    score,
                })
                .collect()
        })
        .collect();
    let answer = if single {
        serde_json::to_value(lists.into_iter().next().unwrap_or_default())
    } else {
        serde_json::to_value(lists)
    };
    Ok(Json(answer.map_err(|e| Error::internal(e.to_string()))?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The texts.
    #[schema(value_type = Vec<String>)]
    inputs: Texts,
    /// The model whose tokenizer to use; the only model with one when left out.
    model_name: Option<String>,
}

/// One token, as text-embeddings-inference's `/tokenize` gives it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Its id in the vocabulary: what the model gets.
    id: u32,
    /// The token.
    text: String,
    /// Whether the tokenizer added it (`[CLS]`, `[SEP]`, ...).
    special: bool,
    /// Its first byte in the text (not for special tokens).
    start: Option<usize>,
    /// The byte after its last.
    stop: Option<usize>,
}

/// The tokens each text becomes with the model's tokenizer, special tokens included and
/// truncated as the model's `[preprocess.text]` says: what the model sees.
#[utoipa::path(post, path = "/api/v1/ml/tokenize", tag = "ML API",
    request_body = TokenizeRequest,
    responses(
        (status = 200, description = "One list of tokens per text", body = Vec<Vec<TokenInfo>>),
        (status = 400, description = "Not JSON", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 422, description = "Wrong fields, or a model that takes no text", body = ApiErrorBody),
    ))]
pub async fn tokenize(
    State(runtime): State<Arc<Runtime>>,
    bytes: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Vec<Vec<TokenInfo>>>> {
    let request: TokenizeRequest = parse_json(&body(bytes)?)?;
    let name = text_model(&runtime, request.model_name, PostprocessKind::None)?;
    // Tokenising is not an inference: no ticket, nothing counted.
    let model = runtime.repository()?.get(&name, None)?;
    let tokens = preprocessing::tokens(&model, request.inputs.into_vec()).await?;
    let tokens = tokens
        .into_iter()
        .map(|text| {
            text.into_iter()
                .map(|t| TokenInfo {
                    id: t.id,
                    text: t.text,
                    special: t.special,
                    start: t.start,
                    stop: t.stop,
                })
                .collect()
        })
        .collect();
    Ok(Json(tokens))
}

/// The model named, or else the only ready model that takes text (and, for `kind` embedding
/// or classification, whose postprocessing is that).
fn text_model(runtime: &Runtime, name: Option<String>, kind: PostprocessKind) -> Result<String> {
    if let Some(name) = name {
        return Ok(name);
    }
    let repository = runtime.repository()?;
    let candidates: Vec<String> = repository
        .models()
        .filter_map(|entry| entry.default_version())
        .filter(|model| model.transforms.text.is_some())
        .filter(|model| kind == PostprocessKind::None || model.transforms.post.kind == kind)
        .map(|model| model.name.clone())
        .collect();
    match candidates.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::invalid(
            "no model served here takes text of this kind: give model_name (a model with \
             [preprocess.text] in its model.toml)",
        )),
        several => Err(Error::invalid(format!(
            "several models take text ({}): give model_name",
            several.join(", ")
        ))),
    }
}
