//! The models committed in `models/mnist/1` (the MLP) and `models/mnist-cnn/1` (the CNN) are
//! what their reports say they are.

use crate::*;

#[test]
fn bundled_model_reaches_its_reported_accuracy_on_the_held_out_digits() {
    check_bundled("mnist", 0.93);
}

#[test]
fn bundled_cnn_reaches_98_percent_on_the_held_out_digits() {
    check_bundled("mnist-cnn", 0.98);
}

fn check_bundled(name: &str, at_least: f64) {
    let version = repo_root().join(format!("models/{name}/1"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version.join("training_report.json")).unwrap())
            .unwrap();
    let data = real_digits();
    let n = data.test.len();
    assert_eq!(report["dataset"]["test_samples"], n);
    let logits = tract_logits(
        &version.join("model.onnx"),
        &normalised(&data.test.pixels),
        n,
    );
    let confusion = aicp_train::confusion_matrix(&logits, &data.test.labels, 10);
    let accuracy = (0..10).map(|c| confusion[c][c]).sum::<usize>() as f64 / n as f64;
    let reported = report["test_accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - reported).abs() < 1e-9,
        "measured {accuracy}, reported {reported}"
    );
    assert!(accuracy >= at_least, "{name}: accuracy {accuracy}");

    let metadata =
        aicp_core::ModelMetadata::read(&repo_root().join(format!("models/{name}/model.toml")))
            .unwrap();
    assert_eq!(metadata.test_accuracy(), Some(reported));
    assert_eq!(metadata.labels.len(), 10);
    assert_eq!(metadata.output, Some(aicp_core::OutputKind::Logits));
}
