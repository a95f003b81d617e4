//! Mixed precision: when the model with every quantisable operator in INT8 misses the output
//! error bound, the operators whose INT8 costs the outputs most stay in float: the fewest that
//! meet the bound.
//!
//! Each operator's cost is measured alone (the model with only that operator in INT8) on a few
//! samples. The operators are then kept in float from the costliest down, and how many is found
//! by bisection, checking the model on more samples at each step. Models such as MobileNetV3
//! (PP-OCR's detector and recogniser) lose most of their accuracy in a few layers, whose
//! activations span hundreds of times their typical values.

use std::collections::HashSet;

use aicp_core::{Input, ModelSignature, Tensor};
use aicp_engine::{Engine, LoadOptions, Runnable};
use tract_onnx::pb::ModelProto;

use crate::samples::Sample;

/// Samples each operator's cost is measured on, at most.
const RANKING_SAMPLES: usize = 8;
/// Samples each candidate model is checked on, at most.
const CHECKING_SAMPLES: usize = 32;

/// Runs candidate models on an engine and measures how far their outputs are from the float
/// model's.
pub struct Checker<'a> {
    engine: &'a dyn Engine,
    signature: &'a ModelSignature,
    samples: &'a [Sample],
    /// The float model's outputs for each of `samples`.
    float: Vec<Vec<Tensor>>,
    scratch: tempfile::TempDir,
}

impl<'a> Checker<'a> {
    /// Runs the float model `proto` (of `signature`) on the first samples.
    pub fn new(
        engine: &'a dyn Engine,
        proto: &ModelProto,
        signature: &'a ModelSignature,
        samples: &'a [Sample],
    ) -> anyhow::Result<Self> {
        let samples = &samples[..samples.len().min(CHECKING_SAMPLES)];
        let mut checker = Self {
            engine,
            signature,
            samples,
            float: Vec::new(),
            scratch: tempfile::tempdir()?,
        };
        let mut float = checker.load(proto)?;
        checker.float = run_all(float.as_mut(), samples)?;
        Ok(checker)
    }

    /// The relative error of `proto`'s worst output against the float model's, averaged over
    /// the first `samples` samples.
    pub fn error(&self, proto: &ModelProto, samples: usize) -> anyhow::Result<f64> {
        let samples = samples.min(self.samples.len());
        let mut model = self.load(proto)?;
        let outputs = run_all(model.as_mut(), &self.samples[..samples])?;
        Ok(output_errors(&self.float[..samples], &outputs)
            .into_iter()
            .flatten()
            .fold(0.0, f64::max))
    }

    fn load(&self, proto: &ModelProto) -> anyhow::Result<Box<dyn Runnable>> {
        // A file of its own: candidates are checked on several threads at once.
        let file = tempfile::Builder::new()
            .suffix(".onnx")
            .tempfile_in(self.scratch.path())?;
        std::fs::write(file.path(), prost::Message::encode_to_vec(proto))?;
        self.engine
            .load(file.path(), self.signature, &LoadOptions::default())
            .map_err(|e| anyhow::anyhow!("{}: {}", self.engine.kind(), e.message))
    }
}

/// Each sample's outputs.
pub fn run_all(model: &mut dyn Runnable, samples: &[Sample]) -> anyhow::Result<Vec<Vec<Tensor>>> {
    samples
        .iter()
        .map(|sample| {
            let inputs: Vec<Input> = sample.0.iter().cloned().map(Input::from).collect();
            model
                .run(inputs)
                .map_err(|e| anyhow::anyhow!("{}", e.message))
        })
        .collect()
}

/// Each output's relative error against the float model's, averaged over the samples; `None`
/// for an output that is not float.
pub fn output_errors(float: &[Vec<Tensor>], int8: &[Vec<Tensor>]) -> Vec<Option<f64>> {
    let outputs = float.first().map_or(0, Vec::len);
    (0..outputs)
        .map(|o| {
            let per_sample: Vec<f64> = float
                .iter()
                .zip(int8)
                .filter_map(|(f, q)| relative_error(f.get(o)?, q.get(o)?))
                .collect();
            (!per_sample.is_empty())
                .then(|| per_sample.iter().sum::<f64>() / per_sample.len() as f64)
        })
        .collect()
}

