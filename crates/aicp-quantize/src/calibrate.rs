//! Calibration: the float model runs on a CPU engine (ONNX Runtime where it is found, else
//! tract) on real samples, each at its own shape, with the activations to be quantised exposed
//! as outputs, and each activation's range is measured.

use std::collections::HashMap;

use aicp_core::{DataType, Input, ModelSignature, TensorSpec};
use aicp_engine::{Engine, LoadOptions};
use serde::Serialize;
use tract_onnx::pb::ModelProto;

use crate::samples::Sample;

/// How a model is quantised: statically, with each activation's range read from its
/// calibration values one of three ways, or dynamically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The 0.001th and 99.999th percentiles: a few outliers do not stretch the scale.
    Percentile,
    /// The clipping threshold that loses the least information (TensorRT's entropy
    /// calibration): the one whose quantised histogram has the smallest KL divergence from
    /// the values' histogram.
    Entropy,
    /// No calibration: int8 weights for MatMul and Gemm, their activations quantised at run
    /// time from each run's own range (ONNX Runtime's `quantize_dynamic`).
    Dynamic,
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "minmax" => Ok(Self::MinMax),
            "percentile" => Ok(Self::Percentile),
            "entropy" => Ok(Self::Entropy),
            "dynamic" => Ok(Self::Dynamic),
            other => Err(format!(
                "unknown quantisation method {other:?}: expected minmax, percentile, entropy \
                 or dynamic"
            )),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MinMax => "minmax",
            Self::Percentile => "percentile",
            Self::Entropy => "entropy",
            Self::Dynamic => "dynamic",
        })
    }
}

/// Values kept per activation for percentiles and entropy: a stride sample beyond this.
const PERCENTILE_SAMPLE: usize = 1 << 20;
const PERCENTILE: f64 = 99.999;
/// Entropy calibration's histogram of magnitudes, and the fewest bins a threshold keeps.
const ENTROPY_BINS: usize = 2048;
const ENTROPY_MIN_BINS: usize = 128;
/// The levels a threshold's histogram is merged into: 128, as TensorRT and ONNX Runtime's
/// entropy calibrators use.
const ENTROPY_LEVELS: usize = 128;

/// Each calibrated activation's range, `[low, high]`, always including 0.
#[derive(Debug, Clone, Default)]
pub struct Ranges(pub HashMap<String, [f32; 2]>);

impl Ranges {
    pub fn get(&self, name: &str) -> anyhow::Result<[f32; 2]> {
        self.0
            .get(name)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("activation {name:?} was not calibrated"))
    }
}

