//! The ONNX Runtime engine, through the `ort` crate with its library loaded at run time. Faster
//! than tract on convolutions and INT8, and a little on large MLP batches; used when the
//! library is found (see [`find_library`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use aicp_core::{Error, Input, ModelSignature, Result, Tensor, TensorData};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, TensorRef, ValueType};

use crate::{Engine, EngineKind, LoadOptions, Runnable, onnx};

/// ONNX Runtime, loaded from a shared library. One per process: the library is global.
pub struct OnnxRuntimeEngine {
    environment: Environment,
    library: PathBuf,
}

impl std::fmt::Debug for OnnxRuntimeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntimeEngine")
            .field("library", &self.library)
            .finish()
    }
}

impl OnnxRuntimeEngine {
    /// Loads ONNX Runtime from `library` (for example
    /// `.../site-packages/onnxruntime/capi/libonnxruntime.so.1.23.2`). Fails with a message
    /// naming the file when it is missing or not a usable version (1.31 or newer).
    pub fn load(library: &Path) -> Result<Self> {
        if !library.is_file() {
            return Err(Error::invalid(format!(
                "ONNX Runtime library {} does not exist",
                library.display()
            )));
        }
        let environment = ort::init_from(library)
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot load ONNX Runtime from {} (version 1.31 or newer is needed): {e}",
                    library.display()
                ))
            })?
            .with_name("aicp")
            .build()
            .map_err(|e| Error::invalid(format!("ONNX Runtime from {}: {e}", library.display())))?;
        Ok(Self {
            environment,
            library: library.to_path_buf(),
        })
    }

    pub fn library(&self) -> &Path {
        &self.library
    }
}

/// A session and the names it is fed and read by.
struct OrtModel {
    session: Session,
    /// For a quantised model whose input is quantised to the pixels' own scale: the same
    /// model taking the pixels as its quantised input ([`onnx::with_pixel_input`]), a quarter
    /// of the bytes and no quantisation step.
    pixels: Option<Session>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl OnnxRuntimeEngine {
    fn session(&self, path: &Path, model: Option<&[u8]>) -> Result<Session> {
        let failed = |e: ort::Error| {
            Error::invalid(format!("onnxruntime cannot load {}: {e}", path.display()))
        };
        let mut builder = Session::builder(&self.environment)
            .map_err(failed)?
            // Python onnxruntime's default, so both give the same numbers.
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| failed(e.into()))?
            .with_intra_threads(1)
            .map_err(|e| failed(e.into()))?
            // Spinning threads steal the cores other requests need.
            .with_intra_op_spinning(false)
            .map_err(|e| failed(e.into()))?;
        match model {
            Some(bytes) => builder.commit_from_memory(bytes),
            None => builder.commit_from_file(path),
        }
        .map_err(failed)
    }
}

impl Engine for OnnxRuntimeEngine {
    fn kind(&self) -> EngineKind {
        KIND
    }

    fn load(
        &self,
        path: &Path,
        signature: &ModelSignature,
        options: &LoadOptions,
    ) -> Result<Box<dyn Runnable>> {
        let session = self.session(path, None)?;
        // Only a model that takes pixels as its quantised input gains from a session of its
        // own; any other is fed pixels normalised on the host, as by default.
        let pixel_model = options
            .pixels
            .map(|scale| onnx::with_pixel_input(path, scale))
            .transpose()?;
        let pixels = match pixel_model {
            Some(model) if model.quantized => {
                let bytes = prost::Message::encode_to_vec(&model.proto);
                Some(self.session(path, Some(&bytes))?)
            }
            _ => None,
        };
        Ok(Box::new(OrtModel {
            session,
            pixels,
            inputs: signature.inputs.iter().map(|s| s.name.clone()).collect(),
            outputs: signature.outputs.iter().map(|s| s.name.clone()).collect(),
        }))
    }
}

/// Runs `session` on `feed` and reads its outputs by name, in the model's order.
fn run_session<'v>(
    session: &mut Session,
    outputs: &[String],
    feed: Vec<(Cow<'_, str>, SessionInputValue<'v>)>,
) -> Result<Vec<Tensor>> {
    let failed = |e: ort::Error| Error::internal(format!("onnxruntime inference failed: {e}"));
    let values = session.run(feed).map_err(failed)?;
    outputs
        .iter()
        .map(|name| {
            let value = values
                .get(name)
                .ok_or_else(|| Error::internal(format!("onnxruntime gave no output {name:?}")))?;
            output_tensor(value)
                .map_err(|e| Error::new(e.kind, format!("output {name:?}: {}", e.message)))
        })
        .collect()
}

/// A request's tensor as ONNX Runtime's input, borrowing its buffer; BYTES are copied into the
/// strings ONNX Runtime holds, which must be UTF-8.
fn input_value(tensor: &Tensor) -> Result<SessionInputValue<'_>> {
    fn view<'a, T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        shape: &[usize],
        data: &'a [T],
    ) -> ort::Result<SessionInputValue<'a>> {
        Ok(TensorRef::from_array_view((shape.to_vec(), data))?.into())
    }
    let shape = &tensor.shape;
    let value = match &tensor.data {
        TensorData::Bool(v) => view(shape, v),
        TensorData::U8(v) => view(shape, v),
        TensorData::U16(v) => view(shape, v),
        TensorData::U32(v) => view(shape, v),
        TensorData::U64(v) => view(shape, v),
        TensorData::I8(v) => view(shape, v),
        TensorData::I16(v) => view(shape, v),
        TensorData::I32(v) => view(shape, v),
        TensorData::I64(v) => view(shape, v),
        TensorData::F16(v) => view(shape, v),
        TensorData::BF16(v) => view(shape, v),
        TensorData::F32(v) => view(shape, v),
        TensorData::F64(v) => view(shape, v),
        TensorData::Bytes(v) => {
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, bytes)| {
                    String::from_utf8(bytes.clone()).map_err(|_| {
                        Error::invalid(format!(
                            "BYTES element {i} is not UTF-8: ONNX Runtime takes strings as text"
                        ))
                    })
                })
                .collect::<Result<Vec<String>>>()?;
            ort::value::Tensor::from_string_array((shape.to_vec(), strings.as_slice()))
                .map(Into::into)
        }
    };
    value.map_err(|e| Error::internal(format!("onnxruntime input: {e}")))
}

