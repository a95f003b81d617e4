//! `POST /api/v1/ml/classify/image`: a picture in (PNG, JPEG, GIF, BMP or WebP, as the raw body
//! with its media type or as the multipart field `image`), MNIST-style preprocessing
//! ([`aicp_image`]), the model's top classes out. With `?debug=true` the answer also holds the
//! 28x28 picture the model saw.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aicp_core::{Error, ErrorKind};
use aicp_image::{DecodeLimits, ImageError, MEDIA_TYPES};
use aicp_runtime::{InferInput, Runtime};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiErrorBody};
use crate::ml_api::{self, Prediction};

type ApiResult<T> = Result<T, ApiError>;

/// The query string.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// The model (default `mnist`).
    #[serde(default = "ml_api::default_model")]
    model_name: String,
    /// How many classes to return (default 5).
    #[serde(default = "ml_api::default_top_k")]
    top_k: usize,
    /// Also return the 28x28 picture the model saw.
    #[serde(default)]
    debug: bool,
    /// How long the client waits, in milliseconds; past it, 504.
    timeout_ms: Option<u64>,
}

/// The picture as it came.
#[derive(Debug, Serialize, ToSchema)]
pub struct PictureInfo {
    /// Its width in pixels.
    width: u32,
    /// Its height in pixels.
    height: u32,
    /// Whether it was dark ink on light paper, and was inverted (MNIST's digits are light on
    /// dark).
    inverted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyImageResponse {
    /// The model that answered.
    model_name: String,
    /// Its version.
    model_version: u64,
    /// The most likely classes, best first.
    predictions: Vec<Prediction>,
    /// The picture as it came.
    picture: PictureInfo,
    /// With `debug=true`: the 28 rows of 28 pixels the model saw, 0 (background) to 255 (ink);
    /// the model gets `low + pixel * (high - low) / 255` for its declared input range.
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocessed: Option<Vec<Vec<u8>>>,
    /// Time in the server, in milliseconds, decoding and preprocessing included.
    inference_time_ms: f64,
}

/// Classify a picture of a digit (PNG, JPEG, GIF, BMP or WebP): the raw body with its media
/// type, or the multipart/form-data field `image`. It is made MNIST-like first: grayscale, dark
/// ink on light paper inverted, cropped to the ink, its longer side scaled to 20 pixels and
/// centred by its centre of mass in 28x28.
#[utoipa::path(post, path = "/api/v1/ml/classify/image", tag = "ML API",
    params(ImageQuery),
    request_body(content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/gif"),
        (Vec<u8> = "image/bmp"), (Vec<u8> = "image/webp"), (Vec<u8> = "multipart/form-data"),
    ), description = "The picture"),
    responses(
        (status = 200, description = "The most likely classes", body = ClassifyImageResponse),
        (status = 400, description = "Not a picture, or a broken or truncated one", body = ApiErrorBody),
        (status = 404, description = "No such model", body = ApiErrorBody),
        (status = 413, description = "Body over --max-body-bytes, or more than 8192 pixels a side", body = ApiErrorBody),
        (status = 415, description = "Not one of the picture media types, nor a multipart form", body = ApiErrorBody),
        (status = 422, description = "A blank picture, a model that does not take 28x28 pictures, or a bad query", body = ApiErrorBody),
        (status = 429, description = "Overloaded", body = ApiErrorBody),
        (status = 503, description = "Not ready", body = ApiErrorBody),
        (status = 504, description = "timeout_ms passed", body = ApiErrorBody),
        (status = 500, description = "The engine failed", body = ApiErrorBody),
    ))]
pub async fn classify_image(
    State(runtime): State<Arc<Runtime>>,
    query: Result<Query<ImageQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult<Json<ClassifyImageResponse>> {
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
    let (digit, (width, height)) = digit?;
    let input = InferInput::picture(&model, &digit.pixels)?;
    ml_api::classifies(&model)?;
    let response = runtime.run(model, vec![input], deadline).await?;
    let mut predictions = ml_api::predictions(&response.model, &response.outputs, query.top_k);
    let preprocessed = query.debug.then(|| {
        let rows = digit.pixels.chunks(aicp_image::SIDE as usize);
        rows.map(<[u8]>::to_vec).collect()
    });
    Ok(Json(ClassifyImageResponse {
        model_name: response.model.name.clone(),
        model_version: response.model.version,
        predictions: predictions.pop().unwrap_or_default(),
        picture: PictureInfo {
            width,
            height,
            inverted: digit.inverted,
        },
        preprocessed,
        inference_time_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
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
