//! `POST /api/v1/ml/classify/image`: a picture in (PNG, JPEG, GIF, BMP or WebP, as the raw body
//! with its media type or as the multipart field `image`), the model's own preparation (its
//! model.toml's `[preprocess.image]`, MNIST's by default for a 28x28 model;
//! [`aicp_runtime::preprocessing`]), the model's top classes out. With `?debug=true` the
//! answer to an MNIST-style model also holds the 28x28 picture it saw.

use std::sync::Arc;
use std::time::Instant;

use aicp_core::{Error, ErrorKind};
use aicp_image::MEDIA_TYPES;
use aicp_runtime::Runtime;
use aicp_runtime::preprocessing::{self, Pictures};
use aicp_transform::Sample;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiErrorBody};
use crate::ml_api::{self, Prediction};

type ApiResult<T> = Result<T, ApiError>;

/// The query string.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// The model (default `mnist`); `model` is the same.
    #[serde(default = "ml_api::default_model", alias = "model")]
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
    /// For MNIST-style models: whether it was dark ink on light paper, and was inverted
    /// (MNIST's digits are light on dark).
    #[serde(skip_serializing_if = "Option::is_none")]
    inverted: Option<bool>,
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

/// Classify a picture (PNG, JPEG, GIF, BMP or WebP): the raw body with its media type, or the
/// multipart/form-data field `image`. It is prepared as the model's model.toml says in
/// `[preprocess.image]` (decode, colour, resize, centre crop, scale, mean and std, layout).
/// A model of one 28x28 input without one gets MNIST's preparation (`preset = "mnist"`):
/// grayscale, dark ink on light paper inverted, cropped to the ink, its longer side scaled to
/// 20 pixels and centred by its centre of mass in 28x28.
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
        (status = 422, description = "A blank picture, a model that takes no pictures, or a bad query", body = ApiErrorBody),
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
    let Pictures {
        mut pictures,
        input,
    } = preprocessing::pictures(&model, vec![bytes.to_vec()]).await?;
    ml_api::classifies(&model)?;
    let picture = pictures
        .pop()
        .ok_or_else(|| Error::internal("no picture"))?;
    let response = runtime.run(model, vec![input], deadline).await?;
    let mut predictions = ml_api::predictions(&response.model, &response.outputs, query.top_k);
    let digit = match &picture.sample {
        Sample::Digit(digit) => Some(digit),
        Sample::Tensor { .. } => None,
    };
    let preprocessed = digit.filter(|_| query.debug).map(|digit| {
        let rows = digit.pixels.chunks(aicp_image::SIDE as usize);
        rows.map(<[u8]>::to_vec).collect()
    });
    Ok(Json(ClassifyImageResponse {
        model_name: response.model.name.clone(),
        model_version: response.model.version,
        predictions: predictions.pop().unwrap_or_default(),
        picture: PictureInfo {
            width: picture.width,
            height: picture.height,
            inverted: digit.map(|d| d.inverted),
        },
        preprocessed,
        inference_time_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
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
