//! Hostile model files beside a good model, on each CPU engine: weights stored as external
//! data outside the model directory (an absolute path, `../`, a symbolic link out), absurd
//! declared dimensions, truncated, empty and garbage files. Each is refused with a reason, no
//! byte outside the model directory is read into a model, and the good model serves
//! throughout.

mod common;

use std::process::Command;

use common::{Server, digits, python, repo_root};
use serde_json::{Value, json};

/// A directory `models/` holding the bundled model and the hostile ones for `backend`, inside a
/// directory that also holds what they point at; and the hostile models' names.
fn hostile_repository(backend: &str) -> (tempfile::TempDir, Vec<String>) {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("models/mnist"))
        .arg(&models)
        .status()
        .unwrap();
    assert!(copy.success());
    let out = Command::new(python())
        .arg(common::manifest_dir().join("tests/fixtures/hostile_models.py"))
        .arg(repo_root().join("models/mnist/1/model.onnx"))
        .arg(&models)
        .arg(&outside)
        .arg(backend)
        .output()
        .expect("the test virtualenv's python (scripts/test.sh creates it)");
    assert!(out.status.success(), "hostile_models.py failed: {out:?}");
    let names = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(names.len() >= 8, "{names:?}");
    (root, names)
}

fn refused_with_reasons(backend: &str) {
    let (root, hostile) = hostile_repository(backend);
    let server = Server::start(&root.path().join("models"), &[]);
    let (status, index) = server.post("/v2/repository/index", &json!({}));
    assert_eq!(status, 200, "{index}");
    let entries = index.as_array().unwrap();
    for name in &hostile {
        let entry = entries
            .iter()
            .find(|e| e["name"] == *name)
            .unwrap_or_else(|| panic!("{name} is not in the index: {index}"));
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert_eq!(entry["state"], "UNAVAILABLE", "{backend}: {name}: {entry}");
        assert!(
            !reason.is_empty(),
            "{backend}: {name} has no reason: {entry}"
        );
        println!("{backend}: {name}: {reason}");
    }
    for name in ["ext_absolute", "ext_parent", "ext_link"] {
        let entry = entries.iter().find(|e| e["name"] == name).unwrap();
        let reason = entry["reason"].as_str().unwrap().to_lowercase();
        assert!(
            reason.contains("outside")
                || reason.contains("external data")
                || reason.contains("location"),
            "{backend}: {name}: the reason does not name the external data: {reason}"
        );
    }
    // The good model serves, on the engine asked for.
    let (pixels, label) = digits(1).remove(0);
    let (status, answer) = server.post(
        "/api/v1/ml/classify",
        &json!({"image_data": pixels, "top_k": 1}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["class"], Value::from(label));
    let (status, refused) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "ext_parent", "image_data": pixels}),
    );
    assert!(status == 503 || status == 404, "{status}: {refused}");
}

#[test]
fn hostile_model_files_are_refused_by_tract_with_a_reason() {
    refused_with_reasons("tract");
}

#[test]
fn hostile_model_files_are_refused_by_onnx_runtime_with_a_reason() {
    refused_with_reasons("onnxruntime");
}