/// One of ONNX Runtime's outputs as a tensor of the same type.
fn output_tensor(value: &DynValue) -> Result<Tensor> {
    fn values<T: PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &[i64]) -> Vec<usize> {
        shape.iter().map(|&d| d.max(0) as usize).collect()
    }
    fn tensor<T>(
        extracted: ort::Result<(Vec<usize>, Vec<T>)>,
        wrap: impl FnOnce(Vec<T>) -> TensorData,
    ) -> Result<Tensor> {
        let (shape, data) =
            extracted.map_err(|e| Error::internal(format!("cannot read it: {e}")))?;
        Tensor::new(shape, wrap(data))
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(Error::internal(format!(
            "it is a {}, not a tensor",
            value.dtype()
        )));
    };
    match ty {
        TensorElementType::Bool => tensor(values(value), TensorData::Bool),
        TensorElementType::Uint8 => tensor(values(value), TensorData::U8),
        TensorElementType::Uint16 => tensor(values(value), TensorData::U16),
        TensorElementType::Uint32 => tensor(values(value), TensorData::U32),
        TensorElementType::Uint64 => tensor(values(value), TensorData::U64),
        TensorElementType::Int8 => tensor(values(value), TensorData::I8),
        TensorElementType::Int16 => tensor(values(value), TensorData::I16),
        TensorElementType::Int32 => tensor(values(value), TensorData::I32),
        TensorElementType::Int64 => tensor(values(value), TensorData::I64),
        TensorElementType::Float16 => tensor(values(value), TensorData::F16),
        TensorElementType::Bfloat16 => tensor(values(value), TensorData::BF16),
        TensorElementType::Float32 => tensor(values(value), TensorData::F32),
        TensorElementType::Float64 => tensor(values(value), TensorData::F64),
        TensorElementType::String => {
            let strings = value.try_extract_strings().map(|(shape, strings)| {
                let bytes = strings.into_iter().map(String::into_bytes).collect();
                (dims(shape), bytes)
            });
            tensor(strings, TensorData::Bytes)
        }
        other => Err(Error::internal(format!(
            "it is of type {other}, which the protocols cannot carry"
        ))),
    }
}

impl Runnable for OrtModel {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        let failed = |e: ort::Error| Error::internal(format!("onnxruntime inference failed: {e}"));
        // Pixels as they are to a model that takes them as its quantised input.
        let inputs = match (&mut self.pixels, Input::lone_pixels(inputs)) {
            (Some(session), Ok(pixels)) => {
                let value =
                    TensorRef::from_array_view((pixels.shape.clone(), pixels.data.as_slice()))
                        .map_err(failed)?;
                // A pixel session exists only for a model with one input.
                let name = self.inputs.first().map_or("", String::as_str);
                let feed = vec![(Cow::Borrowed(name), value.into())];
                return run_session(session, &self.outputs, feed);
            }
            (None, Ok(pixels)) => vec![Input::Pixels(pixels)],
            (_, Err(inputs)) => inputs,
        };
        let inputs: Vec<Tensor> = inputs.into_iter().map(Input::into_tensor).collect();
        let mut feed: Vec<(Cow<str>, SessionInputValue)> = Vec::with_capacity(inputs.len());
        for (name, tensor) in self.inputs.iter().zip(&inputs) {
            feed.push((Cow::Borrowed(name.as_str()), input_value(tensor)?));
        }
        run_session(&mut self.session, &self.outputs, feed)
    }
}

/// ONNX Runtime's name among the engines ([`crate::registry`]).
pub const KIND: EngineKind = EngineKind::new("onnxruntime");

/// ONNX Runtime, when its library is found ([`find_library`]), or why not.
pub fn find(setup: &crate::registry::Setup) -> std::result::Result<Box<dyn Engine>, String> {
    let path = find_library(setup.ort_library).ok_or_else(|| {
        "no ONNX Runtime library found (pass --ort-lib or set ORT_DYLIB_PATH, or pip install \
         onnxruntime)"
            .to_string()
    })?;
    let engine = OnnxRuntimeEngine::load(&path).map_err(|e| e.message)?;
    tracing::info!("onnxruntime loaded from {}", engine.library().display());
    Ok(Box::new(engine))
}

/// Where to look for ONNX Runtime's library, in order: an explicit path (`--ort-lib`,
/// `AICP_ORT_LIB`), `ORT_DYLIB_PATH`, then an `onnxruntime` Python package: in `./.venv`, or
/// wherever `python3` imports it from.
pub fn find_library(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    python_package_dirs()
        .into_iter()
        .find_map(|package| library_in(&package.join("capi")))
}

fn python_package_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(".venv/lib") {
        for entry in entries.flatten() {
            dirs.push(entry.path().join("site-packages/onnxruntime"));
        }
    }
    for python in ["python3", "python"] {
        let asked = Command::new(python)
            .args([
                "-c",
                "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output();
        if let Ok(out) = asked
            && out.status.success()
        {
            dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            break;
        }
    }
    dirs
}

/// The newest `libonnxruntime.so.1.*` (or `.dylib`/`.dll`) in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so.1")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    found.sort();
    found.pop()
}