/// Runs `proto` (a model of `signature`) on `engine` for each of `samples` and measures the
/// range of each float tensor in `names`.
pub fn calibrate(
    engine: &dyn Engine,
    proto: &ModelProto,
    signature: &ModelSignature,
    names: &[String],
    samples: &[Sample],
    method: Method,
) -> anyhow::Result<Ranges> {
    anyhow::ensure!(!samples.is_empty(), "no calibration samples");
    anyhow::ensure!(
        method != Method::Dynamic,
        "dynamic quantisation is not calibrated"
    );
    // The model with the activations as its outputs, and nothing else.
    let mut exposed = proto.clone();
    let graph = exposed
        .graph
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    graph.output = names
        .iter()
        .map(|name| {
            aicp_engine::onnx_build::value_info(
                name,
                tract_onnx::pb::tensor_proto::DataType::Float,
                &[],
            )
        })
        .collect();
    for output in &mut graph.output {
        // No shape: the engine finds each activation's own.
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("calibration.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&exposed))?;
    let exposed_signature = ModelSignature {
        inputs: signature.inputs.clone(),
        outputs: names
            .iter()
            .map(|name| TensorSpec {
                name: name.clone(),
                datatype: DataType::F32,
                shape: None,
            })
            .collect(),
    };
    let mut model = engine
        .load(&path, &exposed_signature, &LoadOptions::default())
        .map_err(|e| {
            anyhow::anyhow!(
                "{} cannot run the model to calibrate it: {}",
                engine.kind(),
                e.message
            )
        })?;
    let mut seen: Vec<Seen> = names.iter().map(|_| Seen::new(method)).collect();
    for (index, sample) in samples.iter().enumerate() {
        let inputs: Vec<Input> = sample.0.iter().cloned().map(Input::from).collect();
        let outputs = model.run(inputs).map_err(|e| {
            anyhow::anyhow!(
                "calibration sample {index} failed on {}: {}",
                engine.kind(),
                e.message
            )
        })?;
        for (output, seen) in outputs.iter().zip(&mut seen) {
            let values = output.data.to_f32().ok_or_else(|| {
                anyhow::anyhow!("activation {:?} is not a float tensor", output.datatype())
            })?;
            seen.add(values.into_iter());
        }
    }
    Ok(Ranges(
        names
            .iter()
            .cloned()
            .zip(seen.into_iter().map(Seen::range))
            .collect(),
    ))
}

/// What calibration has seen of one activation.
struct Seen {
    low: f32,
    high: f32,
    /// For percentiles and entropy: the values, or a stride sample of them.
    values: Option<Vec<f32>>,
    method: Method,
    count: usize,
}

impl Seen {
    fn new(method: Method) -> Self {
        Self {
            low: 0.0,
            high: 0.0,
            values: (method != Method::MinMax).then(Vec::new),
            method,
            count: 0,
        }
    }

    fn add(&mut self, values: impl Iterator<Item = f32>) {
        for v in values.filter(|v| v.is_finite()) {
            self.low = self.low.min(v);
            self.high = self.high.max(v);
            if let Some(kept) = &mut self.values {
                // Keep every value until the sample is full, then every other one seen.
                let stride = 1 + self.count / PERCENTILE_SAMPLE;
                if self.count.is_multiple_of(stride) {
                    kept.push(v);
                }
            }
            self.count += 1;
        }
    }

    fn range(self) -> [f32; 2] {
        match (self.values, self.method) {
            (Some(mut values), Method::Percentile) if !values.is_empty() => {
                let at = |p: f64, values: &mut Vec<f32>| {
                    let i = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
                    *values.select_nth_unstable_by(i, f32::total_cmp).1
                };
                let low = at(100.0 - PERCENTILE, &mut values).min(0.0);
                let high = at(PERCENTILE, &mut values).max(0.0);
                [low, high]
            }
            (Some(values), Method::Entropy) if !values.is_empty() => {
                let t = entropy_threshold(&values, ENTROPY_LEVELS);
                [self.low.max(-t), self.high.min(t)]
            }
            _ => [self.low, self.high],
        }
    }
}

/// The magnitude beyond which `values` are best clipped when `levels` quantisation levels
/// cover what is kept: of the thresholds at each bin edge of a histogram of magnitudes, the
/// one whose histogram, merged into `levels` bins and spread back, diverges least (KL) from
/// the histogram clipped there with the clipped values folded into its last bin.
fn entropy_threshold(values: &[f32], levels: usize) -> f32 {
    let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if largest <= 0.0 {
        return 0.0;
    }
    let width = largest / ENTROPY_BINS as f32;
    let mut histogram = vec![0.0f64; ENTROPY_BINS];
    // Exact zeros (most of a ReLU's output) are left out: zero is always exactly
    // representable, whatever the threshold, and their spike in the first bin would make any
    // merging of it look costly, pushing the threshold far too low.
    for v in values.iter().filter(|v| **v != 0.0) {
        let bin = ((v.abs() / width) as usize).min(ENTROPY_BINS - 1);
        histogram[bin] += 1.0;
    }
    let mut best = (f64::INFINITY, ENTROPY_BINS);
    for kept in ENTROPY_MIN_BINS.max(levels)..=ENTROPY_BINS {
        let divergence = clipping_divergence(&histogram, kept, levels);
        if divergence < best.0 {
            best = (divergence, kept);
        }
    }
    best.1 as f32 * width
}

/// KL(P || Q) where P is `histogram` clipped to its first `kept` bins (the rest added to the
/// last one) and Q is those `kept` bins merged into `levels` equal groups, each group's mass
/// spread evenly over its non-empty bins (TensorRT's and MXNet's construction). `kept` is at
/// least `levels`, so no group is empty.
fn clipping_divergence(histogram: &[f64], kept: usize, levels: usize) -> f64 {
    let clipped = &histogram[..kept];
    let mut p: Vec<f64> = clipped.to_vec();
    p[kept - 1] += histogram[kept..].iter().sum::<f64>();
    // Q is made from the clipped histogram without the folded mass, so clipping shows as a
    // divergence even where Q has a level for every bin.
    let mut q = vec![0.0f64; kept];
    for level in 0..levels {
        let (start, end) = (level * kept / levels, (level + 1) * kept / levels);
        let group = &clipped[start..end];
        let mass: f64 = group.iter().sum();
        let filled = group.iter().filter(|&&c| c > 0.0).count();
        if filled == 0 {
            continue;
        }
        for (i, &c) in group.iter().enumerate() {
            if c > 0.0 {
                q[start + i] = mass / filled as f64;
            }
        }
    }
    let (p_total, q_total): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(&q)
        .filter(|&(&pi, _)| pi > 0.0)
        .map(|(&pi, &qi)| {
            let (pi, qi) = (pi / p_total, qi / q_total);
            // Only the last bin can be filled in P and empty in Q (all of it folded mass):
            // charge it as a tiny Q would, as TensorRT's smoothing does.
            pi * (pi / qi.max(1e-10)).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_clips_a_long_tail_but_not_a_uniform_range() {
        // Uniform over [0, 1]: nothing is worth clipping.
        let uniform: Vec<f32> = (0..100_000).map(|i| i as f32 / 100_000.0).collect();
        assert!(entropy_threshold(&uniform, ENTROPY_LEVELS) > 0.95);
        // Exponentially distributed: a long, thin tail out to about 12.2, the last of it
        // clipped.
        let n = 100_000;
        let tailed: Vec<f32> = (0..n)
            .map(|i| -((i as f32 + 0.5) / n as f32).ln())
            .collect();
        let t = entropy_threshold(&tailed, ENTROPY_LEVELS);
        assert!(t > 3.0 && t < 0.9 * tailed[0], "{t} of {}", tailed[0]);
    }

    #[test]
    fn every_method_covers_zero_and_reads_by_name() {
        for method in [Method::MinMax, Method::Percentile, Method::Entropy] {
            assert_eq!(method.to_string().parse::<Method>(), Ok(method));
            let mut seen = Seen::new(method);
            seen.add((1..=3000).map(|i| i as f32 / 1000.0));
            let [low, high] = seen.range();
            assert_eq!(low, 0.0, "{method}");
            assert!(high > 2.9 && high <= 3.0, "{method}: {high}");
        }
        let err = "kl".parse::<Method>().unwrap_err();
        assert!(
            err.contains("minmax, percentile, entropy or dynamic"),
            "{err}"
        );
        assert_eq!("dynamic".parse::<Method>(), Ok(Method::Dynamic));
    }
}
