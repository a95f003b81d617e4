//! Reading a classifier's output row: probabilities from logits, and the most likely classes.

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
