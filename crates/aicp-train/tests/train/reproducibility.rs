//! The same seed on the same data gives the same weights: bit for bit with one thread, within a
//! stated tolerance with several.

use std::sync::atomic::AtomicBool;

use aicp_train::model::DenseLayer;
use aicp_train::trainer::{self, Inputs, TrainOptions};

use crate::real_digits;

/// With several threads the matrix products may split their sums differently; one epoch of
/// Adam keeps the weights within this of each other.
const MULTI_THREAD_TOLERANCE: f32 = 1e-4;

fn train_weights(seed: u64, threads: usize) -> Vec<DenseLayer> {
    let data = real_digits();
    let subset: Vec<usize> = (0..2_000).collect();
    let samples = data.train.select(&subset, 784);
    let (train, validation) = trainer::split_validation(&samples, 0.1, seed, 784);
    let options = TrainOptions {
        epochs: 1,
        threads,
        seed,
        ..TrainOptions::default()
    };
    let trained = trainer::train(
        &Inputs {
            samples: &train,
            features: 784,
        },
        &Inputs {
            samples: &validation,
            features: 784,
        },
        10,
        &options,
        &AtomicBool::new(false),
        false,
    )
    .unwrap();
    trained.model.dense_layers()
}

fn max_weight_difference(a: &[DenseLayer], b: &[DenseLayer]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            aicp_core::max_difference(&x.weight, &y.weight)
                .max(aicp_core::max_difference(&x.bias, &y.bias))
        })
        .fold(0.0, f32::max)
}

#[test]
fn one_thread_and_the_same_seed_give_identical_weights() {
    let first = train_weights(7, 1);
    assert_eq!(first, train_weights(7, 1));
    let other_seed = train_weights(8, 1);
    assert!(max_weight_difference(&first, &other_seed) > 1e-3);
}

#[test]
fn two_threads_stay_within_tolerance_of_one() {
    let one = train_weights(7, 1);
    let two = train_weights(7, 2);
    let difference = max_weight_difference(&one, &two);
    assert!(
        difference <= MULTI_THREAD_TOLERANCE,
        "two threads moved a weight by {difference}"
    );
}
