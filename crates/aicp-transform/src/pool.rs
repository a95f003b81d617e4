//! Embeddings from a text model's hidden states, as text-embeddings-inference makes them: mean
//! pooling over the attention mask or the first token's (CLS), then optionally scaled to unit
//! length.

use aicp_core::{Pooling, Tensor};

/// One vector per text from `hidden` (`[texts, tokens, width]`, or already pooled
/// `[texts, width]`) and the attention `mask` (`texts x tokens`).
pub fn embeddings(
    hidden: &Tensor,
    mask: &[u32],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, String> {
    let values = hidden
        .data
        .to_f64()
        .ok_or_else(|| format!("the output is {}, not numbers to pool", hidden.datatype()))?;
    let mut vectors: Vec<Vec<f32>> = match hidden.shape[..] {
        [texts, width] => values
            .chunks(width.max(1))
            .take(texts)
            .map(|row| row.iter().map(|&v| v as f32).collect())
            .collect(),
        [texts, tokens, width] => {
            if mask.len() != texts * tokens {
                return Err(format!(
                    "the output has {tokens} tokens per text, the attention mask {}",
                    mask.len() / texts.max(1)
                ));
            }
            (0..texts)
                .map(|t| {
                    let text = &values[t * tokens * width..(t + 1) * tokens * width];
                    let mask = &mask[t * tokens..(t + 1) * tokens];
                    pool(text, mask, width, pooling)
                })
                .collect()
        }
        _ => {
            return Err(format!(
                "the output has shape {:?}; embeddings come from [texts, tokens, width] or \
                 [texts, width]",
                hidden.shape
            ));
        }
    };
    if normalize {
        for vector in &mut vectors {
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                vector.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
    Ok(vectors)
}

/// One text's vector: the mean of the tokens the mask keeps, or the first token.
fn pool(text: &[f64], mask: &[u32], width: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => text[..width].iter().map(|&v| v as f32).collect(),
        Pooling::Mean => {
            let mut sum = vec![0f64; width];
            let mut kept = 0f64;
            for (token, &m) in text.chunks(width).zip(mask) {
                if m != 0 {
                    kept += 1.0;
                    sum.iter_mut().zip(token).for_each(|(s, v)| *s += v);
                }
            }
            sum.into_iter()
                .map(|s| (s / kept.max(1.0)) as f32)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use aicp_core::TensorData;

    use super::*;

    #[test]
    fn mean_pooling_skips_padding_and_normalising_gives_unit_length() {
        // Two texts of three tokens, width 2; the second text's last token is padding.
        let hidden = Tensor {
            shape: vec![2, 3, 2],
            data: TensorData::F32(vec![1., 2., 3., 4., 5., 6., 1., 1., 3., 3., 100., 100.]),
        };
        let mask = [1, 1, 1, 1, 1, 0];
        let mean = embeddings(&hidden, &mask, Pooling::Mean, false).unwrap();
        assert_eq!(mean, [vec![3., 4.], vec![2., 2.]]);
        let cls = embeddings(&hidden, &mask, Pooling::Cls, true).unwrap();
        let norm = 5f32.sqrt();
        assert_eq!(
            cls,
            [
                vec![1. / norm, 2. / norm],
                vec![1. / 2f32.sqrt(), 1. / 2f32.sqrt()]
            ]
        );
        let pooled = Tensor {
            shape: vec![1, 2],
            data: TensorData::F32(vec![3., 4.]),
        };
        assert_eq!(
            embeddings(&pooled, &[], Pooling::Mean, true).unwrap(),
            [vec![0.6, 0.8]]
        );
        let flat = Tensor {
            shape: vec![4],
            data: TensorData::F32(vec![0.; 4]),
        };
        assert!(
            embeddings(&flat, &[], Pooling::Mean, true)
                .unwrap_err()
                .contains("shape [4]")
        );
    }
}
