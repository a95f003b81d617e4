//! `POST /api/v1/ml/classify/image`: a picture in (PNG, JPEG, GIF, BMP or WebP, as the raw body
//! with its media type or as the multipart field `image`), MNIST-style preprocessing
//! ([`aicp_image`]), the model's top classes out. With `?debug=true` the answer also holds the
//! 28x28 picture the model saw.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aicp_core::{Error, ErrorKind, TensorData};
use aicp_image::{DecodeLimits, Digit, ImageError, MEDIA_TYPES};
use aicp_runtime::{InferInput, Runtime, ServedModel};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::ml_api;

type ApiResult<T> = Result<T, ApiError>;

/// The query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    #[serde(default = "ml_api::default_model")]
    model_name: String,
    #[serde(default = "ml_api::default_top_k")]
    top_k: usize,
    /// Also answer with the 28x28 picture the model saw.
    #[serde(default)]
    debug: bool,
    timeout_ms: Option<u64>,
}

/// `POST /api/v1/ml/classify/image`
pub async fn classify_image(
    State(runtime): State<Arc<Runtime>>,
    query: Result<Query<ImageQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let Query(query) =
        query.map_err(|e| Error::invalid(format!("query string: {}", e.body_text())))?;
    if query.top_k == 0 {
        return Err(Error::invalid("top_k must be at least 1").into());
    }
    let deadline = ml_api::deadline(started, query.timeout_ms)?;
    let model = runtime.model(&query.model_name, None)?;
    let bytes = picture_bytes(request).await?;
    // A decode may hold up to DecodeLimits' 256 MiB: one per core at a time keeps the total
    // bounded however many pictures arrive together.
    let _decoding = decoders()
        .acquire()
        .await
        .map_err(|e| Error::internal(format!("picture decoding closed: {e}")))?;
    let digit = tokio::task::spawn_blocking(move || {
        let image = aicp_image::decode(&bytes, DecodeLimits::default())?;
        let size = (image.width(), image.height());
        aicp_image::preprocess(&image).map(|digit| (digit, size))
    })
    .await
    .map_err(|e| Error::internal(format!("the picture's preprocessing stopped: {e}")))?
    .map_err(image_error);
    let (digit, (width, height)) =
        digit.inspect_err(|e| model.stats.record_failure(started.elapsed(), e.0.kind))?;
    let input = digit_input(&model, &digit)
        .inspect_err(|e| model.stats.record_failure(started.elapsed(), e.kind))?;
    let response = runtime.run(model, vec![input], deadline).await?;
    let mut predictions = ml_api::predictions(&response.model, &response.outputs, query.top_k)?;
    let mut body = json!({
        "model_name": response.model.name,
        "model_version": response.model.version,
        "predictions": predictions.pop().unwrap_or_default(),
        "picture": {"width": width, "height": height, "inverted": digit.inverted},
    });
    if query.debug {
        let rows: Vec<&[u8]> = digit.pixels.chunks(aicp_image::SIDE as usize).collect();
        body["preprocessed"] = json!(rows);
    }
    body["inference_time_ms"] = json!(started.elapsed().as_secs_f64() * 1e3);
    Ok(Json(body))
}

/// Permits to decode a picture: one per core.
fn decoders() -> &'static Semaphore {
    static DECODERS: OnceLock<Semaphore> = OnceLock::new();
    DECODERS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// The picture's bytes: the body itself for an image media type, the field `image` of a
/// multipart form; anything else is refused with 415.
async fn picture_bytes(request: Request) -> ApiResult<Bytes> {
    let media_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if aicp_image::format_for_media_type(&media_type).is_some() {
        let bytes = Bytes::from_request(request, &()).await;
        return Ok(crate::error::body(bytes)?);
    }
    if media_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| Error::new(ErrorKind::MalformedBody, e.body_text()))?;
        while let Some(field) = form.next_field().await.map_err(multipart_error)? {
            if field.name() == Some("image") {
                return field.bytes().await.map_err(multipart_error);
            }
        }
        return Err(Error::new(
            ErrorKind::MalformedBody,
            "the multipart form has no field named \"image\"",
        )
        .into());
    }
    let got = if media_type.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("Content-Type {media_type:?}")
    };
    Err(Error::new(
        ErrorKind::UnsupportedMediaType,
        format!(
            "expected a picture as the body ({}) or a multipart/form-data field \"image\"; got {got}",
            MEDIA_TYPES.join(", ")
        ),
    )
    .into())
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let kind = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ErrorKind::BodyTooLarge
    } else {
        ErrorKind::MalformedBody
    };
    Error::new(kind, format!("multipart form: {}", e.body_text())).into()
}

fn image_error(e: ImageError) -> ApiError {
    let kind = match &e {
        ImageError::Invalid(_) => ErrorKind::MalformedBody,
        ImageError::Blank(_) => ErrorKind::InvalidArgument,
        ImageError::Unsupported(_) => ErrorKind::UnsupportedMediaType,
        ImageError::TooLarge(_) => ErrorKind::BodyTooLarge,
    };
    Error::new(kind, e.to_string()).into()
}

/// The digit as `model`'s one input: 8-bit pixels when the model says how they map onto its
/// input range (the engine normalises them, on the GPU if it runs there), else float32 in
/// [0, 1].
pub fn digit_input(model: &ServedModel, digit: &Digit) -> Result<InferInput, Error> {
    let spec = &model.signature.inputs[0];
    let side = aicp_image::SIDE as usize;
    if model.signature.inputs.len() != 1 || spec.sample_elements() != Some(side * side) {
        return Err(Error::invalid(format!(
            "model {:?} takes {:?}, not one {side}x{side} picture per sample",
            model.name,
            spec.display_shape()
        )));
    }
    let data = match model.pixels {
        Some(_) => TensorData::U8(digit.pixels.clone()),
        None => TensorData::F32(digit.pixels.iter().map(|&p| f32::from(p) / 255.0).collect()),
    };
    Ok(InferInput {
        name: None,
        shape: vec![1, side * side],
        data,
    })
}
