//! The GPU engine where there is no GPU (this suite's machines): the binary is built with it
//! (the `cuda` feature is on by default), finds no GPU, says so, and serves on the CPU, models
//! that ask for `cuda` included. Its checks on a real GPU are `aicp gpu verify` and `aicp gpu
//! bench`, run there by scripts/gpu-check.sh.

use std::io::Read;
use std::process::Command;

use crate::common::{AICP, Server, digits, repo_root};
use serde_json::json;

/// The bundled model, asking for the GPU.
fn cuda_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bundled = repo_root().join("models/mnist");
    std::fs::create_dir_all(dir.path().join("mnist/1")).unwrap();
    std::fs::copy(
        bundled.join("1/model.onnx"),
        dir.path().join("mnist/1/model.onnx"),
    )
    .unwrap();
    let metadata = std::fs::read_to_string(bundled.join("model.toml")).unwrap();
    std::fs::write(
        dir.path().join("mnist/model.toml"),
        format!("backend = \"cuda\"\n{metadata}"),
    )
    .unwrap();
    dir
}

#[test]
fn a_model_asking_for_cuda_is_served_on_the_cpu_when_there_is_no_gpu() {
    let models = cuda_model_dir();
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = Server::start_with_stderr(models.path(), &[], log.reopen().unwrap());

    let (status, listing) = server.get("/api/v1/ml/models");
    assert_eq!(status, 200, "{listing}");
    let mnist = &listing["models"][0];
    assert_eq!(mnist["name"], "mnist", "{listing}");
    assert_eq!(mnist["device"], "cpu", "{mnist}");
    assert_ne!(mnist["engine"], "cuda", "{mnist}");
    assert_eq!(mnist["versions"][0]["device"], "cpu", "{mnist}");

    let (pixels, label) = digits(1).remove(0);
    let (status, answer) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "mnist", "image_data": pixels}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["predictions"][0]["class"],
        u64::from(label),
        "{answer}"
    );

    let (status, config) = server.get("/v2/models/mnist/config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");

    drop(server);
    let mut logged = String::new();
    log.reopen().unwrap().read_to_string(&mut logged).unwrap();
    assert!(logged.contains("no usable GPU"), "{logged}");
    assert!(
        logged.contains("model \"mnist\" asks for backend \"cuda\", but there is no usable GPU"),
        "{logged}"
    );
}

#[test]
fn the_gpu_checks_fail_clearly_without_a_gpu() {
    let output = Command::new(AICP)
        .current_dir(repo_root())
        .args(["gpu", "verify", "--models", "models"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // No driver here: the message names the library it looked for.
    assert!(stderr.contains("error: no usable GPU:"), "{stderr}");
    assert!(stderr.contains("libcuda.so"), "{stderr}");
}

#[test]
fn gpu_off_leaves_the_gpu_alone_and_models_lists_the_device() {
    let models = cuda_model_dir();
    let output = Command::new(AICP)
        .args(["models", "--gpu", "off", "--models"])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.lines().next().unwrap().contains("device"),
        "{stdout}"
    );
    let mnist = stdout.lines().find(|l| l.starts_with("mnist")).unwrap();
    assert!(mnist.contains(" cpu "), "{stdout}");
    assert!(stderr.contains("GPU use is off"), "{stderr}");
}

#[test]
fn gpu_min_batch_takes_auto_or_a_batch_size() {
    let models = cuda_model_dir();
    let models_with = |min_batch: &str| {
        Command::new(AICP)
            .args(["models", "--gpu-min-batch", min_batch, "--models"])
            .arg(models.path())
            .output()
            .unwrap()
    };
    for accepted in ["auto", "1", "64"] {
        let output = models_with(accepted);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{accepted}: {output:?}");
        assert!(stdout.contains("mnist"), "{stdout}");
    }
    let output = models_with("0");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("expected `auto` or a batch size of at least 1, got \"0\""),
        "{stderr}"
    );
}
