//! The one path every front end's request takes: find the model, validate the input against
//! its signature and metadata (once, here), hand it to the model's scheduler, and hand back the
//! outputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use aicp_core::{Error, ErrorKind, Input, Pixels, Result, Tensor, TensorData, TensorSpec};

use crate::repository::Repository;
use crate::scheduler::Completed;
use crate::served::ServedModel;
use crate::stats::Timings;

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

impl InferInput {
    /// One square picture of 8-bit pixels (0 background, 255 ink) as `model`'s one input: the
    /// pixels themselves when the model says how they map onto its input range (the engine
    /// normalises them, on the GPU if it runs there), else float32 in [0, 1].
    pub fn picture(model: &ServedModel, pixels: &[u8]) -> Result<Self> {
        let spec = &model.signature.inputs[0];
        let side = (pixels.len() as f64).sqrt() as usize;
        if model.signature.inputs.len() != 1 || spec.sample_elements() != Some(pixels.len()) {
            return Err(Error::invalid(format!(
                "model {:?} takes {:?}, not one {side}x{side} picture per sample",
                model.name,
                spec.display_shape()
            )));
        }
        let data = match model.pixels {
            Some(_) => TensorData::U8(pixels.to_vec()),
            None => TensorData::F32(pixels.iter().map(|&p| f32::from(p) / 255.0).collect()),
        };
        Ok(Self {
            name: None,
            shape: vec![1, pixels.len()],
            data,
        })
    }
}

impl From<Tensor> for InferInput {
    /// A tensor for a model's only input.
    fn from(tensor: Tensor) -> Self {
        Self {
            name: None,
            shape: tensor.shape,
            data: tensor.data,
        }
    }
}

/// One inference request's hold on the model version it asked for, from the lookup
/// ([`Runtime::model`]) to the run ([`Runtime::run`]), which counts the request's outcome in the
/// model's statistics and metrics. A ticket dropped unused counts the request as failed: a front
/// end that refuses a request between lookup and run (its input did not fit the model, its
/// picture did not decode) need do nothing for it to be counted, and cannot forget to. A
/// request whose caller leaves while it runs is not counted, as before tickets.
pub struct Ticket {
    model: Arc<ServedModel>,
    arrived: Instant,
    /// Whether the request reached the run, which counts it (or its caller left).
    ran: bool,
}

impl Ticket {
    pub(crate) fn new(model: Arc<ServedModel>) -> Self {
        Self {
            model,
            arrived: Instant::now(),
            ran: false,
        }
    }

    /// Runs `work`, this ticket's request (its samples and what its run got), and counts its
    /// outcome.
    pub(crate) async fn counted(
        mut self,
        work: impl Future<Output = Result<(usize, Completed)>>,
    ) -> Result<Completed> {
        self.ran = true;
        let outcome = work.await;
        let elapsed = self.arrived.elapsed();
        let stats = &self.model.stats;
        match &outcome {
            Ok((samples, done)) => {
                let timings = Timings {
                    queue: done.queue,
                    compute: done.compute,
                };
                stats.record_success(*samples, elapsed, timings);
            }
            Err(e) => stats.record_failure(elapsed, e.kind),
        }
        outcome.map(|(_, done)| done)
    }
}

impl std::ops::Deref for Ticket {
    type Target = ServedModel;

    fn deref(&self) -> &ServedModel {
        &self.model
    }
}

