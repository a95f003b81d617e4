//! The exported ONNX file computes what the trained burn model computes, in tract and in ONNX
//! Runtime, and passes the ONNX checker. The checks that run ONNX Runtime and the checker
//! (Python, from the test virtualenv) are ignored in the quick lane; the full lane runs them.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use aicp_train::export::{ExportInfo, onnx_bytes};
use aicp_train::model::Layer;
use aicp_train::trainer::{self, Inputs, TrainOptions};
use aicp_train::{Arch, Destination, Shape, TrainJob};
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
#[ignore = "full lane (scripts/test.sh): ONNX Runtime from the test virtualenv"]
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
    let outcome = {
        let _training = training_lock();
        aicp_train::run(&job, &AtomicBool::new(false)).unwrap()
    };
    let model_path = &outcome.written.model;
    let size = std::fs::metadata(model_path).unwrap().len();
    assert!(
        (400_000..480_000).contains(&size),
        "unexpected ONNX size {size}"
    );

    // burn's own logits on the whole test split ...
    let test = Inputs {
        samples: &data.test,
        image: [1, 28, 28],
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

    check_in_onnxruntime(model_path, &images, &burn_logits);
}

/// A short CNN run (1,000 digits, two epochs): the exported Conv/Relu/MaxPool/Flatten/Gemm graph
/// gives burn's logits in tract and in ONNX Runtime on every test digit, and has no dropout.
#[test]
#[ignore = "full lane (scripts/test.sh): ONNX Runtime from the test virtualenv"]
fn exported_cnn_matches_burn_in_tract_and_onnxruntime() {
    let data = real_digits();
    let subset: Vec<usize> = (0..1_000).collect();
    let samples = data.train.select(&subset, 784);
    let (train, validation) = trainer::split_validation(&samples, 0.1, 3, 784);
    let image = [1, 28, 28];
    let options = TrainOptions {
        epochs: 2,
        shape: Shape::default_for(Arch::Cnn),
        ..TrainOptions::default()
    };
    let _training = training_lock();
    let trained = trainer::train(
        &Inputs {
            samples: &train,
            image,
        },
        &Inputs {
            samples: &validation,
            image,
        },
        10,
        &options,
        &AtomicBool::new(false),
        false,
    )
    .unwrap();
    let layers = trained.model.layers();
    assert!(matches!(layers[0], Layer::Conv(_)), "{:?}", layers[0]);
    let info = ExportInfo {
        sample_shape: image,
        doc: "test CNN",
        metadata: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("cnn.onnx");
    std::fs::write(&model_path, onnx_bytes(&layers, &info).unwrap()).unwrap();

    let test = Inputs {
        samples: &data.test,
        image,
    };
    let burn_logits = trainer::logits(&trained.model, &test, &Device::flex());
    let images = normalised(&data.test.pixels);
    let tract = tract_logits(&model_path, &images, data.test.len());
    let difference = max_abs_difference(&burn_logits, &tract);
    assert!(difference < 1e-4, "tract differs from burn by {difference}");
    // Two epochs on 900 digits already read most of them: the weights are not noise.
    let accuracy = trainer::accuracy(&trained.model, &test, 10, &Device::flex());
    assert!(accuracy > 0.6, "accuracy {accuracy}");

    let ops = check_in_onnxruntime(&model_path, &images, &burn_logits);
    for op in ["Conv", "Relu", "MaxPool", "Flatten", "Gemm"] {
        assert!(ops.contains(op), "no {op} in the graph: {ops}");
    }
    assert!(!ops.contains("Dropout"), "{ops}");
}

/// Runs `scripts/check_onnx.py` (the `onnx` package's full checker, then ONNX Runtime against
/// `expected` logits) and returns its output.
fn check_in_onnxruntime(model_path: &Path, images: &[f32], expected_logits: &[f32]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs.f32");
    let expected = dir.path().join("logits.f32");
    write_f32(&inputs, images);
    write_f32(&expected, expected_logits);
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
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "check_onnx.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("onnx.checker: ok"), "{stdout}");
    assert!(stdout.contains("onnxruntime: ok"), "{stdout}");
    stdout
}

#[test]
fn export_rejects_a_network_that_does_not_fit_the_images() {
    let dense = Layer::Dense(aicp_train::model::DenseLayer {
        inputs: 100,
        outputs: 10,
        weight: vec![0.0; 1000],
        bias: vec![0.0; 10],
    });
    let info = ExportInfo {
        sample_shape: [1, 28, 28],
        doc: "",
        metadata: vec![],
    };
    let err = onnx_bytes(&[Layer::Flatten, dense.clone()], &info).unwrap_err();
    assert!(err.to_string().contains("takes 100 inputs"), "{err}");
    assert!(onnx_bytes(&[], &info).is_err());
    // A dense layer needs flat rows; a convolution needs an image with its channels.
    let err = onnx_bytes(&[dense], &info).unwrap_err();
    assert!(err.to_string().contains("cannot follow"), "{err}");
    let conv = Layer::Conv(aicp_train::model::ConvLayer {
        inputs: 3,
        outputs: 4,
        kernel: 5,
        weight: vec![0.0; 4 * 3 * 25],
        bias: vec![0.0; 4],
    });
    let err = onnx_bytes(&[conv, Layer::Flatten, dense_after_conv()], &info).unwrap_err();
    assert!(
        err.to_string()
            .contains("of 3 channels does not fit a 1x28x28"),
        "{err}"
    );
}

/// A dense layer that would fit what a 5x5 convolution of 4 channels makes of 28x28.
fn dense_after_conv() -> Layer {
    Layer::Dense(aicp_train::model::DenseLayer {
        inputs: 4 * 24 * 24,
        outputs: 10,
        weight: vec![0.0; 4 * 24 * 24 * 10],
        bias: vec![0.0; 10],
    })
}
