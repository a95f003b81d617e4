//! The floor's optional model (`--model`): each request's images also go through ONNX Runtime,
//! with nothing in between. No queue, no batching across requests, no hop to another thread:
//! the tokio worker that parsed the request runs the model and answers. This is the floor for
//! serving the model, not only for parsing its requests; aicp's batching and engine threads
//! earn their keep only if they beat it.
//!
//! Each worker thread has a session of its own, made on its first request: ONNX Runtime's `run`
//! takes the session mutably, and a session per thread needs no lock. The sessions are set up
//! as aicp's are (all graph optimisations, one intra-op thread, no spinning), so the two run the
//! same kernels.

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

/// The images a request carries: floats from JSON, or the little-endian bytes of a binary
/// tensor.
pub enum Pixels<'a> {
    Floats(&'a [f32]),
    Bytes(&'a [u8]),
}

/// The loaded model ([`get`]): ONNX Runtime's environment and the model's bytes, from which
/// each thread makes its session.
pub struct Model {
    environment: Environment,
    onnx: Vec<u8>,
}

static MODEL: OnceLock<Model> = OnceLock::new();

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Loads ONNX Runtime from `library` and the model from `path`, and checks that a session can
/// be made from it. From then on, [`get`] gives it.
pub fn load(path: &Path, library: &Path) -> Result<(), String> {
    let environment = ort::init_from(library)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
        .with_name("aicp-floor")
        .build()
        .map_err(|e| format!("ONNX Runtime from {}: {e}", library.display()))?;
    let onnx = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = Model { environment, onnx };
    model
        .session()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    MODEL
        .set(model)
        .map_err(|_| "the model is already loaded".to_string())
}

/// The model the floor runs, if [`load`] loaded one.
pub fn get() -> Option<&'static Model> {
    MODEL.get()
}

impl Model {
    /// The model's 10 logits for each of `batch` 28x28 images, run on this thread.
    pub fn logits(&self, pixels: Pixels<'_>, batch: usize) -> Result<Vec<f32>, String> {
        let copied: Vec<f32>;
        let pixels = match pixels {
            Pixels::Floats(floats) => floats,
            Pixels::Bytes(bytes) => {
                copied = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                &copied
            }
        };
        SESSION.with_borrow_mut(|session| {
            let session = match session {
                Some(session) => session,
                None => session.insert(self.session()?),
            };
            let failed = |e: ort::Error| format!("onnxruntime: {e}");
            let input = TensorRef::from_array_view(([batch, 1, 28, 28], pixels)).map_err(failed)?;
            let outputs = session.run(ort::inputs![input]).map_err(failed)?;
            let (_, logits) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
            Ok(logits.to_vec())
        })
    }

    fn session(&self) -> Result<Session, String> {
        let failed = |e: ort::Error| format!("onnxruntime cannot load the model: {e}");
        Session::builder(&self.environment)
            .map_err(failed)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| failed(e.into()))?
            .with_intra_threads(1)
            .map_err(|e| failed(e.into()))?
            .with_intra_op_spinning(false)
            .map_err(|e| failed(e.into()))?
            .commit_from_memory(&self.onnx)
            .map_err(failed)
    }
}
