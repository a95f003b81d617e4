//! The one path every front end's request takes: find the model, validate the input against
//! its signature and metadata (once, here), hand it to the model's scheduler, and hand back the
//! outputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use aicp_core::{DataType, Error, ErrorKind, Pixels, Result, Tensor, TensorData, TensorSpec};

use crate::repository::{Repository, ServedModel};
use crate::scheduler::Inputs;
use crate::stats::Timings;

/// An inference request as every front end translates it.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    pub version: Option<u64>,
    pub inputs: Vec<InferInput>,
    /// When the caller stops waiting: a request not finished by then fails as
    /// deadline-exceeded, and is dropped before the engine if it has not reached it.
    pub deadline: Option<Instant>,
}

/// One input tensor of a request, as it came.
#[derive(Debug, Clone)]
pub struct InferInput {
    /// The model input it feeds; `None` feeds a model's only input.
    pub name: Option<String>,
    /// Batch first, when the model batches. Each sample may be shaped differently from the
    /// model's declaration as long as it holds as many values (`[n, 784]` feeds `[n, 1, 28, 28]`).
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl From<Tensor> for InferInput {
    /// A float32 tensor for a model's only input.
    fn from(tensor: Tensor) -> Self {
        Self {
            name: None,
            shape: tensor.shape,
            data: TensorData::F32(tensor.data),
        }
    }
}

/// The outputs of one request, in the model's output order.
pub struct InferResponse {
    pub model: Arc<ServedModel>,
    pub outputs: Vec<Tensor>,
}

/// The model repository behind every front end; each served model has its own scheduler.
#[derive(Default)]
pub struct Runtime {
    /// `None` while the repository is (re)loading.
    repository: RwLock<Option<Arc<Repository>>>,
    /// Set when the server starts shutting down: it is no longer ready, so that load
    /// balancers stop sending it requests while the ones in flight finish.
    draining: AtomicBool,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a loaded repository in service.
    pub fn set_repository(&self, repository: Repository) {
        *self.repository.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(repository));
    }

    /// Marks the server as shutting down: readiness turns false from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The repository if the server is ready for requests: loaded, and not shutting down.
    pub fn ready(&self) -> Result<Arc<Repository>> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        self.repository()
    }

    /// The repository, once loaded.
    pub fn repository(&self) -> Result<Arc<Repository>> {
        self.repository
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    "models are still loading; retry shortly",
                )
            })
    }

    /// Finds the model, then validates and runs one request.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        let model = self.model(&request.model, request.version)?;
        self.run(model, request.inputs, request.deadline).await
    }

    /// The model version an inference request asks for. A request that finds none counts as
    /// a failed request in the metrics (without the model's name unless it exists: labels never
    /// take a client's arbitrary text).
    pub fn model(&self, name: &str, version: Option<u64>) -> Result<Arc<ServedModel>> {
        let repository = self.repository()?;
        repository.get(name, version).inspect_err(|e| {
            let known = repository.model(name).is_ok();
            crate::stats::record_failure_metric(if known { name } else { "" }, "", e.kind);
        })
    }

    /// Validates `inputs` against `model` (already looked up) and runs them through its
    /// scheduler, counting the request in the model's statistics.
    pub async fn run(
        &self,
        model: Arc<ServedModel>,
        inputs: Vec<InferInput>,
        deadline: Option<Instant>,
    ) -> Result<InferResponse> {
        let arrived = Instant::now();
        let outcome = match prepare_inputs(&model, inputs) {
            Ok((samples, inputs)) => model
                .scheduler
                .submit(inputs, samples, deadline)
                .await
                .map(|done| (samples, done)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((samples, done)) => {
                let timings = Timings {
                    queue: done.queue,
                    compute: done.compute,
                };
                model
                    .stats
                    .record_success(samples, arrived.elapsed(), timings);
                Ok(InferResponse {
                    model,
                    outputs: done.outputs,
                })
            }
            Err(e) => {
                model.stats.record_failure(arrived.elapsed(), e.kind);
                Err(e)
            }
        }
    }
}

