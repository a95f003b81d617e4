//! Pictures and texts made a model's input tensors, on the request's side of the queue: on
//! blocking threads, one per core at most (a picture's decode may hold up to 256 MiB), never on
//! the async threads or an engine's. Front ends call [`pictures`] and [`texts`]; a V2 request
//! whose one input is BYTES named `image` or `text`, for a model that declares that
//! preprocessing, is prepared here by [`Runtime::run`](crate::Runtime::run) itself.

use std::sync::{Arc, OnceLock};

use aicp_core::{Error, ErrorKind, Result, TensorData};
use aicp_image::{DecodeLimits, ImageError};
use aicp_transform::{Encoded, Picture, Sample};
use tokio::sync::Semaphore;

use crate::served::ServedModel;
use crate::service::InferInput;

/// The names of the BYTES inputs a model with preprocessing also takes over V2.
pub const IMAGE_INPUT: &str = "image";
pub const TEXT_INPUT: &str = "text";

/// Permits to prepare: one per core.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

/// Runs `work` on a blocking thread once a permit is free.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = permits()
        .acquire()
        .await
        .map_err(|e| Error::internal(format!("preprocessing closed: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("preprocessing stopped: {e}")))
}

/// Pictures prepared for `model`, and its one input of them all, batch first.
pub struct Pictures {
    pub pictures: Vec<Picture>,
    pub input: InferInput,
}

/// Decodes and prepares each picture for `model`'s image input: its declared
/// `[preprocess.image]`, or MNIST's for a model of one 28 x 28 input.
pub async fn pictures(model: &ServedModel, bytes: Vec<Vec<u8>>) -> Result<Pictures> {
    let transforms = model.transforms.clone();
    if transforms.image.is_none() {
        return Err(Error::invalid(format!(
            "model {:?} takes no pictures: its model.toml has no [preprocess.image] (see \
             docs/guide/pictures-and-text.md)",
            model.name
        )));
    }
    check_samples(model, bytes.len(), "picture")?;
    let pictures = blocking(move || {
        let Some(transform) = &transforms.image else {
            return Ok(Vec::new());
        };
        bytes
            .iter()
            .map(|bytes| transform.prepare(bytes, DecodeLimits::default()))
            .collect::<std::result::Result<Vec<_>, _>>()
    })
    .await?
    .map_err(image_error)?;
    let input = picture_input(model, &pictures)?;
    Ok(Pictures { pictures, input })
}

/// One input of every picture: digits as [`InferInput::picture`] makes them, tensors stacked.
fn picture_input(model: &ServedModel, pictures: &[Picture]) -> Result<InferInput> {
    let image = model.transforms.image.as_ref();
    let name = image.map(|t| t.input.clone());
    let mut shape = None;
    let mut parts = Vec::with_capacity(pictures.len());
    for (i, picture) in pictures.iter().enumerate() {
        let (sample_shape, data) = match &picture.sample {
            Sample::Digit(digit) => {
                let input = InferInput::picture(model, &digit.pixels)?;
                (input.shape[1..].to_vec(), input.data)
            }
            Sample::Tensor { shape, data } => (shape.clone(), data.clone()),
        };
        match &shape {
            None => shape = Some(sample_shape),
            Some(first) if *first != sample_shape => {
                return Err(Error::invalid(format!(
                    "picture {i} makes a sample of shape {sample_shape:?}, picture 0 one of \
                     {first:?}: pictures of different sizes cannot share a request to a \
                     model without a crop or resize to one size"
                )));
            }
            Some(_) => {}
        }
        parts.push(data);
    }
    let mut full = vec![pictures.len()];
    full.extend(shape.unwrap_or_default());
    let parts: Vec<&TensorData> = parts.iter().collect();
    Ok(InferInput {
        name,
        shape: full,
        data: TensorData::concat(&parts)?,
    })
}

/// Texts tokenised for `model`: its inputs of them, and the attention mask (`texts x length`)
/// that pooling reads.
pub struct Texts {
    pub inputs: Vec<InferInput>,
    pub mask: Vec<u32>,
}

/// Tokenises `texts` for `model`'s `[preprocess.text]`.
pub async fn texts(model: &ServedModel, texts: Vec<String>) -> Result<Texts> {
    let transforms = model.transforms.clone();
    if transforms.text.is_none() {
        return Err(no_text(model));
    }
    check_samples(model, texts.len(), "text")?;
    let Encoded { inputs, mask, .. } = blocking(move || {
        let text = transforms.text.as_ref().ok_or_else(String::new)?;
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        text.encode(&texts)
    })
    .await?
    .map_err(Error::invalid)?;
    let inputs = inputs
        .into_iter()
        .map(|(name, tensor)| InferInput {
            name: Some(name),
            shape: tensor.shape,
            data: tensor.data,
        })
        .collect();
    Ok(Texts { inputs, mask })
}

/// Each text's tokens (`/tokenize`).
pub async fn tokens(
    model: &ServedModel,
    texts: Vec<String>,
) -> Result<Vec<Vec<aicp_transform::Token>>> {
    let transforms = model.transforms.clone();
    if transforms.text.is_none() {
        return Err(no_text(model));
    }
    blocking(move || {
        let text = transforms.text.as_ref().ok_or_else(String::new)?;
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        text.tokens(&texts)
    })
    .await?
    .map_err(Error::invalid)
}

fn no_text(model: &ServedModel) -> Error {
    Error::invalid(format!(
        "model {:?} takes no text: its model.toml has no [preprocess.text] (see \
         docs/guide/pictures-and-text.md)",
        model.name
    ))
}

/// Refuses an empty request, and more samples than the model takes in one.
fn check_samples(model: &ServedModel, count: usize, what: &str) -> Result<()> {
    if count == 0 {
        return Err(Error::invalid(format!("no {what} was given")));
    }
    let most = model.max_batch_size().max(1);
    if count > most {
        let why = if model.max_batch_size() == 0 {
            "it does not batch: send one per request".to_string()
        } else {
            format!("its max_batch_size is {most}")
        };
        return Err(Error::invalid(format!(
            "{count} {what}s is more than model {:?} takes in one request: {why}",
            model.name
        )));
    }
    Ok(())
}

/// A V2 request's inputs, prepared when they are one BYTES input named `image` or `text` for
/// a model that takes no input of that name and declares that preprocessing; else as they
/// came.
pub(crate) async fn v2_inputs(
    model: &Arc<ServedModel>,
    inputs: Vec<InferInput>,
) -> Result<Vec<InferInput>> {
    let prepared = match inputs.as_slice() {
        [input] if matches!(input.data, TensorData::Bytes(_)) => {
            let name = input.name.as_deref().unwrap_or_default();
            let own = model.signature.inputs.iter().any(|s| s.name == name);
            let wanted = match name {
                IMAGE_INPUT => model.transforms.image.is_some(),
                TEXT_INPUT => model.transforms.text.is_some(),
                _ => false,
            };
            (wanted && !own).then(|| name.to_string())
        }
        _ => None,
    };
    let Some(name) = prepared else {
        return Ok(inputs);
    };
    let Some(InferInput {
        data: TensorData::Bytes(elements),
        shape,
        ..
    }) = inputs.into_iter().next()
    else {
        return Err(Error::internal("a BYTES input went missing"));
    };
    if shape.len() != 1 {
        return Err(Error::invalid(format!(
            "input {name:?}: expected shape [n], one {} per sample; got {shape:?}",
            if name == IMAGE_INPUT {
                "encoded picture"
            } else {
                "UTF-8 text"
            }
        )));
    }
    if name == IMAGE_INPUT {
        return Ok(vec![pictures(model, elements).await?.input]);
    }
    let strings = elements
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            String::from_utf8(bytes)
                .map_err(|_| Error::invalid(format!("input \"text\": element {i} is not UTF-8")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(texts(model, strings).await?.inputs)
}

/// A picture's refusal as a request error: broken 400, blank 422, a format not built 415, too
/// large 413.
pub fn image_error(e: ImageError) -> Error {
    let kind = match &e {
        ImageError::Invalid(_) => ErrorKind::MalformedBody,
        ImageError::Blank(_) => ErrorKind::InvalidArgument,
        ImageError::Unsupported(_) => ErrorKind::UnsupportedMediaType,
        ImageError::TooLarge(_) => ErrorKind::BodyTooLarge,
    };
    Error::new(kind, e.to_string())
}
