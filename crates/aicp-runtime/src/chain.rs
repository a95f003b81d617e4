//! Chains: a model whose model.toml lists `[[steps]]` runs other models of the repository one
//! after another, each step's outputs feeding the next one's inputs by name, inside the server
//! (tensors are moved from one step to the next, never sent through a wire). Triton calls them
//! ensembles; a linear chain covers an encoder and its head, or a detector and its classifier.
//!
//! A chain is resolved (`resolve`) against the repository whenever the repository changes: it holds the
//! step versions it runs, so a step that reloads gives the chain its new version, and a step
//! that is unloaded or fails makes the chain not ready, with the reason. Everything a step
//! could get wrong about another's names and types is refused there, before any request.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicp_core::{
    ChainStep, Error, Input, ModelMetadata, ModelSignature, OutputKind, Result, Tensor, TensorSpec,
};
use aicp_transform::Transforms;

use crate::policy::Policy;
use crate::scheduler::Completed;
use crate::served::{Runner, ServedModel};
use crate::service::{InferInput, Ticket, prepare_inputs};
use crate::stats::Stats;

/// The models a chain runs, and which tensor feeds each of their inputs.
pub struct Chain {
    steps: Vec<Step>,
    /// Where the chain's outputs (the last step's) are among its tensors.
    outputs: Vec<usize>,
}

/// One model of a chain, and where its inputs come from.
struct Step {
    model: Arc<ServedModel>,
    /// One per input of the model, in its order.
    feeds: Vec<Feed>,
}

/// One input of a step: which of the chain's tensors feeds it. The chain's tensors are its
/// inputs, then each step's outputs in turn.
struct Feed {
    input: String,
    tensor: usize,
    /// The tensor's name: a chain input's, or `"<model>.<output>"`.
    source: String,
    /// Whether no later step reads the tensor: it is then moved into this step, not copied.
    last_read: bool,
}

/// A chain's tensor, as steps name it: a chain input by its name, a step's output as
/// `"<model>.<output>"`.
struct Named {
    name: String,
    /// The step that made it; `None` for a chain input.
    step: Option<usize>,
    spec: TensorSpec,
}

/// Resolves a chain's `steps` against the repository (`lookup` finds a model's version, or
/// says why it cannot be served): the chain, and its signature (the inputs of its first step,
/// under the chain's names, and the outputs of its last). Fails with the reason when a step's
/// model does not serve, when an input's source does not exist, or when types disagree.
pub(crate) fn resolve(
    steps: &[ChainStep],
    lookup: impl Fn(&str, Option<u64>) -> std::result::Result<Arc<ServedModel>, String>,
) -> std::result::Result<(Chain, ModelSignature), String> {
    let mut tensors: Vec<Named> = Vec::new();
    let mut inputs: Vec<TensorSpec> = Vec::new();
    let mut resolved: Vec<Step> = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let at = || format!("step {} (model {:?})", index + 1, step.model);
        let model = lookup(&step.model, step.version).map_err(|e| format!("{}: {e}", at()))?;
        if matches!(model.runner, Runner::Chain(_)) {
            return Err(format!(
                "{}: is itself a chain; a step runs a model, and a chain cannot be one",
                at()
            ));
        }
        let names = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| format!("{:?}", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(unknown) = step
            .inputs
            .keys()
            .find(|name| !model.signature.inputs.iter().any(|s| &s.name == *name))
        {
            return Err(format!(
                "{}: model.toml maps input {unknown:?}, which the model does not have; its \
                 inputs: {}",
                at(),
                names(&model.signature.inputs)
            ));
        }
        let mut feeds = Vec::with_capacity(model.signature.inputs.len());
        for spec in &model.signature.inputs {
            let tensor = match (step.inputs.get(&spec.name), index) {
                (Some(source), _) => find(&tensors, steps, source).or_else(|| {
                    // The first step's mapped inputs name the chain's own inputs.
                    (index == 0).then(|| new_input(&mut tensors, &mut inputs, source, spec))
                }),
                (None, 0) => find(&tensors, steps, &spec.name)
                    .or_else(|| Some(new_input(&mut tensors, &mut inputs, &spec.name, spec))),
                (None, _) => tensors
                    .iter()
                    .rposition(|t| t.step == Some(index - 1) && t.spec.name == spec.name)
                    .or_else(|| {
                        tensors
                            .iter()
                            .position(|t| t.step.is_none() && t.name == spec.name)
                    }),
            };
            let Some(tensor) = tensor else {
                let wanted = step.inputs.get(&spec.name).unwrap_or(&spec.name);
                let known: Vec<String> = tensors.iter().map(|t| format!("{:?}", t.name)).collect();
                return Err(format!(
                    "{}: input {:?} takes {wanted:?}, which is neither an output of an earlier \
                     step nor an input of the chain (the chain's tensors so far: {}); name its \
                     source in model.toml: inputs = {{ {:?} = \"<model>.<output>\" }}",
                    at(),
                    spec.name,
                    known.join(", "),
                    spec.name
                ));
            };
            let source = &tensors[tensor];
            if source.spec.datatype != spec.datatype {
                return Err(format!(
                    "{}: input {:?} takes {}, but {:?} is {}",
                    at(),
                    spec.name,
                    spec.datatype,
                    source.name,
                    source.spec.datatype
                ));
            }
            // Only sizes both sides fix are checked here; the rest, at run time, by the step.
            if let (Some(takes), Some(has)) =
                (spec.sample_elements(), source.spec.sample_elements())
                && takes != has
            {
                return Err(format!(
                    "{}: input {:?} takes samples of {takes} values ({:?}), but {:?} has {has} \
                     ({:?})",
                    at(),
                    spec.name,
                    spec.display_shape(),
                    source.name,
                    source.spec.display_shape()
                ));
            }
            feeds.push(Feed {
                input: spec.name.clone(),
                tensor,
                source: source.name.clone(),
                last_read: false,
            });
        }
        tensors.extend(model.signature.outputs.iter().map(|spec| Named {
            name: format!("{}.{}", step.model, spec.name),
            step: Some(index),
            spec: spec.clone(),
        }));
        resolved.push(Step { model, feeds });
    }
    let Some(last) = resolved.last() else {
        return Err("a chain needs at least one step".into());
    };
    let outputs = last.model.signature.outputs.clone();
    let first_output = tensors.len() - outputs.len();
    mark_last_reads(&mut resolved);
    Ok((
        Chain {
            steps: resolved,
            outputs: (first_output..tensors.len()).collect(),
        },
        ModelSignature { inputs, outputs },
    ))
}

