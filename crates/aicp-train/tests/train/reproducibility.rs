//! The same seed on the same data gives the same weights: bit for bit with one thread, within a
//! stated tolerance with several.

use std::sync::atomic::AtomicBool;

use aicp_train::model::Layer;
use aicp_train::trainer::{self, Inputs, TrainOptions};
use aicp_train::{Arch, Augmentation, Shape};

use crate::{real_digits, training_lock};

/// With several threads the matrix products may split their sums differently; one epoch of
/// Adam keeps the weights within this of each other.
const MULTI_THREAD_TOLERANCE: f32 = 1e-4;

fn train_weights(seed: u64, threads: usize) -> Vec<Layer> {
    train_layers(
        TrainOptions {
            epochs: 1,
            threads,
            seed,
            ..TrainOptions::default()
        },
        2_000,
    )
}

/// A CNN with dropout and augmentation: every random draw of training comes from the seed.
fn train_cnn_weights(seed: u64, threads: usize) -> Vec<Layer> {
    train_layers(
        TrainOptions {
            epochs: 1,
            threads,
            seed,
            shape: Shape {
                channels: vec![4, 8],
                hidden: vec![16],
                ..Shape::default_for(Arch::Cnn)
            },
            augment: Some(Augmentation::default()),
            ..TrainOptions::default()
        },
        400,
    )
}

fn train_layers(options: TrainOptions, samples: usize) -> Vec<Layer> {
    let data = real_digits();
    let subset: Vec<usize> = (0..samples).collect();
    let samples = data.train.select(&subset, 784);
    let (train, validation) = trainer::split_validation(&samples, 0.1, options.seed, 784);
    let _training = training_lock();
    let trained = trainer::train(
        &Inputs {
            samples: &train,
            image: [1, 28, 28],
        },
        &Inputs {
            samples: &validation,
            image: [1, 28, 28],
        },
        10,
        &options,
        &AtomicBool::new(false),
        false,
    )
    .unwrap();
    trained.model.layers()
}

fn max_weight_difference(a: &[Layer], b: &[Layer]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|pair| match pair {
            (Layer::Dense(x), Layer::Dense(y)) => aicp_core::max_difference(&x.weight, &y.weight)
                .max(aicp_core::max_difference(&x.bias, &y.bias)),
            (Layer::Conv(x), Layer::Conv(y)) => aicp_core::max_difference(&x.weight, &y.weight)
                .max(aicp_core::max_difference(&x.bias, &y.bias)),
            (x, y) => {
                assert_eq!(x, y);
                0.0
            }
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
fn a_cnn_with_dropout_and_augmentation_is_reproducible_with_one_thread() {
    let first = train_cnn_weights(7, 1);
    assert!(first.iter().any(|l| matches!(l, Layer::Conv(_))));
    assert_eq!(first, train_cnn_weights(7, 1));
    assert!(max_weight_difference(&first, &train_cnn_weights(8, 1)) > 1e-3);
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

/// With two threads the fused convolution blocks split the batch in two and add the halves'
/// gradients: a different order of the same sums.
#[test]
fn a_cnn_on_two_threads_stays_within_tolerance_of_one() {
    let one = train_cnn_weights(7, 1);
    let two = train_cnn_weights(7, 2);
    assert_ne!(one, two, "two threads should split the blocks' sums");
    let difference = max_weight_difference(&one, &two);
    assert!(
        difference <= MULTI_THREAD_TOLERANCE,
        "two threads moved a weight by {difference}"
    );
}