impl Drop for Ticket {
    /// Unused: the request was refused before it ran. Refusals there are about the request's
    /// input (its shape, its values, its picture), so they count as invalid.
    fn drop(&mut self) {
        if !self.ran {
            let elapsed = self.arrived.elapsed();
            self.model
                .stats
                .record_failure(elapsed, ErrorKind::InvalidArgument);
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

    /// The model version an inference request asks for, as the [`Ticket`] that counts the
    /// request. A request that finds none counts as a failed request in the metrics (without
    /// the model's name unless it exists: labels never take a client's arbitrary text).
    pub fn model(&self, name: &str, version: Option<u64>) -> Result<Ticket> {
        let repository = self.repository()?;
        let model = repository.get(name, version).inspect_err(|e| {
            let known = repository.model(name).is_ok();
            crate::stats::record_failure_metric(if known { name } else { "" }, "", e.kind);
        })?;
        Ok(Ticket::new(model))
    }

    /// Validates `inputs` against the ticket's model and runs them (through its scheduler, or
    /// its chain's steps), counting the request in the model's statistics. Past `deadline`
    /// (when the caller stops waiting) the request fails as deadline-exceeded, and is dropped
    /// before the engine if it has not reached it.
    pub async fn run(
        &self,
        ticket: Ticket,
        inputs: Vec<InferInput>,
        deadline: Option<Instant>,
    ) -> Result<InferResponse> {
        let model = ticket.model.clone();
        let done = ticket
            .counted(async {
                let inputs = crate::preprocessing::v2_inputs(&model, inputs).await?;
                let (samples, inputs) = prepare_inputs(&model, inputs)?;
                let done = model.runner.run(inputs, samples, deadline).await?;
                Ok((samples, done))
            })
            .await?;
        Ok(InferResponse {
            model,
            outputs: done.outputs,
        })
    }
}

/// Matches `inputs` to the model's inputs by name, checks each against its spec (the model's
/// own type, a shape that fits) and gives it the model's declared shape (a reshape: the data is
/// not copied). Returns the batch size and one input per model input, in the model's order: the
/// tensors as they came, or for UINT8 data sent to a model that takes pixels, the pixels, for
/// the engine to normalise.
pub(crate) fn prepare_inputs(
    model: &ServedModel,
    inputs: Vec<InferInput>,
) -> Result<(usize, Vec<Input>)> {
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
        let batch = check_batch(model, spec, &mut None, &shape)?;
        return Ok((batch, vec![Pixels { shape, data, scale }.into()]));
    }
    let mut batch = None;
    let mut tensors = Vec::with_capacity(specs.len());
    for (spec, input) in specs.iter().zip(slots.into_iter().flatten()) {
        let tensor = prepare_input(model, spec, input)?;
        check_batch(model, spec, &mut batch, &tensor.shape)?;
        tensors.push(tensor.into());
    }
    Ok((batch.unwrap_or(1), tensors))
}

/// For a model that batches: checks that input `spec`'s batch (the first dimension of `shape`)
/// agrees with the other inputs' (`batch`, set by the first) and fits the model's
/// `max_batch_size`. Returns the batch: 1 for a model that does not batch.
fn check_batch(
    model: &ServedModel,
    spec: &TensorSpec,
    batch: &mut Option<usize>,
    shape: &[usize],
) -> Result<usize> {
    if model.max_batch_size() == 0 {
        return Ok(1);
    }
    // A batch of 0 samples is a valid request, as an empty tensor is a valid input: it runs
    // and gets outputs of 0 rows.
    let this_batch = shape.first().copied().unwrap_or(1);
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
    Ok(this_batch)
}

/// Checks one input against its spec (its type, its shape, its values when model.toml declares
/// their range) and gives it the model's shape.
fn prepare_input(model: &ServedModel, spec: &TensorSpec, input: InferInput) -> Result<Tensor> {
    let given = input.data.datatype();
    if given != spec.datatype {
        return Err(Error::invalid(format!(
            "input {:?}: model {:?} takes {}, got {given}",
            spec.name, model.name, spec.datatype
        )));
    }
    check_count(spec, &input.shape, input.data.len())?;
    let shape = fit_shape(model, spec, &input.shape)?;
    if let (TensorData::F32(values), true) = (&input.data, model.signature.inputs.len() == 1) {
        check_range(model, values)?;
    }
    Ok(Tensor {
        shape,
        data: input.data,
    })
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

/// The shape to feed `spec` with data shaped `given`: `given` itself when it fits the model's
/// declared shape (the same rank, the same size wherever the model fixes one) or when the model
/// leaves its rank open; or, for a model whose samples have a fixed shape, that shape with the
/// batch of `given` when each sample holds as many values (`[n, 784]` feeds `[n, 1, 28, 28]`).
fn fit_shape(model: &ServedModel, spec: &TensorSpec, given: &[usize]) -> Result<Vec<usize>> {
    let mismatch = |expected: String| {
        Error::invalid(format!(
            "expected {expected} (model {:?} input {:?} is shaped {:?}), got shape {given:?}",
            model.name,
            spec.name,
            spec.display_shape()
        ))
    };
    let Some(dims) = &spec.shape else {
        return Ok(given.to_vec());
    };
    let fits = |dims: &[Option<usize>], given: &[usize]| {
        dims.len() == given.len()
            && dims
                .iter()
                .zip(given)
                .all(|(want, have)| want.is_none_or(|w| w == *have))
    };
    if fits(dims, given) {
        return Ok(given.to_vec());
    }
    let Some((&batch, sample)) = given.split_first() else {
        return Err(mismatch("a batch dimension".into()));
    };
    let Some((&model_batch, model_sample)) = dims.split_first() else {
        return Err(mismatch("a single value, shape []".into()));
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
        None => Err(mismatch("a shape that fits".into())),
    }
}

/// Rejects values outside the range the model's metadata declares (NaN and the infinities
/// included). Without a declared range, every value passes: an attention mask of `-inf` is
/// normal.
fn check_range(model: &ServedModel, data: &[f32]) -> Result<()> {
    let Some([low, high]) = model.metadata.input.as_ref().and_then(|i| i.range) else {
        return Ok(());
    };
    // NaN fails both comparisons: one vectorised pass checks everything on the common path.
    if data
        .iter()
        .fold(true, |ok, &v| ok & (v >= low) & (v <= high))
    {
        return Ok(());
    }
    let Some(i) = data.iter().position(|v| !(*v >= low && *v <= high)) else {
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