/// The tensor `source` names: a chain input by its name, or an earlier step's output as
/// `"<model>.<output>"` (the latest step that ran that model).
fn find(tensors: &[Named], steps: &[ChainStep], source: &str) -> Option<usize> {
    tensors.iter().rposition(|t| match t.step {
        None => t.name == source,
        Some(step) => source
            .strip_prefix(steps[step].model.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|output| output == t.spec.name),
    })
}

/// Adds an input of the chain, fed to `spec` of the first step, named `name`.
fn new_input(
    tensors: &mut Vec<Named>,
    inputs: &mut Vec<TensorSpec>,
    name: &str,
    spec: &TensorSpec,
) -> usize {
    let spec = TensorSpec {
        name: name.to_string(),
        ..spec.clone()
    };
    inputs.push(spec.clone());
    tensors.push(Named {
        name: name.to_string(),
        step: None,
        spec,
    });
    tensors.len() - 1
}

/// Marks each tensor's last read, so that it is moved there instead of copied.
fn mark_last_reads(steps: &mut [Step]) {
    let mut read = BTreeSet::new();
    for step in steps.iter_mut().rev() {
        for feed in step.feeds.iter_mut().rev() {
            feed.last_read = read.insert(feed.tensor);
        }
    }
}

impl Chain {
    /// Each step's model and version, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.steps.iter().map(|step| &step.model)
    }

    /// Each step's model and where each of its inputs comes from (input name, tensor name: a
    /// chain input's, or `"<model>.<output>"`), in order.
    pub fn wiring(&self) -> impl Iterator<Item = (&Arc<ServedModel>, Vec<(&str, &str)>)> {
        self.steps.iter().map(|step| {
            let feeds = step
                .feeds
                .iter()
                .map(|feed| (feed.input.as_str(), feed.source.as_str()))
                .collect();
            (&step.model, feeds)
        })
    }

    /// Whether the chain runs exactly these step versions.
    pub(crate) fn runs(&self, other: &Chain) -> bool {
        self.steps.len() == other.steps.len()
            && self
                .steps()
                .zip(other.steps())
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// The most samples one request may carry: the least any step takes (0, no batch
    /// dimension, when a step has none).
    pub(crate) fn max_batch_size(&self) -> usize {
        self.steps()
            .map(|model| model.max_batch_size())
            .min()
            .unwrap_or(0)
    }

    /// Runs the chain's inputs (checked against its signature, in its order) through each step
    /// in turn, each step counted in its model's statistics, all under the request's
    /// `deadline`. A step's failure is the chain's, with the step named.
    pub(crate) async fn run(
        &self,
        inputs: Vec<Input>,
        deadline: Option<Instant>,
    ) -> Result<Completed> {
        let mut tensors: Vec<Option<Tensor>> = inputs
            .into_iter()
            .map(|input| Some(input.into_tensor()))
            .collect();
        let (mut queue, mut compute) = (Duration::ZERO, Duration::ZERO);
        for (index, step) in self.steps.iter().enumerate() {
            let inputs = step
                .feeds
                .iter()
                .map(|feed| {
                    let slot = &mut tensors[feed.tensor];
                    let tensor = if feed.last_read {
                        slot.take()
                    } else {
                        slot.clone()
                    };
                    let tensor =
                        tensor.ok_or_else(|| Error::internal("a chain tensor was moved twice"))?;
                    Ok(InferInput {
                        name: Some(feed.input.clone()),
                        shape: tensor.shape,
                        data: tensor.data,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let done = run_step(&step.model, inputs, deadline).await.map_err(|e| {
                Error::new(
                    e.kind,
                    format!(
                        "chain step {} (model {:?}): {}",
                        index + 1,
                        step.model.name,
                        e.message
                    ),
                )
            })?;
            queue += done.queue;
            compute += done.compute;
            tensors.extend(done.outputs.into_iter().map(Some));
        }
        let outputs = self
            .outputs
            .iter()
            .map(|&i| tensors[i].take())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::internal("a chain output was moved"))?;
        Ok(Completed {
            outputs,
            queue,
            compute,
        })
    }
}

/// Runs one step on its model's scheduler, counted in the model's statistics as any request.
async fn run_step(
    model: &Arc<ServedModel>,
    inputs: Vec<InferInput>,
    deadline: Option<Instant>,
) -> Result<Completed> {
    let ticket = Ticket::new(model.clone());
    ticket
        .counted(async {
            let Runner::Scheduler(scheduler) = &model.runner else {
                return Err(Error::internal("a chain step is a chain"));
            };
            let (samples, inputs) = prepare_inputs(model, inputs)?;
            let done = scheduler.submit(inputs, samples, deadline).await?;
            Ok((samples, done))
        })
        .await
}

/// Model `name`, version 1: `chain` (of `signature`, as [`resolve`] made it) served as its
/// model.toml (`metadata`, read from `dir`) declares. `stats` carries on the statistics of the
/// chain it replaces, when only its steps changed.
pub(crate) fn served(
    name: &str,
    metadata: &Arc<ModelMetadata>,
    dir: Option<&Path>,
    (chain, signature): (Chain, ModelSignature),
    stats: Option<Arc<Stats>>,
) -> std::result::Result<ServedModel, String> {
    let transforms = Arc::new(Transforms::load(metadata, &signature, dir)?);
    let last = chain.steps.last().map(|step| &step.model);
    let output = metadata
        .output
        .or(last.map(|model| model.output))
        .unwrap_or(OutputKind::Logits);
    let mut devices: Vec<&str> = Vec::new();
    for model in chain.steps() {
        if !devices.contains(&model.device.as_str()) {
            devices.push(&model.device);
        }
    }
    let path: Vec<String> = chain
        .steps()
        .map(|model| format!("{} v{}", model.name, model.version))
        .collect();
    let policy = Policy {
        max_batch_size: chain.max_batch_size(),
        dynamic: false,
        max_queue_delay: Duration::ZERO,
        preferred_batch_sizes: Vec::new(),
        idle_poll: Duration::ZERO,
        instances: 0,
        max_queue_size: 0,
    };
    Ok(ServedModel {
        name: name.to_string(),
        version: CHAIN_VERSION,
        engine: None,
        device: devices.join(", "),
        signature,
        pixels: None,
        output,
        metadata: metadata.clone(),
        transforms,
        policy,
        notes: vec![format!("a chain: {}", path.join(" -> "))],
        stats: stats.unwrap_or_else(|| Arc::new(Stats::new(name, CHAIN_VERSION))),
        runner: Runner::Chain(chain),
    })
}

/// A chain has one version: its model.toml.
pub(crate) const CHAIN_VERSION: u64 = 1;
