//! The model committed in `models/mnist/1` is what its report says it is.

use crate::*;

#[test]
fn bundled_model_reaches_its_reported_accuracy_on_the_held_out_digits() {
    let version = repo_root().join("models/mnist/1");
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
    assert!(accuracy >= 0.93, "bundled model accuracy {accuracy}");

    let metadata =
        aicp_core::ModelMetadata::read(&repo_root().join("models/mnist/model.toml")).unwrap();
    assert_eq!(metadata.labels.len(), 10);
    assert_eq!(metadata.output, Some(aicp_core::OutputKind::Logits));
}
