//! Both CPU engines in the real server, with the ONNX Runtime library the test virtualenv
//! installs: a model on `auto` is served by ONNX Runtime and agrees with the same file pinned
//! to tract, and hostile model files are refused by ONNX Runtime with a reason while a good
//! model serves beside them. (The same hostile files on tract, and everything else the front
//! ends do: `aicp-server`'s in-process tests.)

use aicp_testkit::fixtures;
use aicp_testkit::{install, install_with_metadata};
use serde_json::{Value, json};

use crate::common::{Server, digits};

#[test]
fn onnx_runtime_serves_models_on_auto_and_agrees_with_tract() {
    let models = tempfile::tempdir().unwrap();
    install_with_metadata(models.path(), "mnist");
    install(models.path(), "mnist", "tractonly", 1);
    std::fs::write(
        models.path().join("tractonly/model.toml"),
        "backend = \"tract\"\n",
    )
    .unwrap();
    let server = Server::start(models.path(), &[]);
    assert!(
        server
            .startup
            .iter()
            .any(|l| l == "model mnist version 1 ready on onnxruntime (cpu)"),
        "{:?}",
        server.startup
    );

    let (_, listing) = server.get("/api/v1/ml/models");
    let engine_of = |name: &str| {
        listing["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["engine"].clone())
            .unwrap()
    };
    // The test virtualenv has the onnxruntime wheel, so auto picks it; tractonly is pinned.
    assert_eq!(engine_of("mnist"), "onnxruntime");
    assert_eq!(engine_of("tractonly"), "tract");

    let flat: Vec<f32> = digits(200).into_iter().flat_map(|(p, _)| p).collect();
    let run = |model: &str| {
        let (status, body) = server.post(
            "/api/v1/ml/inference",
            &json!({"model_name": model, "input_data": flat, "input_shape": [200, 1, 28, 28]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], json!([200, 10]));
        serde_json::from_value::<Vec<f32>>(body["outputs"][0]["data"].clone()).unwrap()
    };
    let difference = aicp_core::max_difference(&run("mnist"), &run("tractonly"));
    assert!(difference < 1e-4, "engines differ by {difference}");
}

#[test]
fn hostile_model_files_are_refused_by_onnx_runtime_with_a_reason() {
    let root = fixtures::hostile_repository("onnxruntime");
    let models = root.path().join("models");
    let server = Server::start(&models, &[]);

    let (status, index) = server.post("/v2/repository/index", &json!({}));
    assert_eq!(status, 200, "{index}");
    fixtures::assert_hostile_refused(&index, "onnxruntime");
    // The good model serves, on ONNX Runtime.
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
