//! What aicp's test suites share and the product never ships: the repository's own files
//! (found at run time), the held-out real digits ([`digits`](mod@digits)) and pictures of them
//! ([`pictures`]), and the ONNX models the tests serve beside the bundled ones, built in Rust
//! ([`fixtures`]).

pub mod digits;
pub mod fixtures;
pub mod pictures;

use std::path::{Path, PathBuf};

pub use digits::digits;

/// The repository, from the running test's package directory as cargo gives it when it runs
/// the test, not as it was when the test was compiled: a build directory shared between clones
/// (CI's) may hold a test binary that another clone compiled. Every package sits two levels
/// down (`crates/<name>`, `bench/floor`).
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("../..")
}

/// The bundled model directory, `models/`.
pub fn bundled_models() -> PathBuf {
    repo_root().join("models")
}

/// Version 1 of a bundled model (`mnist`, `mnist-cnn`).
pub fn bundled_model(name: &str) -> PathBuf {
    bundled_models().join(name).join("1/model.onnx")
}

/// Copies the bundled model `bundled` into `root` as model `name`, version `version` (its file
/// only: no `model.toml`).
pub fn install(root: &Path, bundled: &str, name: &str, version: u64) {
    let dir = root.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bundled_model(bundled), dir.join("model.onnx")).unwrap();
}

/// Copies the bundled model `name` into `root` whole: its versions and its `model.toml`.
pub fn install_with_metadata(root: &Path, name: &str) {
    install(root, name, name, 1);
    std::fs::copy(
        bundled_models().join(name).join("model.toml"),
        root.join(name).join("model.toml"),
    )
    .unwrap();
}