/// Matches `inputs` to the model's inputs by name, converts each to the type the model takes
/// and reshapes it to the model's declared shape (a reshape: the data is not copied). Returns
/// the batch size and one tensor per model input, in the model's order; or, for UINT8 data
/// sent to a model that takes pixels, the pixels as they came, for the engine to normalise.
fn prepare_inputs(model: &ServedModel, inputs: Vec<InferInput>) -> Result<(usize, Inputs)> {
    let specs = &model.signature.inputs;
    let names = || {
        specs
            .iter()
            .map(|s| format!("{:?}", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if inputs.len() != specs.len() {
        return Err(Error::invalid(format!(
            "model {:?} takes {} input(s) ({}), got {}",
            model.name,
            specs.len(),
            names(),
            inputs.len()
        )));
    }
    let mut slots: Vec<Option<InferInput>> = specs.iter().map(|_| None).collect();
    for input in inputs {
        let index = match &input.name {
            None if specs.len() == 1 => 0,
            None => {
                return Err(Error::invalid(format!(
                    "model {:?} takes several inputs ({}); name each one",
                    model.name,
                    names()
                )));
            }
            Some(name) => specs.iter().position(|s| &s.name == name).ok_or_else(|| {
                Error::invalid(format!(
                    "model {:?} has no input {name:?}; its inputs: {}",
                    model.name,
                    names()
                ))
            })?,
        };
        if slots[index].replace(input).is_some() {
            return Err(Error::invalid(format!(
                "input {:?} is given more than once",
                specs[index].name
            )));
        }
    }
    if let (Some(scale), [Some(input)]) = (model.pixels, slots.as_mut_slice())
        && let TensorData::U8(data) = &mut input.data
    {
        let data = std::mem::take(data);
        let spec = &specs[0];
        check_count(spec, &input.shape, data.len())?;
        let shape = fit_shape(model, spec, &input.shape)?;
        let batch = shape.first().copied().unwrap_or(1);
        check_batch(model, spec, &mut None, batch)?;
        return Ok((batch, Inputs::Pixels(Pixels { shape, data, scale })));
    }
    let mut batch = None;
    let mut tensors = Vec::with_capacity(specs.len());
    for (spec, input) in specs.iter().zip(slots.into_iter().flatten()) {
        let tensor = prepare_input(model, spec, input)?;
        check_batch(
            model,
            spec,
            &mut batch,
            tensor.shape.first().copied().unwrap_or(1),
        )?;
        tensors.push(tensor);
    }
    Ok((batch.unwrap_or(1), Inputs::Floats(tensors)))
}

/// Checks that input `spec`'s batch agrees with the other inputs' (`batch`, set by the first)
/// and fits the model's `max_batch_size`.
fn check_batch(
    model: &ServedModel,
    spec: &TensorSpec,
    batch: &mut Option<usize>,
    this_batch: usize,
) -> Result<()> {
    if model.max_batch_size() == 0 {
        return Ok(());
    }
    if *batch.get_or_insert(this_batch) != this_batch {
        return Err(Error::invalid(format!(
            "inputs disagree on the batch size: {} and {this_batch} (input {:?})",
            batch.unwrap_or_default(),
            spec.name
        )));
    }
    if this_batch > model.max_batch_size() {
        return Err(Error::invalid(format!(
            "a batch of {this_batch} is more than model {:?} takes in one request (max_batch_size {}, set in model.toml [batching])",
            model.name,
            model.max_batch_size()
        )));
    }
    Ok(())
}

/// Checks one input against its spec, converts it to float32 and gives it the model's shape.
fn prepare_input(model: &ServedModel, spec: &TensorSpec, input: InferInput) -> Result<Tensor> {
    let in_input = |e: Error| Error::new(e.kind, format!("input {:?}: {}", spec.name, e.message));
    if spec.datatype != DataType::F32 {
        return Err(Error::invalid(format!(
            "model {:?} input {:?} is {}; aicp's engines feed FP32 inputs only",
            model.name, spec.name, spec.datatype
        )));
    }
    check_count(spec, &input.shape, input.data.len())?;
    let shape = fit_shape(model, spec, &input.shape)?;
    let data = input.data.into_f32().map_err(in_input)?;
    if model.signature.inputs.len() == 1 {
        check_values(model, &data)?;
    } else {
        check_finite(&data).map_err(in_input)?;
    }
    Ok(Tensor { shape, data })
}

/// Checks that `shape` (as sent for input `spec`) accounts for exactly `values` values.
fn check_count(spec: &TensorSpec, shape: &[usize], values: usize) -> Result<()> {
    let in_input = |e: Error| Error::new(e.kind, format!("input {:?}: {}", spec.name, e.message));
    let needed = aicp_core::tensor::element_count(shape).map_err(in_input)?;
    if needed != values {
        return Err(in_input(Error::invalid(format!(
            "shape {shape:?} needs {needed} values, got {values}"
        ))));
    }
    Ok(())
}

/// The shape to feed `spec` with data shaped `given`: the model's own shape with the batch of
/// `given`, when each sample holds the same number of values.
fn fit_shape(model: &ServedModel, spec: &TensorSpec, given: &[usize]) -> Result<Vec<usize>> {
    let mismatch = |expected: String| {
        Error::invalid(format!(
            "expected {expected} (model {:?} input {:?} is shaped {:?}), got shape {given:?}",
            model.name,
            spec.name,
            spec.display_shape()
        ))
    };
    let Some((&batch, sample)) = given.split_first() else {
        return match spec.shape.as_slice() {
            [] => Ok(Vec::new()),
            _ => Err(mismatch("a batch dimension".into())),
        };
    };
    let Some((&model_batch, model_sample)) = spec.shape.split_first() else {
        return Err(mismatch("a single value".into()));
    };
    if let Some(fixed) = model_batch
        && fixed != batch
    {
        return Err(mismatch(format!("a first dimension of exactly {fixed}")));
    }
    let per_sample: usize = sample.iter().product();
    match spec.sample_elements() {
        Some(expected) if expected == per_sample => Ok(std::iter::once(batch)
            .chain(model_sample.iter().map(|d| d.unwrap_or(1)))
            .collect()),
        Some(expected) => Err(Error::invalid(format!(
            "expected {expected} values per sample (model {:?} input {:?} is shaped {:?}), got {per_sample} (input shape {given:?})",
            model.name,
            spec.name,
            spec.display_shape(),
        ))),
        // A variable dimension after the batch: the shapes must agree where the model fixes them.
        None => {
            let fits = sample.len() == model_sample.len()
                && sample
                    .iter()
                    .zip(model_sample)
                    .all(|(have, want)| want.is_none_or(|w| w == *have));
            if fits {
                Ok(given.to_vec())
            } else {
                Err(mismatch("a shape that fits".into()))
            }
        }
    }
}

fn check_finite(data: &[f32]) -> Result<()> {
    // One branch-free pass the compiler vectorises; the slow search only runs on bad input.
    if data.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(format!(
            "input value {} at index {i} is not a finite number",
            data[i]
        ))),
        None => Ok(()),
    }
}

/// Rejects non-finite values and values outside the range the model's metadata declares.
fn check_values(model: &ServedModel, data: &[f32]) -> Result<()> {
    let Some([low, high]) = model.metadata.input.as_ref().and_then(|i| i.range) else {
        return check_finite(data);
    };
    // NaN fails both comparisons, and a finite range excludes the infinities: one vectorised
    // pass checks everything on the common path.
    if data
        .iter()
        .fold(true, |ok, &v| ok & (v >= low) & (v <= high))
        && low.is_finite()
        && high.is_finite()
    {
        return Ok(());
    }
    check_finite(data)?;
    let Some(i) = data.iter().position(|v| *v < low || *v > high) else {
        return Ok(());
    };
    let max = data.iter().copied().fold(f32::MIN, f32::max);
    let hint = if low == 0.0 && high == 1.0 && max > 1.0 && max <= 255.0 {
        " The values look like 0-255 pixels: divide them by 255."
    } else {
        ""
    };
    Err(Error::invalid(format!(
        "input values must be in [{low}, {high}] for model {:?} (model.toml [input] range); found {} at index {i}.{hint}",
        model.name, data[i]
    )))
}

/// Softmax of one row of logits.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` largest scores of a row, high to low, as (class, score).
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 0.0]);
        assert!((p[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_sorts_high_to_low_and_caps_at_the_class_count() {
        assert_eq!(top_k(&[0.1, 0.7, 0.2], 2), vec![(1, 0.7), (2, 0.2)]);
        assert_eq!(top_k(&[0.1, 0.7, 0.2], 10).len(), 3);
    }
}