/// `|int8 - float| / |float|` over a float output's values; `None` for other types.
pub fn relative_error(float: &Tensor, int8: &Tensor) -> Option<f64> {
    let (f, q) = (float.data.to_f32()?, int8.data.to_f32()?);
    if f.len() != q.len() {
        return Some(f64::INFINITY);
    }
    let (mut difference, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in f.iter().zip(&q) {
        difference += f64::from(a - b).powi(2);
        norm += f64::from(*a).powi(2);
    }
    Some(difference.sqrt() / norm.sqrt().max(1e-12))
}

/// The fewest of `nodes` to keep in float for an error within `bound`, costliest first, where
/// `error(float_nodes, samples)` is the model's error with `float_nodes` in float, measured on
/// `samples` samples. The model with every node in INT8 is known to miss the bound. `None`
/// when even one node in INT8 misses it.
pub fn keep_in_float(
    nodes: &[usize],
    bound: f64,
    error: impl Fn(&HashSet<usize>, usize) -> anyhow::Result<f64> + Sync,
) -> anyhow::Result<Option<Vec<usize>>> {
    if nodes.len() < 2 {
        return Ok(None);
    }
    // Each node's cost: the error with it alone in INT8, measured on every core (an engine
    // runs a candidate on one thread).
    let cost = |node: usize| {
        let others: HashSet<usize> = nodes.iter().copied().filter(|&n| n != node).collect();
        error(&others, RANKING_SAMPLES)
    };
    let mut ranked: Vec<(usize, f64)> = on_every_core(nodes, cost)?;
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ranked: Vec<usize> = ranked.into_iter().map(|(node, _)| node).collect();
    let error_keeping = |k: usize| error(&ranked[..k].iter().copied().collect(), CHECKING_SAMPLES);
    // Bisection on how many stay in float: `fails` misses the bound, `meets` meets it.
    let (mut fails, mut meets) = (0, nodes.len() - 1);
    if error_keeping(meets)? > bound {
        return Ok(None);
    }
    while meets - fails > 1 {
        let middle = (fails + meets) / 2;
        if error_keeping(middle)? <= bound {
            meets = middle;
        } else {
            fails = middle;
        }
    }
    Ok(Some(ranked[..meets].to_vec()))
}

/// `f` of each of `items`, paired with it, computed on as many threads as there are cores.
fn on_every_core<T: Copy + Sync + Send, R: Send>(
    items: &[T],
    f: impl Fn(T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<(T, R)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len())
        .max(1);
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                scope.spawn(move || {
                    part.iter()
                        .map(|&item| Ok((item, f(item)?)))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for worker in workers {
            all.extend(worker.join().expect("a cost measurement panicked")?);
        }
        Ok(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose error is the sum of its INT8 nodes' costs.
    fn additive(costs: &[f64]) -> impl Fn(&HashSet<usize>, usize) -> anyhow::Result<f64> + Sync {
        let costs = costs.to_vec();
        move |float: &HashSet<usize>, _| {
            Ok((0..costs.len())
                .filter(|n| !float.contains(n))
                .map(|n| costs[n])
                .sum())
        }
    }

    #[test]
    fn keeps_the_fewest_costliest_nodes_in_float() {
        let nodes: Vec<usize> = (0..6).collect();
        // All in INT8: 1.0. Without node 4 (0.5): 0.5; without 1 too (0.3): 0.2.
        let costs = [0.05, 0.3, 0.05, 0.05, 0.5, 0.05];
        assert_eq!(
            keep_in_float(&nodes, 0.25, additive(&costs)).unwrap(),
            Some(vec![4, 1])
        );
        assert_eq!(
            keep_in_float(&nodes, 0.5, additive(&costs)).unwrap(),
            Some(vec![4])
        );
    }

    #[test]
    fn says_none_when_one_node_alone_misses_the_bound() {
        let nodes: Vec<usize> = (0..3).collect();
        assert_eq!(
            keep_in_float(&nodes, 0.1, additive(&[0.2, 0.3, 0.4])).unwrap(),
            None
        );
        assert_eq!(keep_in_float(&[0], 0.1, additive(&[0.2])).unwrap(), None);
    }

    #[test]
    fn counts_evaluations_one_per_node_then_a_bisection() {
        let nodes: Vec<usize> = (0..64).collect();
        let mut costs = vec![0.001; 64];
        costs[17] = 0.5;
        let inner = additive(&costs);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let kept = keep_in_float(&nodes, 0.1, |float, samples| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            inner(float, samples)
        })
        .unwrap();
        assert_eq!(kept, Some(vec![17]));
        // 64 costs, the check with 63 in float, then at most log2(63) steps.
        let calls = calls.into_inner();
        assert!(calls <= 64 + 1 + 6, "{calls}");
    }
}
