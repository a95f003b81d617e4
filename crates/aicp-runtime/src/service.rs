//! The one path every front end's request takes: find the model, validate the input against
//! its signature and metadata (once, here), run it on the executor, and hand back the outputs.

use std::sync::{Arc, RwLock};

use aicp_core::{DataType, Error, ErrorKind, Result, Tensor};

use crate::executor::Executor;
use crate::repository::{Repository, ServedModel};

/// An inference request as every front end translates it.
#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    pub version: Option<u64>,
    /// A batch, batch dimension first: `[batch, ...]` with each sample holding as many values as
    /// the model's input takes per sample (its shape may differ: `[n, 784]` feeds `[n, 1, 28,
    /// 28]`).
    pub input: Tensor,
}

/// The outputs of one request.
pub struct InferResponse {
    pub model: Arc<ServedModel>,
    pub outputs: Vec<Tensor>,
}

/// The model repository and the executor behind every front end.
pub struct Runtime {
    /// `None` while the repository is (re)loading.
    repository: RwLock<Option<Arc<Repository>>>,
    executor: Executor,
}

impl Runtime {
    pub fn new(executor: Executor) -> Self {
        Self {
            repository: RwLock::new(None),
            executor,
        }
    }

    /// Puts a loaded repository in service.
    pub fn set_repository(&self, repository: Repository) {
        *self.repository.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(repository));
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
        let model = self.repository()?.get(&request.model, request.version)?;
        self.run(model, request.input).await
    }

    /// Validates `input` against `model` (already looked up) and runs it.
    pub async fn run(&self, model: Arc<ServedModel>, input: Tensor) -> Result<InferResponse> {
        let input = prepare_input(&model, input)?;
        let runner = model.clone();
        let outputs = self
            .executor
            .run(move || runner.run(std::slice::from_ref(&input)))
            .await?;
        Ok(InferResponse { model, outputs })
    }
}

/// Checks `input` against what `model` takes and reshapes it to the model's declared input
/// shape (a reshape: the data is not copied).
pub fn prepare_input(model: &ServedModel, input: Tensor) -> Result<Tensor> {
    let [spec] = model.signature.inputs.as_slice() else {
        return Err(Error::invalid(format!(
            "model {:?} takes {} inputs; this API feeds models with one input",
            model.name,
            model.signature.inputs.len()
        )));
    };
    if spec.datatype != DataType::F32 {
        return Err(Error::invalid(format!(
            "model {:?} takes {:?} input {:?}; this API feeds FP32 inputs",
            model.name, spec.datatype, spec.name
        )));
    }
    let Some((&batch, sample)) = input.shape.split_first() else {
        return Err(Error::invalid("input has no batch dimension"));
    };
    let per_sample: usize = sample.iter().product();
    let model_sample: Vec<Option<usize>> = spec.shape.iter().skip(1).copied().collect();
    let shape = match spec.sample_elements() {
        Some(expected) if expected == per_sample => std::iter::once(batch)
            .chain(model_sample.iter().map(|d| d.unwrap_or(1)))
            .collect(),
        Some(expected) => {
            return Err(Error::invalid(format!(
                "expected {expected} values per sample (model {:?} input {:?} is shaped {:?}), got {per_sample} (input shape {:?})",
                model.name,
                spec.name,
                spec.display_shape(),
                input.shape
            )));
        }
        // A variable dimension after the batch: the shapes must agree where the model fixes them.
        None => {
            let fits = sample.len() == model_sample.len()
                && sample
                    .iter()
                    .zip(&model_sample)
                    .all(|(have, want)| want.is_none_or(|w| w == *have));
            if !fits {
                return Err(Error::invalid(format!(
                    "input shape {:?} does not fit model {:?} input {:?} shaped {:?}",
                    input.shape,
                    model.name,
                    spec.name,
                    spec.display_shape()
                )));
            }
            input.shape.clone()
        }
    };
    check_values(model, &input.data)?;
    Ok(Tensor {
        shape,
        data: input.data,
    })
}

/// Rejects non-finite values and values outside the range the model's metadata declares.
fn check_values(model: &ServedModel, data: &[f32]) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "input value {} at index {i} is not a finite number",
            data[i]
        )));
    }
    let Some([low, high]) = model.metadata.input.as_ref().and_then(|i| i.range) else {
        return Ok(());
    };
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
