//! The commands beside `aicp serve`, as a user runs them: `aicp models` and `aicp predict`
//! offline on a model directory, on numbers and on a picture file, and a missing ONNX Runtime
//! library named while tract serves.

use std::process::Command;

use aicp_testkit::pictures::{Variant, picture};
use aicp_testkit::{install, install_with_metadata};

use crate::common::{AICP, digits, repo_root};

/// A model directory: the bundled `mnist`, a second copy `tractonly`, and a corrupt
/// `broken.onnx`.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_with_metadata(dir.path(), "mnist");
    install(dir.path(), "mnist", "tractonly", 1);
    std::fs::write(dir.path().join("broken.onnx"), b"this is not an onnx file").unwrap();
    dir
}

#[test]
fn a_missing_onnxruntime_library_is_named_and_tract_serves() {
    let models = model_dir();
    let out = Command::new(AICP)
        .current_dir(repo_root())
        .args([
            "models",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so.1.32.0",
            "--models",
        ])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so.1.32.0 does not exist"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mnist = stdout.lines().find(|l| l.starts_with("mnist ")).unwrap();
    assert!(
        mnist.contains("ready") && mnist.contains("tract"),
        "{stdout}"
    );
}

#[test]
fn models_and_predict_commands_work_offline() {
    let models = model_dir();
    let out = Command::new(AICP)
        .current_dir(repo_root())
        .args(["models", "--models"])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("mnist"), "{listing}");
    assert!(listing.contains("failed"), "{listing}");
    assert!(listing.contains("reason: "), "{listing}");
    // Each served version's inputs and outputs, with their datatypes and shapes.
    let tensor = |role: &str| {
        listing
            .lines()
            .find(|l| l.trim_start().starts_with(role))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        tensor("input ").as_deref(),
        Some("input input FP32 [-1, 1, 28, 28]"),
        "{listing}"
    );
    assert_eq!(
        tensor("output ").as_deref(),
        Some("output logits FP32 [-1, 10]"),
        "{listing}"
    );

    let (pixels, label) = digits(1).remove(0);
    let file = models.path().join("digit.json");
    std::fs::write(&file, serde_json::to_string(&pixels).unwrap()).unwrap();
    let out = Command::new(AICP)
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist", "--top-k", "3", "--models"])
        .arg(models.path())
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[1].trim_start().starts_with(&label.to_string()),
        "{stdout}"
    );
}

#[test]
fn predict_classifies_a_picture_file() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, label) = digits(1).remove(0);
    let file = dir.path().join("digit.jpg");
    std::fs::write(&file, picture(&pixels, Variant::Scaled)).unwrap();
    let output = Command::new(AICP)
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist", "--top-k", "3", "--debug"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("picture 110x100, dark on light: inverted"),
        "{stdout}"
    );
    // 28 rows of the picture the model saw, then the model, then 3 classes, best first.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('|')).count(),
        28,
        "{stdout}"
    );
    let classes: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("model mnist"))
        .skip(1)
        .collect();
    assert_eq!(classes.len(), 3, "{stdout}");
    assert_eq!(
        classes[0].split_whitespace().next(),
        Some(label.to_string().as_str()),
        "{stdout}"
    );

    // The CNN, by name, unchanged.
    let output = Command::new(AICP)
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist-cnn", "--top-k", "1"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let best = stdout
        .lines()
        .skip_while(|l| !l.starts_with("model mnist-cnn"))
        .nth(1);
    assert_eq!(
        best.and_then(|l| l.split_whitespace().next()),
        Some(label.to_string().as_str()),
        "{stdout}"
    );

    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let output = Command::new(AICP)
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.png") && stderr.contains("broken"),
        "{stderr}"
    );
}
