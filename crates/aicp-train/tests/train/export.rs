//! The exported ONNX file computes what the trained burn model computes, in tract and in ONNX
//! Runtime, and passes the ONNX checker.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use aicp_train::trainer::{self, Inputs, TrainOptions};
use aicp_train::{Destination, TrainJob};
use burn::prelude::Device;

use crate::*;

/// The Python interpreter of the test virtualenv that `scripts/test.sh` creates.
fn python() -> std::path::PathBuf {
    std::env::var_os("AICP_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn exported_model_matches_burn_in_tract_and_onnxruntime() {
    let data = real_digits();
    let dir = tempfile::tempdir().unwrap();
    let job = TrainJob {
        dataset: data.kind,
        data_dir: data.dir.clone(),
        fetch: aicp_train::Fetch::Offline,
        options: TrainOptions {
            epochs: 1,
            ..TrainOptions::default()
        },
        destination: Destination::File(dir.path().join("digits.onnx")),
        show_progress: false,
    };
    let outcome = aicp_train::run(&job, &AtomicBool::new(false)).unwrap();
    let model_path = &outcome.written.model;
    let size = std::fs::metadata(model_path).unwrap().len();
    assert!(
        (400_000..480_000).contains(&size),
        "unexpected ONNX size {size}"
    );

    // burn's own logits on the whole test split ...
    let test = Inputs {
        samples: &data.test,
        features: 784,
    };
    let burn_logits = trainer::logits(&outcome.trained.model, &test, &Device::flex());
    let n = data.test.len();
    assert_eq!(burn_logits.len(), n * 10);

    // ... agree with tract running the exported file,
    let images = normalised(&data.test.pixels);
    let tract = tract_logits(model_path, &images, n);
    let difference = max_abs_difference(&burn_logits, &tract);
    assert!(difference < 1e-4, "tract differs from burn by {difference}");
    assert_eq!(
        trainer::argmax_rows(&burn_logits, 10),
        trainer::argmax_rows(&tract, 10)
    );
    // and the accuracy in the report is the one these logits give.
    let confusion = aicp_train::confusion_matrix(&tract, &data.test.labels, 10);
    let correct: usize = (0..10).map(|c| confusion[c][c]).sum();
    assert_eq!(correct as f64 / n as f64, outcome.report.test_accuracy);
    assert!(
        outcome.report.test_accuracy > 0.85,
        "{}",
        outcome.report.test_accuracy
    );

    // ONNX Runtime and the ONNX checker, through the PyPI packages.
    let inputs = dir.path().join("inputs.f32");
    let expected = dir.path().join("logits.f32");
    write_f32(&inputs, &images);
    write_f32(&expected, &burn_logits);
    let python = python();
    let output = Command::new(&python)
        .arg(repo_root().join("scripts/check_onnx.py"))
        .arg(model_path)
        .arg(&inputs)
        .arg(&expected)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); scripts/test.sh creates this virtualenv",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "check_onnx.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("onnx.checker: ok"), "{stdout}");
    assert!(stdout.contains("onnxruntime: ok"), "{stdout}");
}

#[test]
fn export_rejects_a_network_that_does_not_fit_the_images() {
    let layers = vec![aicp_train::model::DenseLayer {
        inputs: 100,
        outputs: 10,
        weight: vec![0.0; 1000],
        bias: vec![0.0; 10],
    }];
    let info = aicp_train::export::ExportInfo {
        sample_shape: [1, 28, 28],
        doc: "",
        metadata: vec![],
    };
    let err = aicp_train::export::onnx_bytes(&layers, &info).unwrap_err();
    assert!(err.to_string().contains("takes 100 inputs"), "{err}");
    assert!(aicp_train::export::onnx_bytes(&[], &info).is_err());
}
